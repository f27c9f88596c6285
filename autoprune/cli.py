"""The ``autoprune`` command: parse, load config, call the library, print, exit code.

Heavy libraries are imported inside the command functions so ``--help`` stays instant.
A user error (AutopruneError) prints one line and exits 2; Ctrl-C exits 130 and the same
command resumes.
"""
from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable, Sequence

from autoprune.plan import PRECISIONS
from autoprune.registry import AGENTS, BACKENDS, EXPORTERS, TASK_SOURCES, TASKS

#: built-in names (the files ship inside the package), so the defaults resolve from any folder
DEFAULT_HW = "cpu-onnxruntime"
DEFAULT_SPACE = "default"


#: what a search uses when neither --config nor a flag says otherwise
SEARCH_DEFAULTS = {"task": "digits", "profile": DEFAULT_HW, "space": DEFAULT_SPACE, "agent": "tpe", "trials": 12,
                   "seed": 0}
#: search flags that map onto SearchConfig fields (``hw`` is the ``profile`` field)
SEARCH_FLAGS = ("task", "data", "model_weights", "input_size", "hw", "space", "agent", "trials", "seed", "objectives",
                "max_latency_ms", "min_accuracy",
                "max_params", "proxy_keep", "predictor", "predictor_margin", "warm_start")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (like every other error), exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


#: help texts naming what the registries hold
TASK_HELP = (f"registered task ({', '.join(TASKS.names())}), {' / '.join(f'{s}:MODEL' for s in TASK_SOURCES.names())} "
             "with --data, or module:function (a module in the current folder is found; default: digits)")


def _builtin(folder: str) -> str:
    """The built-in names of a package folder (the files' stems), for help texts."""
    from pathlib import Path

    return ", ".join(sorted(p.stem for p in (Path(__file__).resolve().parent / folder).glob("*.yaml")))


HW_HELP = (f"hardware profile: a YAML path or a built-in name ({_builtin('hw_profiles')}); backends: "
           f"{', '.join(BACKENDS.names())} (default: {DEFAULT_HW})")
SPACE_HELP = f"search space: a YAML path or a built-in name ({_builtin('search_spaces')}; default: {DEFAULT_SPACE})"


def _add_task_options(p) -> None:
    """--data, --weights, --input-size: the options of a bring-your-own task (README: Bring your own model)."""
    p.add_argument("--data", default=None,
                   help="the task's data: an ImageFolder tree with train/ and val/ (torchvision:, timm:), a CSV/JSONL "
                        "file or folder of text and label (hf:)")
    p.add_argument("--weights", default=None, dest="model_weights", metavar="WEIGHTS",
                   help="a checkpoint file, the library's weights name (torchvision: e.g. DEFAULT; timm: pretrained), "
                        "or none (random init, trained once on --data and cached)")
    p.add_argument("--input-size", type=int, default=None,
                   help="image side in pixels (default: the first training image's shorter side, at most 224) or text "
                        "length in tokens (default: 128)")


def _task_spec(args: argparse.Namespace):
    """The TaskSpec of --task, --data, --weights, --input-size (paths made absolute as a search records them)."""
    from pathlib import Path

    from autoprune.task import TaskSpec, absolute_task_name

    weights = args.model_weights
    if weights is not None and Path(weights).expanduser().exists():
        weights = str(Path(weights).expanduser().absolute())
    data = None if args.data is None else str(Path(args.data).expanduser().absolute())
    return TaskSpec(name=absolute_task_name(args.task), data=data, weights=weights, input_size=args.input_size)


def _add_target_args(p, *, hw: bool = False, space: bool = False) -> None:
    """--task and its options (and --hw, --space) with the shared defaults."""
    p.add_argument("--task", default="digits", help=TASK_HELP)
    _add_task_options(p)
    if hw:
        p.add_argument("--hw", default=DEFAULT_HW, help=HW_HELP)
    if space:
        p.add_argument("--space", default=DEFAULT_SPACE, help=SPACE_HELP)


def _search_config(args: argparse.Namespace):
    """SearchConfig from defaults, then the --config file, then the flags given on the command line."""
    from pathlib import Path

    from autoprune.config import (
        PREDICTOR_AUTO,
        PREDICTOR_OFF,
        PROFILES_DIR,
        SPACES_DIR,
        SearchConfig,
        is_builtin_name,
        load_profile,
        load_search_settings,
        load_space,
    )
    from autoprune.errors import ConfigError

    settings = load_search_settings(args.config) if args.config else {}
    for key in ("profile", "space", "predictor", "data", "model_weights"):  # paths in the config are relative to it
        if key == "model_weights" and isinstance(settings.get(key), str) \
                and not (Path(args.config).parent / settings[key]).exists():
            continue  # a library's weights name, not a path
        if key in ("profile", "space") and isinstance(settings.get(key), str) \
                and is_builtin_name(settings[key], PROFILES_DIR if key == "profile" else SPACES_DIR):
            continue  # a built-in name
        if isinstance(settings.get(key), str) and settings[key] not in (PREDICTOR_AUTO, PREDICTOR_OFF) \
                and not Path(settings[key]).is_absolute():
            settings[key] = str(Path(args.config).parent / settings[key])
    flags = {k: getattr(args, k) for k in SEARCH_FLAGS if getattr(args, k) is not None}
    if "hw" in flags:
        flags["profile"] = flags.pop("hw")
    if "objectives" in flags:
        flags["objectives"] = tuple(o.strip() for o in flags["objectives"].split(",") if o.strip())
    merged = {**SEARCH_DEFAULTS, **settings, **flags}
    overrides = _finetune_overrides(args)
    if overrides:
        merged["finetune"] = {**dict(merged.get("finetune") or {}), **overrides}
    merged["profile"] = load_profile(merged["profile"])
    merged["space"] = load_space(merged["space"])
    where = args.config or "command line"
    try:
        return SearchConfig(**merged)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None


def cmd_search(args: argparse.Namespace) -> int:
    from autoprune.console import SearchProgress, make_console, pareto_table
    from autoprune.results.search import all_failed, run_search

    config = _search_config(args)
    console = make_console()
    progress = SearchProgress(console)
    try:
        outcome = run_search(config, args.out, storage=args.storage, study=args.study, on_event=progress,
                             execution=_execution(args))
    finally:
        progress.close()
    console.print(pareto_table(outcome.dense, outcome.front))
    console.print(f"run folder: {outcome.run.path}  (Pareto front in {outcome.run.pareto})")
    failure = all_failed(outcome.records)
    if failure is not None:
        print(f"autoprune: error: {failure}", file=sys.stderr)
        return 1
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from autoprune.config import load_profile
    from autoprune.console import latency_table, make_console
    from autoprune.hardware.protocol import measure_models
    from autoprune.task import resolve_task

    profile = load_profile(args.hw)
    task = resolve_task(_task_spec(args))
    stats = measure_models(profile, [task.build_model()], task.example_input)[0]
    make_console().print(latency_table(f"{task.name} dense on {profile.name}", stats))
    if stats.cv > profile.max_cv:
        load = "unknown" if stats.other_cpu is None else f"{stats.other_cpu:.2f} cores"
        print(f"autoprune: warning: CV {100 * stats.cv:.1f}% is above the profile's max_cv {100 * profile.max_cv:g}% "
              f"after {stats.attempts} attempt(s): the figure is noisy (other processes' CPU use when timing: {load}, "
              f"waited {stats.load_wait_s:.1f} s); measure again on a quieter machine", file=sys.stderr)
    return 0


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="run or resume a pruning search",
                       description="Search pruning plans for a task on a hardware profile. Re-running the same "
                                   "command on the same --out resumes the search.")
    p.add_argument("--config", default=None,
                   help="search config YAML (SearchConfig fields; `profile`/`space` are YAML paths); flags override it")
    p.add_argument("--task", default=None, help=TASK_HELP)
    _add_task_options(p)
    p.add_argument("--hw", default=None, help=HW_HELP)
    p.add_argument("--space", default=None, help=SPACE_HELP)
    p.add_argument("--agent", default=None, help=f"search agent: {', '.join(AGENTS.names())} (default: tpe)")
    p.add_argument("--trials", type=int, default=None, help="total trials in the run (default: 12)")
    p.add_argument("--seed", type=int, default=None, help="seed for the agent and fine-tuning (default: 0)")
    p.add_argument("--objectives", default=None,
                   help="comma-separated: accuracy, latency, latency_p90, params, macs, memory "
                        "(default: accuracy,latency)")
    p.add_argument("--max-latency-ms", type=float, default=None, help="reject candidates slower than this")
    p.add_argument("--min-accuracy", type=float, default=None, help="trials below this accuracy are infeasible")
    p.add_argument("--max-params", type=int, default=None, help="trials with more parameters are infeasible")
    p.add_argument("--proxy-keep", type=float, default=None,
                   help="share of candidates that get the full fine-tune, ranked by proxy accuracy (after BN "
                        "recalibration) against speed-up (default: 1)")
    p.add_argument("--warm-start", type=int, default=None,
                   help="tpe, nsga2, random: the first N trials are the baselines' plans (uniform width ratios "
                        "and, where the space allows drop, depth plans dropping 1, 2, ... blocks) "
                        "(default: 4 for tpe, else 0)")
    p.add_argument("--predictor", default=None,
                   help="latency predictor that screens candidates before measuring: auto (the one `autoprune "
                        "calibrate` saved for this task and profile, if any), off, or a predictor JSON (default: auto)")
    p.add_argument("--predictor-margin", type=float, default=None,
                   help="the predictor error allowed for: a candidate is rejected unmeasured only when it fails "
                        "the screen even this fraction faster than predicted (default: 0.15)")
    p.add_argument("--out", required=True, help="run folder, e.g. results/my-run")
    _add_storage_args(p, search=True)
    _add_finetune_args(p)
    _add_execution_args(p)
    p.set_defaults(func=cmd_search)


STORAGE_HELP = ("SQLAlchemy URL of the study database, e.g. postgresql://user@host/db for a team database "
                "(default: the one the run folder recorded, else RUN/study.db)")


def _add_storage_args(p, *, search: bool = False) -> None:
    p.add_argument("--storage", default=None, help=STORAGE_HELP)
    p.add_argument("--study", default=None,
                   help="the search's study in --storage (default: the run folder's name)" if search else
                   "the search's study in --storage (default: the one the run folder recorded, else its name)")


#: fine-tune recipe fields settable from the command line (None: keep the task's value)
FINETUNE_FLAGS = {"epochs": int, "lr": float, "optimizer": str, "schedule": str, "distill_weight": float,
                  "temperature": float}


def _add_finetune_args(p) -> None:
    g = p.add_argument_group("fine-tuning (defaults: the task's recipe)")
    for name, kind in FINETUNE_FLAGS.items():
        g.add_argument("--" + name.replace("_", "-"), type=kind, default=None, dest=f"ft_{name}", metavar=name.upper(),
                       help=f"override the recipe's {name}")


def _finetune_overrides(args: argparse.Namespace) -> dict:
    return {n: getattr(args, f"ft_{n}") for n in FINETUNE_FLAGS if getattr(args, f"ft_{n}") is not None}


def _add_execution_args(p) -> None:
    g = p.add_argument_group("execution (Ray when --workers > 1 or --ray-address is given)")
    g.add_argument("--workers", type=int, default=None, help="trials in flight at once (default: 1, in-process)")
    g.add_argument("--ray-address", "--address", dest="ray_address", default=None,
                   help="join a Ray cluster: auto, ray://HOST:PORT or HOST:PORT (default: a local Ray on 127.0.0.1); "
                        "a module:function task's code travels with the job")
    g.add_argument("--cpus-per-trial", type=float, default=None, help="Ray CPUs per trial (default: 1)")
    g.add_argument("--gpus-per-trial", type=float, default=None, help="Ray GPUs per trial (default: 0)")
    g.add_argument("--max-retries", type=int, default=None, help="re-runs of a trial whose worker died (default: 2)")


def _execution(args: argparse.Namespace, base=None):
    """ExecutionConfig from ``base`` (or the defaults) with the flags given on the command line."""
    import dataclasses

    from autoprune.config import ExecutionConfig
    from autoprune.errors import ConfigError

    flags = {"workers": args.workers, "address": args.ray_address, "cpus_per_trial": args.cpus_per_trial,
             "gpus_per_trial": args.gpus_per_trial, "max_retries": args.max_retries}
    try:
        return dataclasses.replace(base or ExecutionConfig(), **{k: v for k, v in flags.items() if v is not None})
    except ConfigError as err:
        raise ConfigError(f"command line: {err}") from None


def _add_profile(sub) -> None:
    p = sub.add_parser("profile", help="measure the dense model's latency on a hardware profile")
    _add_target_args(p, hw=True)
    p.set_defaults(func=cmd_profile)


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from autoprune.config import load_space
    from autoprune.console import discovery_tables, make_console
    from autoprune.errors import ConfigError
    from autoprune.pruning import discover
    from autoprune.task import resolve_task

    if args.round_to is not None and args.round_to < 1:
        raise ConfigError(f"command line: --round-to must be an integer >= 1, got {args.round_to}")
    space = load_space(args.space)
    task = resolve_task(_task_spec(args))
    round_to = args.round_to or space.round_to or 1
    report = discover(task.build_model(), task.example_input, space.ignore, round_to=round_to)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    console = make_console()
    for table in discovery_tables(report):
        console.print(table)
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    import json
    import re
    from pathlib import Path

    from autoprune.config import load_profile, load_space, pruner_settings
    from autoprune.console import make_console, sensitivity_table
    from autoprune.files import atomic_write_json, check_writable_file
    from autoprune.search.sensitivity import parse_ratios, sensitivity
    from autoprune.task import resolve_task

    ratios = parse_ratios(args.ratios)
    profile, space = load_profile(args.hw), load_space(args.space)
    task = resolve_task(_task_spec(args))
    out = Path(args.out or f"results/sensitivity/{re.sub(r'[^A-Za-z0-9_.-]+', '_', task.name)}-{profile.name}.json")
    check_writable_file(out)  # before the work, not after it
    console = make_console(stderr=args.json)
    with console.status("pruning each group alone, recalibrating BatchNorm, measuring"):
        report = sensitivity(task, profile, pruner_settings(space, profile), ratios)
    atomic_write_json(out, report.to_dict())
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(sensitivity_table(report))
    console.print(f"written: {out}")
    return 0


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="list prunable groups, their couplings and every layer left out",
                       description="Trace the task's model and report its prunable groups (coupled layers, "
                                   "channels or heads, share of MACs/params) and every layer left out, with why.")
    _add_target_args(p)
    p.add_argument("--space", default=DEFAULT_SPACE, help=f"{SPACE_HELP}; for `ignore`")
    p.add_argument("--round-to", type=int, default=None,
                   help="report groups that cannot shrink to multiples of this (default: the space's round_to, else 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_inspect)


def _add_sensitivity(sub) -> None:
    p = sub.add_parser("sensitivity", help="prune each group alone: accuracy drop and measured speed-up",
                       description="Prune each group alone at a few ratios; report the accuracy drop after BatchNorm "
                                   "recalibration (no fine-tuning) and the measured latency gain on the profile.")
    _add_target_args(p, hw=True, space=True)
    p.add_argument("--ratios", default="0.25,0.5,0.75", help="comma-separated ratios (default: 0.25,0.5,0.75)")
    p.add_argument("--out", default=None, help="JSON file (default: results/sensitivity/<task>-<profile>.json)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.set_defaults(func=cmd_sensitivity)


def cmd_report(args: argparse.Namespace) -> int:
    from autoprune.files import check_writable_folder
    from autoprune.results.report import write_report
    from autoprune.results.run import RunFolder, load_run

    # the report is written into the folder (filled from the database first, with --storage)
    run = RunFolder.existing(args.run, storage=args.storage, study=args.study)
    check_writable_folder(args.run, "run folder")
    report = write_report(load_run(run.path, storage=run.storage, study=run.study))
    print(f"report: {report.html}")
    print("plots: " + "  ".join(str(p) for p in report.plots.values()))
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    import json

    from autoprune.console import make_console, pareto_table
    from autoprune.results.run import load_run

    data = load_run(args.run, storage=args.storage, study=args.study)
    if args.json:
        print(json.dumps({"dense": {"accuracy": data.dense.accuracy, "test_accuracy": data.dense.test_accuracy,
                                    "latency_ms": data.dense.latency.median_ms,
                                    "latency_p90_ms": data.dense.latency.p90_ms, "macs": data.dense.macs,
                                    "params": data.dense.params},
                          "front": [{"trial": r.number, "accuracy": r.accuracy, "test_accuracy": r.test_accuracy,
                                     "latency_ms": r.latency_ms, "latency_p90_ms": r.latency_p90_ms,
                                     "speedup": data.dense.speedup_of(r.latency_ms), "interleaved_speedup": r.speedup,
                                     "latency_cv": r.latency.cv if r.latency else None, "noisy": r.noisy,
                                     "remeasures": r.remeasures, "macs": r.macs,
                                     "params": r.params, "plan": r.plan} for r in data.front]}, indent=2))
        return 0
    make_console().print(pareto_table(data.dense, data.front))
    return 0


def cmd_pick(args: argparse.Namespace) -> int:
    from autoprune.console import make_console
    from autoprune.results.pick import choice_table, pick, precision_front
    from autoprune.results.run import load_run

    data = load_run(args.run, storage=args.storage, study=args.study)
    choice = pick(precision_front(data, args.precision), max_latency_ms=args.max_latency_ms,
                  min_accuracy=args.min_accuracy, knee=args.knee)
    console = make_console()
    console.print(choice_table(choice, data.dense))
    console.print(f"picked trial {choice.chosen.number}: {choice.reason}")
    console.print(f"export it: autoprune export {args.run} --trial {choice.chosen.number} --format onnx --out DIR",
                  highlight=False)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autoprune.results.export import export_trial

    result = export_trial(args.run, args.trial, args.format, args.out, force=args.force,
                          dynamic_batch=not args.static_batch, storage=args.storage, study=args.study)
    card = result.card
    now = card["latency"]["at_export"]
    print(f"exported trial {args.trial} as {args.format} to {result.out}: "
          + ", ".join(f.name for f in result.files) + ", model_card.md, model_card.json")
    batches = " and ".join(str(b) for b in card["verification"].get("batch_sizes", [1]))
    print(f"verified on {card['verification']['samples']} validation inputs at batch {batches} (max |diff| "
          f"{card['verification']['max_abs_diff']:.3g}); accuracy {100 * card['accuracy']['pruned']:.2f}% "
          f"(dense {100 * card['accuracy']['dense']:.2f}%); p50 {now['pruned_p50_ms']:.4f} ms vs dense "
          f"{now['dense_p50_ms']:.4f} ms ({now['speedup']:.2f}x) re-measured on {now['profile']}")
    if card["model"].get("note"):
        print(f"note: {card['model']['note']}")
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="write RUN/report.html and RUN/plots/*.png",
                       description="Write a self-contained HTML report (Pareto plot, hypervolume over trials, "
                                   "per-layer ratios of the Pareto plans, tables) and PNG plots into the run folder.")
    p.add_argument("run", help="run folder (the --out of a search; with --storage, filled from the database)")
    _add_storage_args(p)
    p.set_defaults(func=cmd_report)


def _add_pareto(sub) -> None:
    p = sub.add_parser("pareto", help="print the Pareto front of a run (trial numbers for pick/export)")
    p.add_argument("run", help="run folder (the --out of a search; with --storage, filled from the database)")
    _add_storage_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_pareto)


def _add_pick(sub) -> None:
    p = sub.add_parser("pick", help="choose one Pareto model for a budget and say why",
                       description="Choose one Pareto model by exactly one rule and print it next to its "
                                   "neighbours on the front.")
    p.add_argument("run", help="run folder (the --out of a search; with --storage, filled from the database)")
    _add_storage_args(p)
    rule = p.add_mutually_exclusive_group(required=True)
    rule.add_argument("--max-latency-ms", type=float, help="the most accurate model with p50 latency <= this")
    rule.add_argument("--min-accuracy", type=float,
                      help="the fastest model at least this accurate (a fraction like 0.97, or percent like 97)")
    rule.add_argument("--knee", action="store_true", help="the knee of the front (best trade-off)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="pick among the trials in this precision only (their own Pareto front)")
    p.set_defaults(func=cmd_pick)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export one trial (verified) with a model card",
                       description="Export a trial's pruned model, verify that the export reproduces the PyTorch "
                                   "model on validation inputs, re-measure its latency on the run's profile, and "
                                   "write model_card.md/.json. Nothing is written when a check fails.")
    p.add_argument("run", help="run folder (the --out of a search; with --storage, filled from the database)")
    _add_storage_args(p)
    p.add_argument("--trial", type=int, required=True, help="trial number (see `autoprune pareto RUN`)")
    p.add_argument("--format", default="onnx",
                   help=f"{', '.join(EXPORTERS.names())} (torch: plan + state_dict; tvm needs a tvm profile; "
                        "default: onnx)")
    p.add_argument("--out", required=True, help="new folder for the exported files")
    p.add_argument("--force", action="store_true", help="export a trial that is not on the Pareto front")
    p.add_argument("--static-batch", action="store_true",
                   help="onnx/tvm: fix the batch size to the example input's (default: a dynamic batch axis, "
                        "verified at batch 1 and 8; tvm builds it with default schedules, --static-batch keeps a "
                        "tuned profile's)")
    p.set_defaults(func=cmd_export)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from rich.table import Table

    from autoprune.config import load_profile, load_space, pruner_settings
    from autoprune.console import make_console
    from autoprune.errors import ConfigError
    from autoprune.files import check_writable_file
    from autoprune.hardware.predictor import default_predictor_path
    from autoprune.search.calibration import calibrate
    from autoprune.task import resolve_task

    if args.fit < 2 or args.holdout < 1:
        raise ConfigError(f"command line: --fit must be >= 2 and --holdout >= 1, got {args.fit}, {args.holdout}")
    profile, space = load_profile(args.hw), load_space(args.space)
    out = args.out or default_predictor_path(profile, args.task)
    check_writable_file(out)  # before the work, not after it
    task = resolve_task(_task_spec(args))
    result = calibrate(task, profile, pruner_settings(space, profile), fit=args.fit, holdout=args.holdout,
                       seed=args.seed)
    path = result.predictor.save(out)
    table = Table(title=f"latency predictor: {task.name} on {profile.name}")
    for column in ("held-out plan", "predicted ms", "measured ms", "error"):
        table.add_column(column, justify="right")
    for i, row in enumerate(result.holdout):
        error = (row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"]
        table.add_row(str(i), f"{row['predicted_ms']:.3f}", f"{row['measured_ms']:.3f}", f"{error:+.1%}")
    console = make_console()
    console.print(table)
    console.print(f"layer shapes measured: {result.layers}; whole-model fits: {result.fit_plans}; "
                  f"median abs % error on {result.holdout_plans} held-out plans: {result.holdout_mdape:.1%} "
                  f"({result.seconds:.0f} s); saved {path}")
    return 0


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="build a latency predictor for a task on a hardware profile",
                       description="Measure each distinct layer shape once, fit a correction on a few whole-model "
                                   "measurements of random plans (pruned as the search space says), and print the "
                                   "error on held-out random plans.")
    _add_target_args(p, hw=True, space=True)
    p.add_argument("--fit", type=int, default=6, help="whole-model measurements to fit on (default: 6)")
    p.add_argument("--holdout", type=int, default=12, help="held-out random plans to report error on (default: 12)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random plans (default: 0)")
    p.add_argument("--out", default=None, help="predictor JSON (default: results/.cache/predictors/PROFILE--TASK.json)")
    p.set_defaults(func=cmd_calibrate)


def cmd_sweep_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from autoprune.config import load_sweep
    from autoprune.console import make_console, screening_line
    from autoprune.files import check_writable_folder
    from autoprune.results.sweep import parse_until, run_sweep

    deadline = parse_until(args.until) if args.until else None
    sweep, _ = load_sweep(args.file)  # rejects a bad file before anything starts
    out = args.out or str(Path("results/sweeps") / sweep.name)
    check_writable_folder(out)
    console = make_console()

    def show(kind, payload) -> None:
        if kind == "search":
            name, i, n = payload
            console.print(f"[bold]search {i + 1}/{n}: {name}")
        elif kind == "skipped":
            name, i, n, needed = payload
            console.print(f"search {i + 1}/{n}: {name} skipped: its set-up and one trial (~{needed:.0f} s, "
                          "estimated from the searches before it) do not fit before the --until deadline")
        elif kind == "screening":
            console.print("  " + screening_line(payload), highlight=False)
        elif kind == "trial_estimate":
            console.print(f"  one trial, timed on the dense model: ~{payload:.0f} s (the deadline's estimate until "
                          "a trial has finished)")
        elif kind == "trial":
            console.print(f"  trial {payload.number}: {payload.state} {payload.reason}")

    outcome = run_sweep(args.file, out, deadline=deadline, execution=_execution(args, sweep.execution), on_event=show,
                        storage=args.storage)
    console.print(f"sweep report: {outcome.report} (and {outcome.report.with_suffix('.html')})")
    return 0


def cmd_sweep_submit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from autoprune.config import load_sweep
    from autoprune.execution.ray_jobs import submit_sweep
    from autoprune.results.sweep import parse_until

    sweep, _ = load_sweep(args.file)
    if args.until:
        parse_until(args.until)  # a bad time is refused here, not on the cluster
    out = args.out or str((Path("results/sweeps") / sweep.name).resolve())
    print(submit_sweep(args.address, args.file, out=out, until=args.until, python=args.python, storage=args.storage))
    return 0


def cmd_sweep_status(args: argparse.Namespace) -> int:
    from autoprune.execution.ray_jobs import job_status

    print(job_status(args.address, args.job))
    return 0


def cmd_sweep_logs(args: argparse.Namespace) -> int:
    from autoprune.execution.ray_jobs import job_logs

    print(job_logs(args.address, args.job), end="")
    return 0


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="run several searches by a deadline, locally or as a Ray Job",
                       description="A sweep file (sweeps/*.yaml) lists searches (task x profile x space x agent x "
                                   "trials); each writes a run folder under --out, and a report ends the sweep.")
    sweeps = p.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")
    run = sweeps.add_parser("run", help="run a sweep here (on Ray when it asks for more than one worker)")
    run.add_argument("file", help="sweep YAML, e.g. sweeps/nightly.yaml")
    run.add_argument("--until", default=None,
                     help="local time HH:MM the sweep must end by; trial budgets shrink to fit")
    run.add_argument("--out", default=None, help="sweep folder (default: results/sweeps/<sweep name>)")
    run.add_argument("--storage", default=None,
                     help="SQLAlchemy URL of a study database for every search (study SWEEP.SEARCH each; default: "
                          "each run folder's study.db)")
    _add_execution_args(run)
    run.set_defaults(func=cmd_sweep_run)
    default_address = "http://127.0.0.1:8265"
    submit = sweeps.add_parser("submit", help="submit a sweep as a Ray Job and print its id")
    submit.add_argument("file", help="sweep YAML (paths in it are relative to this folder, which is uploaded)")
    submit.add_argument("--address", default=default_address,
                        help=f"the cluster's job server (default: {default_address})")
    submit.add_argument("--until", default=None, help="local time HH:MM the sweep must end by")
    submit.add_argument("--out", default=None,
                        help="sweep folder on the cluster (default: absolute results/sweeps/<name>)")
    submit.add_argument("--python", default="python", help="Python on the cluster with autoprune's dependencies")
    submit.add_argument("--storage", default=None,
                        help="SQLAlchemy URL of the study database as the cluster reaches it (default: study.db files)")
    submit.set_defaults(func=cmd_sweep_submit)
    for action, func, text in (("status", cmd_sweep_status, "print a submitted sweep's job status"),
                               ("logs", cmd_sweep_logs, "print a submitted sweep's job logs")):
        q = sweeps.add_parser(action, help=text)
        q.add_argument("job", help="job id printed by `autoprune sweep submit`")
        q.add_argument("--address", default=default_address,
                       help=f"the cluster's job server (default: {default_address})")
        q.set_defaults(func=func)


#: each adds one subcommand; later features add theirs here
SUBCOMMANDS: list[Callable] = [
    _add_search, _add_profile, _add_inspect, _add_sensitivity, _add_calibrate, _add_report, _add_pareto, _add_pick,
    _add_export, _add_sweep,
]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="autoprune", description="Hardware-aware automated pruning search.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _check_own_package() -> None:
    """ConfigError when ``import autoprune`` finds something else than this package.

    A folder named ``autoprune`` on ``sys.path`` (``PYTHONPATH``, or the current folder under
    ``python -m``) is imported as a namespace package ahead of an editable install's finder: this
    command still loads, but ``from autoprune import Task`` in a user's task module would fail.
    """
    from pathlib import Path

    from autoprune.errors import ConfigError

    here = Path(__file__).resolve().parent
    package = sys.modules.get("autoprune")
    file = getattr(package, "__file__", None)
    if file is None or Path(file).resolve().parent != here:
        found = file or ", ".join(str(p) for p in getattr(package, "__path__", [])) or repr(package)
        raise ConfigError(f"`import autoprune` finds {found}, not the installed package at {here}: a folder named "
                          "autoprune on sys.path (PYTHONPATH or the current folder) shadows it; rename that folder or "
                          "take it off PYTHONPATH")


#: OSError numbers that mean the machine's storage refused a write, not a bug
STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from autoprune.errors import AutopruneError

    try:
        _check_own_package()
        return args.func(args)
    except AutopruneError as err:
        print(f"autoprune: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in STORAGE_ERRNOS:
            raise
        # a fault of the machine met mid-way (disk full, folder made read-only): the path and what to do
        where = f"{err.filename}: " if err.filename else ""
        print(f"autoprune: error: {where}{(err.strerror or str(err)).lower()}; free space or make the folder "
              "writable, then run the same command again (finished work is kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autoprune: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
