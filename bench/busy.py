"""Does a busy machine move the front? ``make demo`` idle, then beside CPU burners (issue 16, item 5).

Runs ``make demo`` (digits, cpu-onnxruntime, the default space, tpe, 24 trials, seed 0) into two fresh
folders: once on the machine as it is, then while one CPU burner per core runs (a bounded busy loop
that stops by itself after ``--burn-s``). TPE with the same seed proposes the same first plans, so
trials of the same plan can be compared across the runs: their speed-up (dense p50 / p50, the numbers
the front shows) and the interleaved ratio. Prints each front with its CV and noisy marks, then the
share of common plans whose speed-ups agree within 10%, and whether each busy front point that does not
agree is marked noisy. Both runs measure every candidate afresh (``AUTOPRUNE_LATENCY_CACHE=off``).
Run it with nothing else running (the idle run must be idle).

    .venv/bin/python bench/busy.py                 # about 25 minutes here
    .venv/bin/python bench/busy.py --trials 4      # a quick check of the script
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOLERANCE = 0.10


def burn(until: float) -> None:
    """A bounded busy loop: one core at 100% until ``until`` (a ``time.time()`` value)."""
    while time.time() < until:
        pass


def demo(out: Path, trials: int) -> dict:
    """``make demo`` into ``out``: every finished trial, the front, the dense p50 and the wall time."""
    from autoprune.results.run import RunFolder
    from autoprune.search.study import finished_records

    start = time.time()
    # no latency cache: it would hand the busy run the idle run's figures of the same plans
    subprocess.run(["make", "-s", "demo", f"RUN={out}", f"DEMO_TRIALS={trials}"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "AUTOPRUNE_LATENCY_CACHE": "off"})
    wall = time.time() - start
    pareto = json.loads((out / "pareto.json").read_text())
    records = finished_records(RunFolder(out).open_study(["maximize", "minimize"], create=False))
    return {"records": records, "front": {r["number"] for r in pareto["front"]},
            "noisy": set(pareto.get("noisy_front") or []), "dense_p50": pareto["dense"]["latency"]["median_ms"],
            "wall_s": wall}


def summary(label: str, run: dict) -> dict[str, dict]:
    """Each complete trial by plan: speed-up (dense p50 / p50), interleaved ratio, CV, noisy, on the front."""
    rows = {}
    for r in run["records"]:
        if r.state.value != "complete" or r.latency is None or r.duplicate_of is not None:
            continue
        rows[json.dumps(r.plan, sort_keys=True)] = {
            "number": r.number, "speedup": run["dense_p50"] / r.latency.median_ms, "interleaved": r.speedup,
            "cv": r.latency.cv, "noisy": r.latency.noisy or r.number in run["noisy"], "front": r.number in run["front"],
            "accuracy": r.accuracy}
    print(f"\n{label}: dense p50 {run['dense_p50']:.3f} ms, {len(rows)} complete trials, wall {run['wall_s']:.0f} s")
    for row in sorted((v for v in rows.values() if v["front"]), key=lambda v: v["speedup"]):
        print(f"  front #{row['number']:>2}: speed-up {row['speedup']:.2f}x (interleaved {row['interleaved']:.2f}x), "
              f"CV {100 * row['cv']:.1f}%, accuracy {100 * row['accuracy']:.1f}%{'  NOISY' if row['noisy'] else ''}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--burn-s", type=float, default=1800.0, help="the burners stop by themselves after this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autoprune-bench-busy-") as tmp:
        idle = demo(Path(tmp) / "idle", args.trials)
        burners = [multiprocessing.Process(target=burn, args=(time.time() + args.burn_s,), daemon=True)
                   for _ in range(os.cpu_count() or 1)]
        for b in burners:
            b.start()
        try:
            busy = demo(Path(tmp) / "busy", args.trials)
        finally:
            for b in burners:
                b.terminate()
    idle_rows, busy_rows = summary("idle", idle), summary(f"busy ({len(burners)} burners)", busy)
    common = sorted(set(idle_rows) & set(busy_rows), key=lambda k: idle_rows[k]["number"])
    print(f"\n{len(common)} plans measured in both runs (speed-up busy / idle):")
    agree = {"speedup": 0, "interleaved": 0}
    unmarked = []
    for key in common:
        i, b = idle_rows[key], busy_rows[key]
        ratios = {k: b[k] / i[k] for k in agree}
        for k, ratio in ratios.items():
            agree[k] += abs(ratio - 1) <= TOLERANCE
        if b["front"] and abs(ratios["speedup"] - 1) > TOLERANCE and not b["noisy"]:
            unmarked.append(b["number"])
        print(f"  idle #{i['number']:>2} / busy #{b['number']:>2}: {i['speedup']:.2f}x -> {b['speedup']:.2f}x "
              f"({ratios['speedup']:.2f}); interleaved {i['interleaved']:.2f}x -> {b['interleaved']:.2f}x "
              f"({ratios['interleaved']:.2f}); busy CV {100 * b['cv']:.1f}%{' noisy' if b['noisy'] else ''}")
    figures = {"common_plans": len(common),
               "speedup_within_10pct": agree["speedup"], "interleaved_within_10pct": agree["interleaved"],
               "busy_front": sum(r["front"] for r in busy_rows.values()),
               "busy_front_noisy": sum(r["front"] and r["noisy"] for r in busy_rows.values()),
               "busy_front_off_by_more_than_10pct_unmarked": unmarked,
               "dense_p50_ms": {"idle": idle["dense_p50"], "busy": busy["dense_p50"]},
               "wall_s": {"idle": round(idle["wall_s"]), "busy": round(busy["wall_s"])}}
    print("\n" + json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
