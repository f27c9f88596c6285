"""Int8 benchmark: dense int8 vs dense fp32 on ONNX Runtime CPU, and (optional) joint vs pruning-only search.

Section ``dense`` (default): each model is exported to ONNX (fp32), quantized with
``autoprune.hardware.quantize`` (ONNX Runtime static QDQ, per-channel int8 weights, calibration
batches from a training split), and the two files are measured interleaved in one process on the
profile (default ``hw_profiles/cpu-onnxruntime.yaml``: 1 thread, batch 1). Figures: speed-up
(fp32 p50 / int8 p50) and the accuracy change:

* ``digits``, ``minilm`` (any embedded task): the task's trained or pretrained model; the task's own
  metric of the int8 file minus the fp32 file's, both run by ONNX Runtime over the task's test split
  (validation where it has none), in points: accuracy for digits, agreement@10 with the dense model for
  MiniLM (fp32 scores 1.0 there by definition; its mean cosine to dense is reported beside it).
* ``resnet50``: torchvision's ResNet-50, random init (no weights are downloaded), at ``--size``
  (224). Without trained weights accuracy means nothing, so the change is the int8 file's top-1
  agreement with the fp32 model. Inputs are real images: the digits split upsampled to
  ``--size`` x ``--size`` with 3 channels (calibration from its training part, agreement on its validation part).

Section ``search`` (``--search``): the same task searched twice per seed with the same agent,
trials and fine-tune recipe: space precisions [fp32] (pruning only) vs [fp32, int8] (joint).
Figures: hypervolume (``pareto.json``) and the fastest complete candidate within 1 point of
dense validation accuracy (its speed-up over dense).

Prints one JSON line per figure, then a human table. Figures measured on a busy machine are
contention; run it alone. Full run (the lead's figures):

    .venv/bin/python bench/quantize.py
    .venv/bin/python bench/quantize.py --only search --seeds 3 --trials 24

Tiny check (seconds): ``.venv/bin/python bench/quantize.py --models resnet18 --size 32 --min-runs 5 --warmup 0.01``
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoprune.config import SearchConfig, load_profile, load_space  # noqa: E402
from autoprune.hardware.base import get_backend  # noqa: E402
from autoprune.hardware.onnxruntime_backend import OnnxRuntimeOptions, export_onnx_bytes  # noqa: E402
from autoprune.hardware.protocol import prepare_onnx_measured, time_prepared  # noqa: E402
from autoprune.hardware.quantize import calibration_batches, onnx_outputs, quantize_int8  # noqa: E402
from autoprune.records import TrialState  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROWS: list[dict] = []


def emit(section: str, **figures) -> None:
    row = {"section": section, **figures}
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def _rgb(dataset: TensorDataset, size: int, limit: int) -> TensorDataset:
    """Digits images (1 channel) resized to ``size`` and repeated to 3 channels: real images for an ImageNet CNN."""
    x, y = dataset.tensors[0][:limit], dataset.tensors[1][:limit]
    resized = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return TensorDataset(resized.repeat(1, 3, 1, 1), y)


def _task_model(name: str):
    """(model, example input, calibration split, evaluation split, task) of an embedded task."""
    from autoprune.task import resolve_task

    task = resolve_task(name)
    evaluation = task.test_set if task.test_set is not None else task.val_set
    return task.build_model().eval(), task.example_input, task.train_set, evaluation, task


def _torchvision_model(name: str, size: int, eval_samples: int):
    """(model, example input, calibration split, evaluation split, None): random init, so no metric applies."""
    from autoprune.compat import import_torchvision
    from autoprune.tasks.digits import load_digits_tensors

    tv = import_torchvision()
    if tv is None:
        raise SystemExit("torchvision is not installed (pip install 'autoprune[models]')")
    torch.manual_seed(0)
    model = getattr(tv.models, name)(weights=None).eval()
    train, val, _ = load_digits_tensors()
    calibration = _rgb(train, size, 512)
    evaluation = _rgb(val, size, eval_samples)
    return model, evaluation.tensors[0][:1], calibration, evaluation, None


def _quality(task, fp32: bytes, int8: bytes, evaluation) -> dict:
    """The int8 file's quality against the fp32 file's, both run by ONNX Runtime on the same split."""
    fp32_out, targets = onnx_outputs(fp32, evaluation)
    int8_out, _ = onnx_outputs(int8, evaluation)
    if task is None:
        return {"top1_agreement": float((int8_out.argmax(1) == fp32_out.argmax(1)).float().mean())}
    figures = {"metric": task.metric_name, "fp32_score": float(task.metric(fp32_out, targets)),
               "int8_score": float(task.metric(int8_out, targets))}
    figures["change_pt"] = 100 * (figures["int8_score"] - figures["fp32_score"])
    for extra, fn in task.extra_metrics.items():
        figures[f"int8 {extra}"] = float(fn(int8_out, targets))
    return figures


def bench_dense(args: argparse.Namespace) -> None:
    from autoprune.registry import TASKS

    profile = load_profile(args.profile)
    profile = dataclasses.replace(profile, min_runs=args.min_runs or profile.min_runs,
                                  warmup_s=profile.warmup_s if args.warmup is None else args.warmup)
    backend = get_backend(profile)
    for name in args.models.split(","):
        model, example, calibration, evaluation, task = (
            _task_model(name) if name in TASKS else _torchvision_model(name, args.size, args.eval_samples))
        quantized = quantize_int8(model, example, calibration_batches(calibration, args.samples),
                                  method=args.calibration)
        fp32 = export_onnx_bytes(model, example, dynamic_batch=True)
        figures = {"model": name, "input": _shape(example), "calibration": args.calibration,
                   "calibration_samples": quantized.samples, "fp32_bytes": len(fp32), "int8_bytes": len(quantized.onnx),
                   "evaluation_samples": len(evaluation), **_quality(task, fp32, quantized.onnx, evaluation)}
        measured = time_prepared([prepare_onnx_measured(backend, fp32, example),
                                  prepare_onnx_measured(backend, quantized.onnx, example)], backend)
        emit("dense", **figures, profile=profile.name, threads=profile.threads, batch=profile.batch_size,
             fp32_p50_ms=measured[0].median_ms, int8_p50_ms=measured[1].median_ms,
             fp32_cv=measured[0].cv, int8_cv=measured[1].cv, speedup=measured[0].median_ms / measured[1].median_ms)


def _shape(example) -> object:
    """The example input's shape, or each named input's shape."""
    if isinstance(example, dict):
        return {key: list(value.shape) for key, value in example.items()}
    return list(example.shape)


def bench_search(args: argparse.Namespace) -> None:
    from autoprune.results.search import run_search

    profile = load_profile(args.profile)
    if args.calibration != OnnxRuntimeOptions().calibration:
        profile = dataclasses.replace(profile, options=OnnxRuntimeOptions(calibration=args.calibration))
    space = load_space(args.space)
    for seed in range(args.seeds):
        for label, precisions in (("pruning-only", ("fp32",)), ("joint", ("fp32", "int8"))):
            config = SearchConfig(task=args.task, profile=profile, agent=args.agent, trials=args.trials, seed=seed,
                                  space=dataclasses.replace(space, precisions=precisions))
            with tempfile.TemporaryDirectory(prefix="autoprune-bench-quantize-") as tmp:
                outcome = run_search(config, Path(tmp) / "run")
                pareto = json.loads((Path(tmp) / "run/pareto.json").read_text())
            dense = outcome.dense
            complete = [r for r in outcome.records if r.state == TrialState.COMPLETE and r.accuracy is not None]
            near = [r for r in complete if r.accuracy >= dense.accuracy - 0.01]
            int8 = [r for r in complete if r.precision == "int8"]
            emit("search", search=label, seed=seed, task=args.task, agent=args.agent, trials=args.trials,
                 hypervolume=pareto["hypervolume"]["value"], precisions=pareto.get("precisions"),
                 dense_p50_ms=dense.latency.median_ms, dense_accuracy=dense.accuracy,
                 fastest_within_1pt=_summary(min(near, key=lambda r: r.latency_ms, default=None)),
                 fastest_int8_within_1pt=_summary(min((r for r in near if r.precision == "int8"),
                                                      key=lambda r: r.latency_ms, default=None)),
                 int8_complete=len(int8), int8_within_1pt=sum(r in near for r in int8),
                 int8_vs_own_fp32_median=_median([r.quantization.get("speedup_vs_fp32") for r in int8]),
                 int8_accuracy_change_pt_median=_median([
                     100 * (r.accuracy - r.quantization["fp32_accuracy"]) for r in int8
                     if r.quantization.get("fp32_accuracy") is not None]))


def _summary(record) -> dict | None:
    if record is None:
        return None
    return {"trial": record.number, "precision": record.precision, "speedup": record.speedup,
            "p50_ms": record.latency_ms, "accuracy": record.accuracy}


def _median(values: list) -> float | None:
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def table() -> None:
    print()
    for row in ROWS:
        if row["section"] == "dense":
            change = (f"{row['change_pt']:+.2f} pt {row['metric']} ({row['fp32_score']:.3f} -> {row['int8_score']:.3f})"
                      if "change_pt" in row else f"{100 * row['top1_agreement']:.1f}% top-1 agreement")
            print(f"{row['model']:>10} {row['input']}: fp32 {row['fp32_p50_ms']:.3f} ms, int8 {row['int8_p50_ms']:.3f} "
                  f"ms, {row['speedup']:.2f}x; {change}; {row['fp32_bytes']:,} -> {row['int8_bytes']:,} bytes")
        else:
            fastest = {key: "none" if row[key] is None else
                       f"#{row[key]['trial']} {row[key]['precision']} {row[key]['speedup']:.2f}x"
                       for key in ("fastest_within_1pt", "fastest_int8_within_1pt")}
            int8 = ""
            if row["int8_complete"]:
                vs_fp32, change = row["int8_vs_own_fp32_median"], row["int8_accuracy_change_pt_median"]
                int8 = (f"; int8 {row['int8_within_1pt']}/{row['int8_complete']} within 1 pt, fastest "
                        f"{fastest['fastest_int8_within_1pt']}, median vs its own fp32: "
                        f"{'?' if vs_fp32 is None else f'{vs_fp32:.2f}x'}, "
                        f"{'?' if change is None else f'{change:+.2f} pt'}")
            print(f"search {row['search']:>12} seed {row['seed']}: hypervolume {row['hypervolume']:.4f}; "
                  f"fastest within 1 pt: {fastest['fastest_within_1pt']}{int8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("dense", "search"), default="dense")
    parser.add_argument("--search", action="store_true", help="also run the joint vs pruning-only searches")
    parser.add_argument("--models", default="digits,resnet50,minilm",
                        help="embedded tasks (digits, minilm) and/or torchvision builder names")
    parser.add_argument("--size", type=int, default=224, help="input side of the torchvision models")
    parser.add_argument("--profile", default=str(ROOT / "hw_profiles/cpu-onnxruntime.yaml"))
    parser.add_argument("--calibration", default="minmax", choices=("minmax", "entropy", "percentile"))
    parser.add_argument("--samples", type=int, default=256, help="calibration samples")
    parser.add_argument("--eval-samples", type=int, default=180, help="agreement inputs of the torchvision models")
    parser.add_argument("--min-runs", type=int, default=0, help="override the profile's min_runs (0: keep)")
    parser.add_argument("--warmup", type=float, default=None, help="override the profile's warmup_s")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--space", default=str(ROOT / "search_spaces/default.yaml"))
    parser.add_argument("--agent", default="nsga2")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if args.only == "dense":
        bench_dense(args)
    if args.only == "search" or args.search:
        bench_search(args)
    table()


if __name__ == "__main__":
    main()
