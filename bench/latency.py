"""Latency benchmark: protocol noise, pruned speed-up vs MAC reduction, predictor error,
measurement cost, and TVM tuned vs untuned vs ONNX Runtime.

Prints one JSON line per figure, then a human table. Sections can be chosen with ``--only``.
Example: ``python bench/latency.py`` (all sections; ~20-40 min on a loaded 2-core machine).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoprune.config import HardwareProfile, load_profile  # noqa: E402
from autoprune.hardware.meter import LatencyMeter  # noqa: E402
from autoprune.hardware.protocol import measure_models  # noqa: E402
from autoprune.hardware.tvm_backend import TvmOptions, tune_further  # noqa: E402
from autoprune.plan import PrunerSettings, PruningPlan  # noqa: E402
from autoprune.pruning import apply_plan, discover_groups, model_stats  # noqa: E402
from autoprune.search.calibration import calibrate  # noqa: E402
from autoprune.tasks.digits import BasicBlock, DigitsResNet  # noqa: E402
from autoprune.testing.models import model_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROWS: list[dict] = []


class ResNet18(nn.Module):
    """ResNet-18's layer shapes (torchvision's layout) in plain torch: 1.8 GMACs at 224x224."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for i, width in enumerate((64, 128, 256, 512)):
            blocks += [BasicBlock(cin, width, 1 if i == 0 else 2), BasicBlock(width, width, 1)]
            cin = width
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def emit(section: str, **figures) -> None:
    row = {"section": section, **figures}
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def pruned(model: nn.Module, x: torch.Tensor, ratio: float, round_to: int) -> nn.Module:
    names = [g.name for g in discover_groups(model, x)]
    return apply_plan(copy.deepcopy(model), x, PruningPlan.uniform(names, ratio),
                      PrunerSettings(round_to=round_to, min_channels=8)).model


def resnet18() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return ResNet18().eval(), torch.randn(1, 3, 224, 224)


def noise(ort: HardwareProfile) -> None:
    model, x = resnet18()
    first = measure_models(ort, [model], x)[0]
    second = measure_models(ort, [model], x)[0]
    emit("noise", model="resnet18@224 b1", profile=ort.name, cv_first=round(first.cv, 4),
         cv_second=round(second.cv, 4), median_first_ms=round(first.median_ms, 3),
         median_second_ms=round(second.median_ms, 3),
         back_to_back_diff=round(abs(first.median_ms - second.median_ms) / first.median_ms, 4),
         session_memory_mb=round(first.info["session_memory_bytes"] / 2**20, 1),
         model_mb=round(first.info["model_bytes"] / 2**20, 1))


def cost(ort: HardwareProfile) -> None:
    model, x = resnet18()
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        measure_models(ort, [model], x)
        seconds.append(time.perf_counter() - start)
    emit("cost", model="resnet18@224 b1", profile=ort.name, seconds_median=round(statistics.median(seconds), 2),
         seconds=[round(s, 2) for s in seconds])


def speedup(profiles: list[HardwareProfile], tvm_size: int) -> None:
    for profile in profiles:
        if profile.backend == "tvm":  # unscheduled TVM runs ResNet-18@224 in seconds: a smaller model
            model, x = DigitsResNet(widths=(32, 64, 128)).eval(), torch.randn(1, 1, tvm_size, tvm_size)
            name = f"digits-resnet(32,64,128)@{tvm_size}"
        else:
            (model, x), name = resnet18(), "resnet18@224"
        small = pruned(model, x, 0.5, profile.round_to)
        mac_ratio = model_stats(model, x).macs / model_stats(small, x).macs
        cand, dense = LatencyMeter(profile, model, x, cache=None).compare(small)
        ratio = dense.median_ms / cand.median_ms
        emit("speedup", model=name, profile=profile.name, tuned=cand.info.get("tuned"),
             dense_ms=round(dense.median_ms, 3), pruned_ms=round(cand.median_ms, 3), speedup=round(ratio, 3),
             mac_reduction=round(mac_ratio, 3), speedup_over_mac=round(ratio / mac_ratio, 3))


def predictor(profiles: list[HardwareProfile], fit: int, holdout: int, size: int) -> None:
    for profile in profiles:
        model, x = DigitsResNet(widths=(32, 64, 128)).eval(), torch.randn(1, 1, size, size)
        task = model_task(lambda model=model: copy.deepcopy(model), x)
        result = calibrate(task, profile, PrunerSettings(round_to=profile.round_to, min_channels=8), fit=fit,
                           holdout=holdout, seed=0)
        emit("predictor", model=f"digits-resnet(32,64,128)@{size}", profile=profile.name,
             tuned=profile.options.tuning_trials > 0 if profile.backend == "tvm" else None,
             fit_measurements=result.fit_plans, holdout_plans=result.holdout_plans, layer_shapes=result.layers,
             mdape=round(result.holdout_mdape, 4), seconds=round(result.seconds, 1))


def tvm_tuning(ort: HardwareProfile, trials: int, size: int, db: Path, more_trials: int = 0) -> None:
    model, x = DigitsResNet(widths=(32, 64, 128)).eval(), torch.randn(1, 1, size, size)
    name = f"digits-resnet(32,64,128)@{size}"
    base = HardwareProfile(name="bench-tvm", backend="tvm", threads=ort.threads, warmup_s=ort.warmup_s,
                           min_runs=ort.min_runs, repeats=ort.repeats, max_cv=ort.max_cv,
                           options=TvmOptions(target={"kind": "llvm"}, tuning_db=str(db)))
    untuned = measure_models(base, [model], x)[0]
    tuned_profile = replace(base, options=replace(base.options, tuning_trials=trials))
    tuned = measure_models(tuned_profile, [model], x)[0]
    reference = measure_models(ort, [model], x)[0]
    emit("tvm_tuning", model=name, candidate="dense", trials_per_task=trials, untuned_ms=round(untuned.median_ms, 3),
         tuned_ms=round(tuned.median_ms, 3), ort_ms=round(reference.median_ms, 3),
         tuned_over_ort=round(tuned.median_ms / reference.median_ms, 2), tasks=tuned.info["tasks"],
         tasks_tuned=tuned.info["tasks_tuned"], tuning_s=round(tuned.info["tuning_s"], 1))
    per_task = tuned.info["tuning_s"] / max(1, tuned.info["tasks_tuned"])
    names = [g.name for g in discover_groups(model, x)]
    half = {n: 0.5 for n in names[len(names) // 2:]}  # prune the later half of the groups only
    from autoprune.plan import GroupPlan

    plan = PruningPlan.of({n: GroupPlan(ratio=r) for n, r in half.items()})
    candidate = apply_plan(copy.deepcopy(model), x, plan, PrunerSettings(round_to=8, min_channels=8)).model
    cand = measure_models(tuned_profile, [candidate], x)[0]
    reference = measure_models(ort, [candidate], x)[0]
    emit("tvm_tuning", model=name, candidate="later half of groups pruned 50%", trials_per_task=trials,
         tuned_ms=round(cand.median_ms, 3), ort_ms=round(reference.median_ms, 3),
         tuned_over_ort=round(cand.median_ms / reference.median_ms, 2), tasks=cand.info["tasks"],
         tasks_tuned=cand.info["tasks_tuned"], tasks_reused=cand.info["tasks_reused"],
         tuning_s=round(cand.info["tuning_s"], 1),
         db_saved_s_estimate=round(cand.info["tasks_reused"] * per_task, 1))
    if more_trials:
        facts = tune_further(candidate, x, tuned_profile, more_trials)
        further = measure_models(tuned_profile, [candidate], x)[0]
        reference = measure_models(ort, [candidate], x)[0]
        emit("tvm_tuning", model=name, candidate="same candidate, every task tuned further",
             trials_per_task=trials + more_trials, tuned_ms=round(further.median_ms, 3),
             ort_ms=round(reference.median_ms, 3), tuned_over_ort=round(further.median_ms / reference.median_ms, 2),
             tasks_tuned=facts["tasks_tuned"], tuning_s=round(facts["tuning_s"], 1))


def table() -> None:
    print("\n| section | profile | figures |\n|---|---|---|")
    for row in ROWS:
        rest = {k: v for k, v in row.items() if k not in ("section", "profile")}
        print(f"| {row['section']} | {row.get('profile', '')} | {', '.join(f'{k}={v}' for k, v in rest.items())} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="noise,cost,speedup,predictor,tvm_tuning",
                        help="comma-separated sections")
    parser.add_argument("--fit", type=int, default=4, help="whole-model measurements for the predictor fit")
    parser.add_argument("--holdout", type=int, default=12, help="held-out plans for the predictor error")
    parser.add_argument("--size", type=int, default=32, help="input size of the smaller model (TVM, predictor)")
    parser.add_argument("--trials", type=int, default=128,
                        help="MetaSchedule trials per task (128: within 1.5x of ORT here)")
    parser.add_argument("--tuning-db", default="results/.cache/bench-tvm-db", help="tuning database folder")
    parser.add_argument("--more-trials", type=int, default=0,
                        help="then tune every task of the pruned candidate this many trials further and re-measure")
    parser.add_argument("--predictor-tvm-trials", type=int, default=0,
                        help="also fit the predictor on tuned TVM with this many trials per task (every layer shape "
                             "and every held-out plan's fused tasks are tuned: hours on a 2-core machine)")
    args = parser.parse_args()
    ort = load_profile(ROOT / "hw_profiles/cpu-onnxruntime.yaml")
    torch_cpu = load_profile(ROOT / "hw_profiles/cpu-torch.yaml")
    tvm_local = load_profile(ROOT / "hw_profiles/tvm-llvm-local.yaml")
    tvm_untuned = replace(tvm_local, options=replace(tvm_local.options, tuning_trials=0))
    sections = args.only.split(",")
    if "noise" in sections:
        noise(ort)
    if "cost" in sections:
        cost(ort)
    if "speedup" in sections:
        speedup([ort, torch_cpu, tvm_untuned], args.size)
    if "predictor" in sections:
        tvm_tuned = replace(tvm_untuned, options=replace(tvm_untuned.options, tuning_trials=args.predictor_tvm_trials,
                                                         tuning_db=str(Path(args.tuning_db) / "predictor")))
        predictor([ort, tvm_untuned, *([tvm_tuned] if args.predictor_tvm_trials else [])], args.fit, args.holdout,
                  args.size)
    if "tvm_tuning" in sections:
        tvm_tuning(ort, args.trials, args.size, Path(args.tuning_db), args.more_trials)
    table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
