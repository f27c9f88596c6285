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


#: what a search uses when neither --config nor a flag says otherwise
SEARCH_DEFAULTS = {"task": "digits", "profile": DEFAULT_HW, "space": DEFAULT_SPACE, "agent": "tpe", "trials": 12,
                   "seed": 0}
#: search flags that map onto SearchConfig fields (``hw`` is the ``profile`` field)
SEARCH_FLAGS = ("task", "hw", "space", "agent", "trials", "seed", "objectives", "max_latency_ms", "min_accuracy",
                "max_params", "proxy_keep")


def _search_config(args: argparse.Namespace):
    """SearchConfig from defaults, then the --config file, then the flags given on the command line."""
    from pathlib import Path

    from autoprune.config import SearchConfig, load_profile, load_search_settings, load_space
    from autoprune.errors import ConfigError

    settings = load_search_settings(args.config) if args.config else {}
    for key in ("profile", "space"):  # paths in the config file are relative to it
        if key in settings and not Path(settings[key]).is_absolute():
            settings[key] = str(Path(args.config).parent / settings[key])
    flags = {k: getattr(args, k) for k in SEARCH_FLAGS if getattr(args, k) is not None}
    if "hw" in flags:
        flags["profile"] = flags.pop("hw")
    if "objectives" in flags:
        flags["objectives"] = tuple(o.strip() for o in flags["objectives"].split(",") if o.strip())
    merged = {**SEARCH_DEFAULTS, **settings, **flags}
    merged["profile"] = load_profile(merged["profile"])
    merged["space"] = load_space(merged["space"])
    where = args.config or "command line"
    try:
        return SearchConfig(**merged)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None


def cmd_search(args: argparse.Namespace) -> int:
    from rich.console import Console

    from autoprune.console import SearchProgress, pareto_table
    from autoprune.execution.driver import run_search
    from autoprune.search.agent import AGENTS

    config = _search_config(args)
    AGENTS.get(config.agent, where="--agent")
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
    p.add_argument("--config", default=None,
                   help="search config YAML (SearchConfig fields; `profile`/`space` are YAML paths); flags override it")
    p.add_argument("--task", default=None, help="registered task name or module:function (default: digits)")
    p.add_argument("--hw", default=None, help=f"hardware profile YAML (default: {DEFAULT_HW})")
    p.add_argument("--space", default=None, help=f"search space YAML (default: {DEFAULT_SPACE})")
    p.add_argument("--agent", default=None, help="search agent: tpe, nsga2, rl, random, uniform (default: tpe)")
    p.add_argument("--trials", type=int, default=None, help="total trials in the run (default: 12)")
    p.add_argument("--seed", type=int, default=None, help="seed for the agent and fine-tuning (default: 0)")
    p.add_argument("--objectives", default=None,
                   help="comma-separated: accuracy, latency, latency_p90, params, macs, memory (default: accuracy,latency)")
    p.add_argument("--max-latency-ms", type=float, default=None, help="reject candidates slower than this")
    p.add_argument("--min-accuracy", type=float, default=None, help="trials below this accuracy are infeasible")
    p.add_argument("--max-params", type=int, default=None, help="trials with more parameters are infeasible")
    p.add_argument("--proxy-keep", type=float, default=None,
                   help="share of candidates (by BN-recalibrated proxy accuracy) that get the full fine-tune (default: 1)")
    p.add_argument("--out", required=True, help="run folder, e.g. results/my-run")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL of the study storage (default: OUT/study.db)")
    p.set_defaults(func=cmd_search)


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
