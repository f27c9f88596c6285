"""Pruning coverage benchmark: every test model family, a uniform 50% channel plan, no model-specific code.

Per model: groups found, layers left out, MAC reduction, time to prune (discovery + apply), and,
for the full-size CNNs at 224x224, the measured ONNX Runtime CPU speed-up (batch 1, 1 thread,
dense and pruned interleaved in one process) against the MAC reduction, for each ``round_to``.

    /work/main/.venv/bin/python bench/prune_coverage.py [--round-to 1,8,16] [--repeat 3]

Prints one JSON line per (model, round_to), then a table.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoprune.config import HardwareProfile  # noqa: E402
from autoprune.hardware.meter import LatencyMeter  # noqa: E402
from autoprune.plan import PrunerSettings, PruningPlan  # noqa: E402
from autoprune.pruning import apply_plan, discover, model_stats  # noqa: E402
from autoprune.testing.models import TINY, ResNet, efficientnet_b0, mobilenet_v2  # noqa: E402

FULL_SIZE = {
    "resnet50": lambda: ResNet((3, 4, 6, 3), width=64, bottleneck=True, classes=1000),
    "mobilenetv2": lambda: mobilenet_v2(),
    "efficientnet_b0": lambda: efficientnet_b0(),
}
PROFILE = HardwareProfile(name="bench-ort-1t", backend="onnxruntime", threads=1, warmup_s=1.0, min_runs=30, repeats=5,
                          max_cv=0.03, max_remeasure=1)


def run_one(name: str, build, x: torch.Tensor, round_to: int, measure: int) -> dict:
    torch.manual_seed(0)
    dense = build().eval()
    model = copy.deepcopy(dense)
    start = time.perf_counter()
    report = discover(model, x)
    discover_s = time.perf_counter() - start
    plan = PruningPlan.uniform([g.name for g in report.groups], 0.5)
    start = time.perf_counter()
    apply_plan(model, x, plan, PrunerSettings(round_to=round_to, min_channels=8))
    prune_s = time.perf_counter() - start
    dense_macs, pruned_macs = model_stats(dense, x).macs, model_stats(model, x).macs
    row = {"model": name, "input": list(x.shape), "round_to": round_to, "groups": len(report.groups),
           "left_out": len(report.left_out), "left_out_layers": [f"{o.layer}: {o.reason}" for o in report.left_out],
           "macs_dense": dense_macs, "macs_pruned": pruned_macs, "mac_reduction": dense_macs / pruned_macs,
           "discover_s": round(discover_s, 3), "prune_s": round(prune_s, 3)}
    if measure:
        # several interleaved comparisons; the median ratio resists bursts of load from other processes
        meter = LatencyMeter(PROFILE, dense, x)
        pairs = sorted((meter.compare(model) for _ in range(measure)),
                       key=lambda p: p[1].median_ms / p[0].median_ms)
        candidate, reference = pairs[len(pairs) // 2]
        speedup = reference.median_ms / candidate.median_ms
        row.update(dense_ms=reference.median_ms, pruned_ms=candidate.median_ms, speedup=speedup,
                   speedup_per_mac_reduction=speedup / row["mac_reduction"], cv=[reference.cv, candidate.cv],
                   speedups_all=[round(d.median_ms / c.median_ms, 3) for c, d in pairs])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-to", default="8,16", help="comma-separated round_to values for the full-size CNNs")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved comparisons per model (median kept); 0: none")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, (build, x) in TINY.items():
        rows.append(run_one(name, build, x, 4, measure=0))
        print(json.dumps(rows[-1]), flush=True)
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    for round_to in (int(v) for v in args.round_to.split(",")):
        for name, build in FULL_SIZE.items():
            rows.append(run_one(name, build, x, round_to, measure=args.repeat))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'model':<18}{'input':>10}{'rt':>4}{'groups':>7}{'left':>6}{'MAC red.':>9}{'find s':>8}{'prune s':>8}"
          f"{'dense ms':>10}{'pruned ms':>10}{'speed-up':>9}{'su/MACred':>10}")
    for r in rows:
        timing = (f"{r['dense_ms']:>10.2f}{r['pruned_ms']:>10.2f}{r['speedup']:>8.2f}x"
                  f"{r['speedup_per_mac_reduction']:>10.2f}"
                  if "speedup" in r else f"{'-':>10}{'-':>10}{'-':>9}{'-':>10}")
        print(f"{r['model']:<18}{'x'.join(map(str, r['input'][2:])) or '-':>10}{r['round_to']:>4}{r['groups']:>7}"
              f"{r['left_out']:>6}{r['mac_reduction']:>8.2f}x{r['discover_s']:>8.2f}{r['prune_s']:>8.2f}{timing}")
    ratios = [r["speedup_per_mac_reduction"] for r in rows if "speedup" in r]
    if ratios:
        print(f"\nspeed-up / MAC reduction: median {statistics.median(ratios):.2f}, min {min(ratios):.2f} "
              f"(targets: median >= 0.9, none below 0.8)")


if __name__ == "__main__":
    main()
