"""How far a sweep with a deadline overruns it (issue 17, item 3).

Each run writes a two-search sweep (the same task and profile, agents random and tpe, a trial budget
far above what fits) into a fresh folder, or takes ``--sweep`` (e.g. the shipped ``sweeps/nightly.yaml``,
its own workers and budgets), runs it with a deadline ``--seconds`` from now, and records when it
ended against the deadline and the longest trial it ran. Target: the overrun is never more than one
trial's duration, and under 30 s on the shipped sweep.

    python bench/deadline.py --runs 5 --seconds 600                       # digits on cpu-onnxruntime
    python bench/deadline.py --runs 5 --seconds 300 --sweep sweeps/nightly.yaml   # the shipped sweep
    python bench/deadline.py --runs 1 --seconds 30 --task tests.tiny_task:tiny_task   # a quick check

Prints one JSON line per run, then a table. Measure on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_run(args: argparse.Namespace, folder: Path) -> dict:
    from autoprune.config import ExecutionConfig
    from autoprune.results.sweep import run_sweep

    if args.sweep:
        sweep, execution = Path(args.sweep).resolve(), None  # the file's own execution settings (workers, Ray)
    else:
        sweep, execution = _two_search_sweep(args, folder), ExecutionConfig(workers=args.workers)
    start = time.time()
    deadline = start + args.seconds
    outcome = run_sweep(sweep, folder / "out", deadline=deadline, execution=execution)
    end = time.time()
    durations = [sum(r.seconds.values()) for _, _, o in outcome.outcomes for r in o.records if r.seconds]
    return {"seconds": args.seconds, "overrun_s": round(end - deadline, 2), "wall_s": round(end - start, 2),
            "trials": sum(len(o.records) for _, _, o in outcome.outcomes),
            "searches_run": len(outcome.outcomes),
            "setup_s": [round(o.setup_s, 1) for _, _, o in outcome.outcomes],
            "longest_trial_s": round(max(durations), 2) if durations else None,
            "median_trial_s": round(sorted(durations)[len(durations) // 2], 2) if durations else None}


def _two_search_sweep(args: argparse.Namespace, folder: Path) -> Path:
    entries = "".join(f"  - name: {agent}\n    task: {args.task}\n    profile: {args.hw}\n    space: {args.space}\n"
                      f"    agent: {agent}\n    trials: 10000\n" for agent in ("random", "tpe"))
    sweep = folder / "sweep.yaml"
    sweep.write_text(f"name: deadline\naccuracy_tolerance: 0.01\nsearches:\n{entries}")
    return sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=600.0, help="deadline, seconds after each run starts")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--hw", default=str(ROOT / "hw_profiles/cpu-onnxruntime.yaml"))
    parser.add_argument("--space", default=str(ROOT / "search_spaces/default.yaml"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sweep", default=None, help="run this sweep file as it is (paths relative to the current "
                                                      "folder) instead of the generated two-search one")
    args = parser.parse_args()
    rows = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            row = {"run": i, **one_run(args, Path(tmp))}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| run | deadline s | overrun s | longest trial s | median trial s | trials | searches run |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['seconds']:g} | {r['overrun_s']:+.1f} | {r['longest_trial_s']} | "
              f"{r['median_trial_s']} | {r['trials']} | {r['searches_run']} |")
    worst = max(r["overrun_s"] for r in rows)
    judged = [r for r in rows if r["longest_trial_s"] is not None]
    within = all(r["overrun_s"] <= r["longest_trial_s"] for r in judged)
    print(f"\nworst overrun {worst:+.1f} s over {len(rows)} runs; never more than the run's longest trial: "
          f"{within if judged else 'n/a (no trial finished: the overrun is set-up, e.g. dense training)'}")


if __name__ == "__main__":
    main()
