"""The ``autoprune`` command: parse, load config, call the library, print, exit code.

Heavy libraries are imported inside the command functions so ``--help`` stays instant.
A user error (AutopruneError) prints one line and exits 2; Ctrl-C exits 130 and the same
command resumes.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

DEFAULT_HW = "hw_profiles/cpu-onnxruntime.yaml"
DEFAULT_SPACE = "search_spaces/default.yaml"


def _search_config(args: argparse.Namespace):
    from autoprune.config import SearchConfig, load_profile, load_space
    from autoprune.errors import ConfigError

    try:
        return SearchConfig(task=args.task, profile=load_profile(args.hw), space=load_space(args.space),
                            agent=args.agent, trials=args.trials, seed=args.seed,
                            max_latency_ms=args.max_latency_ms, finetune=_finetune_overrides(args))
    except ConfigError as err:
        raise ConfigError(f"command line: {err}") from None


def cmd_search(args: argparse.Namespace) -> int:
    from rich.console import Console

    from autoprune.console import SearchProgress, pareto_table
    from autoprune.execution.driver import run_search
    from autoprune.search.agent import AGENTS

    AGENTS.get(args.agent, where="--agent")
    config = _search_config(args)
    console = Console()
    progress = SearchProgress(console)
    try:
        outcome = run_search(config, args.out, storage=args.storage, on_event=progress, execution=_execution(args))
    finally:
        progress.close()
    console.print(pareto_table(outcome.dense, outcome.front))
    console.print(f"run folder: {outcome.run.path}  (Pareto front in {outcome.run.pareto})")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from autoprune.config import load_profile
    from autoprune.console import latency_table
    from autoprune.hardware.protocol import measure_models
    from autoprune.task import resolve_task

    profile = load_profile(args.hw)
    task = resolve_task(args.task)
    stats = measure_models(profile, [task.build_model()], task.example_input)[0]
    Console().print(latency_table(f"{task.name} dense on {profile.name}", stats.to_dict()))
    return 0


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="run or resume a pruning search",
                       description="Search pruning plans for a task on a hardware profile. Re-running the same "
                                   "command on the same --out resumes the search.")
    p.add_argument("--task", default="digits", help="registered task name or module:function (default: digits)")
    p.add_argument("--hw", default=DEFAULT_HW, help=f"hardware profile YAML (default: {DEFAULT_HW})")
    p.add_argument("--space", default=DEFAULT_SPACE, help=f"search space YAML (default: {DEFAULT_SPACE})")
    p.add_argument("--agent", default="tpe", help="search agent: tpe, random, ... (default: tpe)")
    p.add_argument("--trials", type=int, default=12, help="total trials in the run (default: 12)")
    p.add_argument("--seed", type=int, default=0, help="seed for the agent and fine-tuning (default: 0)")
    p.add_argument("--max-latency-ms", type=float, default=None, help="reject candidates slower than this")
    p.add_argument("--out", required=True, help="run folder, e.g. results/my-run")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL of the study storage (default: OUT/study.db)")
    _add_finetune_args(p)
    _add_execution_args(p)
    p.set_defaults(func=cmd_search)


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
    g.add_argument("--ray-address", default=None,
                   help="join a Ray cluster: auto, ray://HOST:PORT or HOST:PORT (default: a local Ray on 127.0.0.1)")
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
    p.add_argument("--task", default="digits", help="registered task name or module:function")
    p.add_argument("--hw", default=DEFAULT_HW, help=f"hardware profile YAML (default: {DEFAULT_HW})")
    p.set_defaults(func=cmd_profile)


def cmd_sweep_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from autoprune.config import load_sweep
    from autoprune.execution.sweep import parse_until, run_sweep

    deadline = parse_until(args.until) if args.until else None
    sweep, _ = load_sweep(args.file)  # rejects a bad file before anything starts
    out = args.out or str(Path("results/sweeps") / sweep.name)
    console = Console()

    def show(kind, payload) -> None:
        if kind == "search":
            name, i, n = payload
            console.print(f"[bold]search {i + 1}/{n}: {name}")
        elif kind == "trial":
            console.print(f"  trial {payload.number}: {payload.state} {payload.reason}")

    outcome = run_sweep(args.file, out, deadline=deadline, execution=_execution(args, sweep.execution), on_event=show)
    console.print(f"sweep report: {outcome.report} (and {outcome.report.with_suffix('.html')})")
    return 0


def cmd_sweep_submit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from autoprune.config import load_sweep
    from autoprune.execution.jobs import submit_sweep

    sweep, _ = load_sweep(args.file)
    out = args.out or str((Path("results/sweeps") / sweep.name).resolve())
    print(submit_sweep(args.address, args.file, out=out, until=args.until, python=args.python))
    return 0


def cmd_sweep_status(args: argparse.Namespace) -> int:
    from autoprune.execution.jobs import job_status

    print(job_status(args.address, args.job))
    return 0


def cmd_sweep_logs(args: argparse.Namespace) -> int:
    from autoprune.execution.jobs import job_logs

    print(job_logs(args.address, args.job), end="")
    return 0


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="run several searches by a deadline, locally or as a Ray Job",
                       description="A sweep file (sweeps/*.yaml) lists searches (task x profile x space x agent x "
                                   "trials); each writes a run folder under --out, and a report ends the sweep.")
    sweeps = p.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")
    run = sweeps.add_parser("run", help="run a sweep here (on Ray when it asks for more than one worker)")
    run.add_argument("file", help="sweep YAML, e.g. sweeps/nightly.yaml")
    run.add_argument("--until", default=None, help="local time HH:MM the sweep must end by; trial budgets shrink to fit")
    run.add_argument("--out", default=None, help="sweep folder (default: results/sweeps/<sweep name>)")
    _add_execution_args(run)
    run.set_defaults(func=cmd_sweep_run)
    default_address = "http://127.0.0.1:8265"
    submit = sweeps.add_parser("submit", help="submit a sweep as a Ray Job and print its id")
    submit.add_argument("file", help="sweep YAML (paths in it are relative to this folder, which is uploaded)")
    submit.add_argument("--address", default=default_address, help=f"the cluster's job server (default: {default_address})")
    submit.add_argument("--until", default=None, help="local time HH:MM the sweep must end by")
    submit.add_argument("--out", default=None, help="sweep folder on the cluster (default: absolute results/sweeps/<name>)")
    submit.add_argument("--python", default="python", help="Python on the cluster with autoprune's dependencies")
    submit.set_defaults(func=cmd_sweep_submit)
    for action, func, text in (("status", cmd_sweep_status, "print a submitted sweep's job status"),
                               ("logs", cmd_sweep_logs, "print a submitted sweep's job logs")):
        q = sweeps.add_parser(action, help=text)
        q.add_argument("job", help="job id printed by `autoprune sweep submit`")
        q.add_argument("--address", default=default_address, help=f"the cluster's job server (default: {default_address})")
        q.set_defaults(func=func)


#: each adds one subcommand; later features add theirs here
SUBCOMMANDS: list[Callable] = [_add_search, _add_profile, _add_sweep]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoprune", description="Hardware-aware automated pruning search.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from autoprune.errors import AutopruneError

    try:
        return args.func(args)
    except AutopruneError as err:
        print(f"autoprune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autoprune: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
