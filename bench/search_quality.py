"""Search quality per agent: hypervolume, best accuracy at latency budgets, fine-tunes, wall time.

Every agent gets the same trial budget on the default task (digits) and CPU profile, over
several seeds; random search also runs with ``--random-factor`` x the budget (its first
``--trials`` trials are the equal-budget random run, since a seeded sampler's prefix is the
shorter run). The fine-tune can be shortened (``--epochs``, ``--train-fraction``) so that
accuracy does not saturate and agents can differ. The default is no fine-tune at all: the
score is accuracy after BatchNorm recalibration, as AMC scores candidates during its search.
(Tried first: 1 epoch on 25% of the data, 5 optimizer steps, which *lowered* accuracy below
the recalibrated proxy and cost ~4x more per trial on the shared machine.)

Prints one JSON line per run and per agent summary, then a table. Example:

    python bench/search_quality.py --trials 10 --seeds 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGETS = (0.25, 0.5, 0.7)
EPOCHS_ENV = "AUTOPRUNE_BENCH_EPOCHS"
FRACTION_ENV = "AUTOPRUNE_BENCH_TRAIN_FRACTION"


def short_digits():
    """The digits task with the fine-tune shortened by the environment (epochs, share of the training set)."""
    import torch
    from torch.utils.data import Subset

    from autoprune.tasks.digits import digits_task

    task = digits_task()
    recipe = replace(task.recipe, epochs=int(os.environ.get(EPOCHS_ENV, task.recipe.epochs)))
    fraction = float(os.environ.get(FRACTION_ENV, "1"))
    train = task.train_set
    if fraction < 1:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
        train = Subset(train, order[: max(1, int(fraction * len(train)))].tolist())
    return replace(task, name="bench-digits", recipe=recipe, train_set=train)


def best_accuracy_at(records, budget: float) -> float | None:
    """Best accuracy among complete trials whose latency (interleaved ratio to dense) is <= budget x dense."""
    ok = [r.accuracy for r in records if r.state == "complete" and r.speedup and 1.0 / r.speedup <= budget]
    return max(ok) if ok else None


def run_one(agent: str, seed: int, trials: int, args, out: Path) -> dict:
    from autoprune.config import SearchConfig, load_profile, load_space
    from autoprune.results.search import run_search
    from autoprune.search.objectives import Scoring

    config = SearchConfig(task="bench.search_quality:short_digits", profile=load_profile(args.hw),
                          space=load_space(args.space), agent=agent, trials=trials, seed=seed,
                          proxy_keep=args.proxy_keep)
    start = time.perf_counter()
    outcome = run_search(config, out / f"{agent}-n{trials}-s{seed}")
    wall = time.perf_counter() - start
    scoring = Scoring.from_config(config, outcome.dense)
    pareto = json.loads(outcome.run.pareto.read_text())
    return {"agent": agent, "seed": seed, "trials": trials, "outcome": outcome, "scoring": scoring,
            "wall_s": wall, "spearman": pareto["proxy_vs_full"]["spearman"]}


def summarise(agent: str, seed: int, trials: int, run: dict) -> dict:
    """Figures of the first ``trials`` trials of a run."""
    records = [r for r in run["outcome"].records if r.number < trials]
    per_trial = run["wall_s"] / max(len(run["outcome"].records), 1)
    return {"agent": agent, "seed": seed, "trials": trials, "hypervolume": run["scoring"].hypervolume(records),
            **{f"best_acc@{b}x": best_accuracy_at(records, b) for b in BUDGETS},
            "fine_tunes": sum(r.state == "complete" and r.duplicate_of is None for r in records),
            "duplicates": sum(r.duplicate_of is not None for r in records),
            "rejected": sum(r.state == "rejected" for r in records),
            "wall_s": round(per_trial * len(records), 1), "spearman_proxy_full": run["spearman"],
            "dense_accuracy": run["outcome"].dense.accuracy}


def _fmt(values: list, pct: bool = False) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    scale = 100 if pct else 1
    mean = statistics.mean(vals) * scale
    spread = (statistics.stdev(vals) * scale) if len(vals) > 1 else 0.0
    miss = f" ({len(values) - len(vals)} none)" if len(vals) < len(values) else ""
    return f"{mean:.{2 if pct else 4}f} ± {spread:.{2 if pct else 4}f}{miss}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="nsga2,tpe,rl,uniform,random")
    parser.add_argument("--trials", type=int, default=10, help="equal trial budget per agent")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--random-factor", type=int, default=2, help="random search also gets this x the budget")
    parser.add_argument("--epochs", type=int, default=0, help="fine-tune epochs (0: none; the task's default is 2)")
    parser.add_argument("--train-fraction", type=float, default=1.0, help="share of the training set fine-tuned on")
    parser.add_argument("--proxy-keep", type=float, default=1.0)
    parser.add_argument("--hw", default=str(ROOT / "hw_profiles/cpu-onnxruntime.yaml"))
    parser.add_argument("--space", default=str(ROOT / "search_spaces/default.yaml"))
    parser.add_argument("--out", default=str(ROOT / "results/bench-search-quality"))
    args = parser.parse_args(argv)
    os.environ[EPOCHS_ENV] = str(args.epochs)
    os.environ[FRACTION_ENV] = str(args.train_fraction)
    out = Path(args.out)
    rows: list[dict] = []
    for seed in range(args.seeds):
        for agent in args.agents.split(","):
            trials = args.trials * (args.random_factor if agent == "random" else 1)
            run = run_one(agent, seed, trials, args, out)
            budgets = [args.trials] + ([trials] if trials != args.trials else [])
            for n in budgets:
                row = summarise(agent if n == args.trials else f"{agent}x{args.random_factor}", seed, n, run)
                rows.append(row)
                print(json.dumps(row), flush=True)
    names = list(dict.fromkeys(r["agent"] for r in rows))
    table = []
    for name in names:
        mine = [r for r in rows if r["agent"] == name]
        summary = {"agent": name, "runs": len(mine), "trials": mine[0]["trials"],
                   "hypervolume_mean": statistics.mean(r["hypervolume"] for r in mine),
                   "hypervolume_std": statistics.stdev([r["hypervolume"] for r in mine]) if len(mine) > 1 else 0.0,
                   **{f"best_acc@{b}x_mean": statistics.mean(v) if (v := [r[f"best_acc@{b}x"] for r in mine
                                                                         if r[f"best_acc@{b}x"] is not None]) else None
                      for b in BUDGETS},
                   "fine_tunes_mean": statistics.mean(r["fine_tunes"] for r in mine),
                   "wall_s_mean": statistics.mean(r["wall_s"] for r in mine)}
        print(json.dumps({"summary": summary}), flush=True)
        table.append((name, mine))
    header = ["agent", "trials", "hypervolume", *[f"best acc % @{b}x" for b in BUDGETS], "fine-tunes", "wall s"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, mine in table:
        cells = [name, str(mine[0]["trials"]), _fmt([r["hypervolume"] for r in mine]),
                 *[_fmt([r[f"best_acc@{b}x"] for r in mine], pct=True) for b in BUDGETS],
                 f'{statistics.mean(r["fine_tunes"] for r in mine):.1f}',
                 f'{statistics.mean(r["wall_s"] for r in mine):.0f}']
        print("| " + " | ".join(cells) + " |")
    recipe = ("none: accuracy after BatchNorm recalibration (AMC's search-time reward)" if args.epochs == 0
              else f"{args.epochs} epoch(s) on {args.train_fraction:.0%} of the training set")
    print(f"\nfine-tune: {recipe}; 'fine-tunes' counts full-fidelity evaluations; "
          f"hypervolume reference: accuracy 0.5, latency 1.0 x dense (p50, normalised); {args.seeds} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
