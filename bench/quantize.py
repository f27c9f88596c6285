"""Int8 benchmark: dense int8 vs dense fp32 on ONNX Runtime CPU, and (optional) joint vs pruning-only search.

Section ``dense`` (default): each model is exported to ONNX (fp32), quantized with
``autoprune.hardware.quantize`` (ONNX Runtime static QDQ, per-channel int8 weights, calibration
batches from a training split), and the two files are measured interleaved in one process on the
profile (default ``hw_profiles/cpu-onnxruntime.yaml``: 1 thread, batch 1). Figures: speed-up
(fp32 p50 / int8 p50) and the accuracy change:

* ``digits``: the embedded task's trained model; validation accuracy of the int8 file in ONNX
  Runtime minus the fp32 model's in PyTorch (points).
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


def _model(name: str, size: int, eval_samples: int):
    """(model, example input, calibration split, evaluation split, has trained weights)."""
    from autoprune.tasks.digits import load_digits_tensors

    if name == "digits":
        from autoprune.tasks.digits import digits_task

        task = digits_task()
        return task.build_model(), task.example_input, task.train_set, task.val_set, True
    from autoprune.compat import import_torchvision

    tv = import_torchvision()
    if tv is None:
        raise SystemExit("torchvision is not installed (pip install 'autoprune[models]')")
    torch.manual_seed(0)
    model = getattr(tv.models, name)(weights=None).eval()
    train, val, _ = load_digits_tensors()
    calibration = _rgb(train, size, 512)
    evaluation = _rgb(val, size, eval_samples)
    return model, evaluation.tensors[0][:1], calibration, evaluation, False


def bench_dense(args: argparse.Namespace) -> None:
    profile = load_profile(args.profile)
    profile = dataclasses.replace(profile, min_runs=args.min_runs or profile.min_runs,
                                  warmup_s=profile.warmup_s if args.warmup is None else args.warmup)
    backend = get_backend(profile)
    for name in args.models.split(","):
        model, example, calibration, evaluation, trained = _model(name, args.size, args.eval_samples)
        quantized = quantize_int8(model, example, calibration_batches(calibration, args.samples),
                                  method=args.calibration)
        fp32 = export_onnx_bytes(model, example, dynamic_batch=True)
        with torch.no_grad():
            reference = torch.cat([model(x) for (x, _) in torch.utils.data.DataLoader(evaluation, batch_size=64)])
        int8_out, targets = onnx_outputs(quantized.onnx, evaluation)
        agreement = float((int8_out.argmax(1) == reference.argmax(1)).float().mean())
        figures = {"model": name, "input": list(example.shape), "calibration": args.calibration,
                   "calibration_samples": quantized.samples, "fp32_bytes": len(fp32), "int8_bytes": len(quantized.onnx),
                   "top1_agreement": agreement}
        if trained:
            fp32_acc = float((reference.argmax(1) == targets).float().mean())
            int8_acc = float((int8_out.argmax(1) == targets).float().mean())
            figures.update(fp32_accuracy=fp32_acc, int8_accuracy=int8_acc,
                           accuracy_change_pt=100 * (int8_acc - fp32_acc))
        measured = time_prepared([prepare_onnx_measured(backend, fp32, example),
                                  prepare_onnx_measured(backend, quantized.onnx, example)], backend)
        emit("dense", **figures, profile=profile.name, threads=profile.threads, batch=profile.batch_size,
             fp32_p50_ms=measured[0].median_ms, int8_p50_ms=measured[1].median_ms,
             fp32_cv=measured[0].cv, int8_cv=measured[1].cv, speedup=measured[0].median_ms / measured[1].median_ms)


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
            near = [r for r in outcome.records if r.state == TrialState.COMPLETE and r.accuracy is not None
                    and r.accuracy >= dense.accuracy - 0.01]
            best = min(near, key=lambda r: r.latency_ms, default=None)
            emit("search", search=label, seed=seed, task=args.task, agent=args.agent, trials=args.trials,
                 hypervolume=pareto["hypervolume"]["value"], precisions=pareto.get("precisions"),
                 dense_p50_ms=dense.latency.median_ms, dense_accuracy=dense.accuracy,
                 fastest_within_1pt=None if best is None else {
                     "trial": best.number, "precision": best.precision, "speedup": best.speedup,
                     "p50_ms": best.latency_ms, "accuracy": best.accuracy})


def table() -> None:
    print()
    for row in ROWS:
        if row["section"] == "dense":
            change = (f"{row['accuracy_change_pt']:+.2f} pt accuracy" if "accuracy_change_pt" in row
                      else f"{100 * row['top1_agreement']:.1f}% top-1 agreement")
            print(f"{row['model']:>10} {row['input']}: fp32 {row['fp32_p50_ms']:.3f} ms, int8 {row['int8_p50_ms']:.3f} "
                  f"ms, {row['speedup']:.2f}x; {change}; {row['fp32_bytes']:,} -> {row['int8_bytes']:,} bytes")
        else:
            best = row["fastest_within_1pt"]
            fastest = "none" if best is None else f"#{best['trial']} {best['precision']} {best['speedup']:.2f}x"
            print(f"search {row['search']:>12} seed {row['seed']}: hypervolume {row['hypervolume']:.4f}; "
                  f"fastest within 1 pt: {fastest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("dense", "search"), default="dense")
    parser.add_argument("--search", action="store_true", help="also run the joint vs pruning-only searches")
    parser.add_argument("--models", default="digits,resnet50", help="digits and/or torchvision builder names")
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
