"""Pruning coverage on real models: the torchvision zoo and a MiniLM-sized HF BERT, uniform 50% plan.

Per model (random init, 224x224 images; BERT with 6 layers, 12 heads, hidden 384, MLP 1536 on
128 tokens given as a dict of tensors), with no model-specific code: groups found, layers left
out (with reasons), MAC reduction, time to discover and to prune, and the ONNX Runtime CPU
speed-up (1 thread, batch 1, pruned and dense measured interleaved in one process) with its
ratio to the MAC reduction. The same figures for Torch-Pruning's standard recipe (MetaPruner,
the same ratio and round_to, its default importance, the model's output layers ignored) on the
same model, for comparison.

    .venv/bin/python bench/prune_coverage.py [--models resnet18,bert] [--round-to 16] [--repeat 3]

Prints one JSON line per (model, pruner), then a table and the medians. Each (model, pruner) runs in
its own process with a time and memory limit (Torch-Pruning's recipe does not finish on Swin-T: its
index lists grow without bound). Measure on an idle machine: other processes on the cores make the
speed-ups noisy (the CV of each measurement and the load average are printed).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoprune.compat import import_torchvision
from autoprune.config import HardwareProfile
from autoprune.inputs import Inputs, call, flatten_outputs, output_signature
from autoprune.plan import PrunerSettings, PruningPlan
from autoprune.pruning import apply_plan, discover, model_stats

TORCHVISION = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121",
               "shufflenet_v2_x1_0", "regnet_y_400mf", "convnext_tiny", "vit_b_16", "swin_t")
PROFILE = HardwareProfile(name="bench-ort-1t", backend="onnxruntime", threads=1, warmup_s=1.0, min_runs=30, repeats=5,
                          max_cv=0.03, max_remeasure=1)


def torchvision_model(name: str) -> Callable[[], nn.Module]:
    return lambda: getattr(import_torchvision().models, name)(weights=None)


def bert_minilm() -> nn.Module:
    """A random-init BertModel of all-MiniLM-L6-v2's shape."""
    import_torchvision()
    import transformers

    config = transformers.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                     intermediate_size=1536, max_position_embeddings=512)
    return transformers.BertModel(config)


def zoo(size: int, seq: int) -> dict[str, tuple[Callable[[], nn.Module], Inputs]]:
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, size, size, generator=gen)
    text = {"input_ids": torch.randint(0, 30522, (1, seq), generator=gen),
            "attention_mask": torch.ones(1, seq, dtype=torch.long)}
    models: dict[str, tuple[Callable[[], nn.Module], Inputs]] = {n: (torchvision_model(n), image) for n in TORCHVISION}
    models["bert_minilm"] = (bert_minilm, text)
    return models


def output_layers(model: nn.Module, inputs: Inputs) -> list[nn.Module]:
    """The Conv/Linear layers whose output is one of the model's outputs (what Torch-Pruning must ignore)."""
    produced: dict[int, nn.Module] = {}
    hooks = [m.register_forward_hook(lambda mod, _i, out: produced.__setitem__(id(out), mod))
             for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    try:
        with torch.no_grad():
            out = call(model, inputs)
    finally:
        for h in hooks:
            h.remove()
    return [produced[id(t)] for _, t in flatten_outputs(out) if id(t) in produced]


def prune_ours(model: nn.Module, inputs: Inputs, round_to: int) -> dict[str, Any]:
    start = time.perf_counter()
    report = discover(model, inputs, round_to=round_to)
    discover_s = time.perf_counter() - start
    plan = PruningPlan.uniform([g.name for g in report.groups], 0.5)
    start = time.perf_counter()
    result = apply_plan(model, inputs, plan, PrunerSettings(round_to=round_to, min_channels=8))
    reasons = Counter(o.reason for o in report.left_out)
    return {"groups": len(report.groups), "head_groups": sum(g.unit == "head" for g in report.groups),
            "left_out": len(report.left_out), "left_out_reasons": dict(reasons.most_common()),
            "heads": {k: list(v) for k, v in result.heads.items()},
            "discover_s": round(discover_s, 2), "prune_s": round(time.perf_counter() - start, 2)}


def prune_torch_pruning(model: nn.Module, inputs: Inputs, round_to: int) -> dict[str, Any]:
    """Torch-Pruning's standard recipe: MetaPruner, uniform ratio, default (group L2 magnitude) importance."""
    import torch_pruning as tp

    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, inputs, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=output_layers(model, inputs), round_to=round_to)
    pruner.step()
    return {"prune_s": round(time.perf_counter() - start, 2)}


def measure(dense: nn.Module, pruned: nn.Module, inputs: Inputs, repeat: int) -> dict[str, Any]:
    """Median over ``repeat`` interleaved comparisons (one process): resists bursts of load from other processes."""
    from autoprune.hardware.meter import LatencyMeter

    meter = LatencyMeter(PROFILE, dense, inputs, cache=None)
    pairs = sorted((meter.compare(pruned) for _ in range(repeat)), key=lambda p: p[1].median_ms / p[0].median_ms)
    candidate, reference = pairs[len(pairs) // 2]
    return {"dense_ms": round(reference.median_ms, 3), "pruned_ms": round(candidate.median_ms, 3),
            "speedup": reference.median_ms / candidate.median_ms,
            "cv": [round(reference.cv, 3), round(candidate.cv, 3)],
            "speedups_all": [round(d.median_ms / c.median_ms, 3) for c, d in pairs]}


def run(name: str, build: Callable[[], nn.Module], inputs: Inputs, pruner: str, round_to: int,
        repeat: int) -> dict[str, Any]:
    torch.manual_seed(0)
    dense = build().eval()
    model = copy.deepcopy(dense)
    row: dict[str, Any] = {"model": name, "pruner": pruner, "round_to": round_to}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            row.update(prune_ours(model, inputs, round_to) if pruner == "autoprune"
                       else prune_torch_pruning(model, inputs, round_to))
            with torch.no_grad():
                same = output_signature(call(model, inputs)) == output_signature(call(dense, inputs))
    except Exception as err:  # noqa: BLE001 - a benchmark reports failures and goes on
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
        return row
    if not same:
        row["error"] = "pruning changed the model's output shapes"
        return row
    dense_macs, pruned_macs = model_stats(dense, inputs).macs, model_stats(model, inputs).macs
    row.update(macs_dense=dense_macs, macs_pruned=pruned_macs, mac_reduction=dense_macs / pruned_macs)
    if repeat:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row.update(measure(dense, model, inputs, repeat))
            row["speedup_per_mac_reduction"] = row["speedup"] / row["mac_reduction"]
        except Exception as err:  # noqa: BLE001
            row["error"] = f"measurement: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'model':<20}{'pruner':<15}{'groups':>7}{'heads':>6}{'left':>6}{'MAC red.':>9}{'find s':>8}"
            f"{'prune s':>8}{'dense ms':>10}{'pruned ms':>10}{'speed-up':>9}{'su/MACred':>10}")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:<20}{r['pruner']:<15}  error: {r['error'][:100]}")
            continue
        mine = r["pruner"] == "autoprune"
        timing = (f"{r['dense_ms']:>10.2f}{r['pruned_ms']:>10.2f}{r['speedup']:>8.2f}x"
                  f"{r['speedup_per_mac_reduction']:>10.2f}"
                  if "speedup" in r else f"{'-':>10}{'-':>10}{'-':>9}{'-':>10}")
        lines.append(f"{r['model']:<20}{r['pruner']:<15}{r['groups'] if mine else '-':>7}"
                     f"{r['head_groups'] if mine else '-':>6}{r['left_out'] if mine else '-':>6}"
                     f"{r['mac_reduction']:>8.2f}x{r['discover_s'] if mine else 0:>8.2f}{r['prune_s']:>8.2f}{timing}")
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> str:
    lines = []
    for pruner in ("autoprune", "torch-pruning"):
        ratios = [r["speedup_per_mac_reduction"] for r in rows if r["pruner"] == pruner and "speedup" in r]
        failed = [r["model"] for r in rows if r["pruner"] == pruner and "error" in r]
        if ratios:
            lines.append(f"{pruner}: speed-up / MAC reduction median {statistics.median(ratios):.2f}, "
                         f"min {min(ratios):.2f} over {len(ratios)} models; failed: {', '.join(failed) or 'none'}")
    ours = {r["model"]: r for r in rows if r["pruner"] == "autoprune" and "speedup" in r}
    below = [f"{m} ({ours[m]['speedup_per_mac_reduction']:.2f} < {r['speedup_per_mac_reduction']:.2f})"
             for m, r in ((r["model"], r) for r in rows if r["pruner"] == "torch-pruning" and "speedup" in r)
             if m in ours and ours[m]["speedup_per_mac_reduction"] < r["speedup_per_mac_reduction"]]
    slow = [f"{r['model']} ({r['discover_s']} s)" for r in rows
            if r["pruner"] == "autoprune" and r.get("discover_s", 0) >= 10]
    lines.append("below Torch-Pruning's ratio: " + (", ".join(below) or "none"))
    lines.append("discovery >= 10 s: " + (", ".join(slow) or "none"))
    lines.append(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return "\n".join(lines)


def run_isolated(name: str, pruner: str, args: argparse.Namespace) -> dict[str, Any]:
    """One row computed in a child process, killed after ``--timeout`` seconds or above ``--memory-gb``."""
    command = [sys.executable, __file__, "--one", f"{name}:{pruner}", "--round-to", str(args.round_to),
               "--repeat", str(args.repeat), "--size", str(args.size), "--seq", str(args.seq),
               "--memory-gb", str(args.memory_gb)]
    row: dict[str, Any] = {"model": name, "pruner": pruner, "round_to": args.round_to}
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"did not finish in {args.timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return {**row, "error": f"process failed: {tail[:200]}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--round-to", type=int, default=16,
                        help="round_to for both pruners (default 16: ORT on AVX-512)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved comparisons per model (median kept); 0: none")
    parser.add_argument("--size", type=int, default=224, help="image size")
    parser.add_argument("--seq", type=int, default=128, help="BERT sequence length")
    parser.add_argument("--no-torch-pruning", action="store_true", help="skip Torch-Pruning's recipe")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per (model, pruner) before it is stopped")
    parser.add_argument("--memory-gb", type=float, default=10.0, help="address-space limit per (model, pruner)")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # MODEL:PRUNER, in the child process
    args = parser.parse_args()
    models = zoo(args.size, args.seq)
    if args.one:
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        torch.set_num_threads(1)
        name, pruner = args.one.split(":")
        build, inputs = models[name]
        print(json.dumps(run(name, build, inputs, pruner, args.round_to, args.repeat)), flush=True)
        return
    wanted = [m for m in args.models.split(",") if m] or list(models)
    unknown = sorted(set(wanted) - set(models))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(models)}")
    print(f"load average at the start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    rows = []
    pruners = ["autoprune"] + ([] if args.no_torch_pruning else ["torch-pruning"])
    for name in wanted:
        for pruner in pruners:
            rows.append(run_isolated(name, pruner, args))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(table(rows))
    print()
    print(summary(rows))


if __name__ == "__main__":
    main()
