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


#: each adds one subcommand; later features add theirs here
SUBCOMMANDS: list[Callable] = [_add_search, _add_profile]


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
