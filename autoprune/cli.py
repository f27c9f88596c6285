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
                            max_latency_ms=args.max_latency_ms)
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
        outcome = run_search(config, args.out, storage=args.storage, on_event=progress)
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
    p.set_defaults(func=cmd_search)


def _add_profile(sub) -> None:
    p = sub.add_parser("profile", help="measure the dense model's latency on a hardware profile")
    p.add_argument("--task", default="digits", help="registered task name or module:function")
    p.add_argument("--hw", default=DEFAULT_HW, help=f"hardware profile YAML (default: {DEFAULT_HW})")
    p.set_defaults(func=cmd_profile)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from autoprune.config import load_profile
    from autoprune.errors import ConfigError
    from autoprune.hardware.predictor import calibrate, default_predictor_path
    from autoprune.task import resolve_task

    if args.fit < 2 or args.holdout < 1:
        raise ConfigError(f"command line: --fit must be >= 2 and --holdout >= 1, got {args.fit}, {args.holdout}")
    profile = load_profile(args.hw)
    task = resolve_task(args.task)
    result = calibrate(task.build_model(), task.example_input, profile, fit=args.fit, holdout=args.holdout,
                       seed=args.seed)
    path = result.predictor.save(args.out or default_predictor_path(profile, args.task))
    table = Table(title=f"latency predictor: {task.name} on {profile.name}")
    for column in ("held-out plan", "predicted ms", "measured ms", "error"):
        table.add_column(column, justify="right")
    for i, row in enumerate(result.holdout):
        error = (row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"]
        table.add_row(str(i), f"{row['predicted_ms']:.3f}", f"{row['measured_ms']:.3f}", f"{error:+.1%}")
    console = Console()
    console.print(table)
    console.print(f"layer shapes measured: {result.layers}; whole-model fits: {result.fit_plans}; "
                  f"median abs % error on {result.holdout_plans} held-out plans: {result.holdout_mdape:.1%} "
                  f"({result.seconds:.0f} s); saved {path}")
    return 0


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="build a latency predictor for a task on a hardware profile",
                       description="Measure each distinct layer shape once, fit a correction on a few whole-model "
                                   "measurements of random plans, and print the error on held-out random plans.")
    p.add_argument("--task", default="digits", help="registered task name or module:function")
    p.add_argument("--hw", default=DEFAULT_HW, help=f"hardware profile YAML (default: {DEFAULT_HW})")
    p.add_argument("--fit", type=int, default=6, help="whole-model measurements to fit on (default: 6)")
    p.add_argument("--holdout", type=int, default=12, help="held-out random plans to report error on (default: 12)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random plans (default: 0)")
    p.add_argument("--out", default=None, help="predictor JSON (default: results/.cache/predictors/PROFILE--TASK.json)")
    p.set_defaults(func=cmd_calibrate)


#: each adds one subcommand; later features add theirs here
SUBCOMMANDS: list[Callable] = [_add_search, _add_profile, _add_calibrate]


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
