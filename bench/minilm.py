"""MiniLM on ONNX Runtime CPU: width (heads + MLP) vs depth (dropped layers) pruning, speed-up and search agreement.

1. The dense all-MiniLM-L6-v2 latency at each ``--seq-lens`` (batch 1, the profile's threads: 1 on
   ``cpu-onnxruntime``).
2. Uniform plans at the task's sequence length (``AUTOPRUNE_MINILM_SEQ_LEN``, default 128): heads and
   MLP channels at ``--ratios`` in every layer, and ``--drops`` layers dropped (in ``--drop-order``).
   For each: latency measured interleaved with the dense model in this process and the speed-up;
   agreement@10 with the dense model and the mean cosine to its embeddings on the test split, before
   and after the task's fine-tune (distillation of the dense embeddings on the train split).

Prints JSON lines and a table. Run (about 15-25 minutes on an idle 2-core machine):
``python bench/minilm.py``; a check of the script at a tiny setting (not figures):
``python bench/minilm.py --quick``.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from autoprune.config import load_profile  # noqa: E402
from autoprune.hardware.protocol import measure_models  # noqa: E402
from autoprune.inputs import call, primary_output  # noqa: E402
from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan  # noqa: E402
from autoprune.pruning import apply_plan, discover  # noqa: E402
from autoprune.task import resolve_task  # noqa: E402
from autoprune.tasks import minilm  # noqa: E402
from autoprune.training import fine_tune  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def scores(model, dataset) -> dict[str, float]:
    """agreement@10 with the dense model and the mean cosine to its embeddings, over the whole split."""
    model.eval()
    outs, targets = [], []
    for inputs, target in DataLoader(dataset, batch_size=256):
        outs.append(primary_output(call(model, inputs)))
        targets.append(target)
    out, target = torch.cat(outs), torch.cat(targets)
    return {"agreement@10": round(minilm.search_agreement(out, target), 4),
            "cosine": round(minilm.mean_cosine(out, target), 4)}


def plans(report, ratios: list[float], drops: list[int], order: list[int]) -> list[tuple[str, PruningPlan]]:
    width = [g.name for g in report.groups]
    blocks = [b.name for b in report.blocks]
    out = [(f"heads+mlp {int(100 * r)}%", PruningPlan.uniform(width, r)) for r in ratios]
    for k in drops:
        names = [blocks[i] for i in order[:k]]
        out.append((f"drop {k} layer{'s' if k > 1 else ''} ({','.join(str(i) for i in order[:k])})",
                    PruningPlan.of({n: GroupPlan(ratio=0.0, structure="drop") for n in names})))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=str(ROOT / "hw_profiles/cpu-onnxruntime.yaml"))
    parser.add_argument("--seq-lens", default="128,32", help="sequence lengths of the dense latency rows")
    parser.add_argument("--ratios", default="0.25,0.5,0.75", help="uniform heads+MLP ratios")
    parser.add_argument("--drops", default="1,2,3", help="numbers of layers dropped")
    parser.add_argument("--drop-order", default="4,3,2,1,5", help="which layers go first when dropping k")
    parser.add_argument("--test-size", type=int, default=0, help="first N test sentences only (0: all)")
    parser.add_argument("--train-size", type=int, default=0, help="first N training sentences only (0: the task's)")
    parser.add_argument("--no-finetune", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="check the script runs: one plan of each kind, 64 test / 32 train sentences, a short "
                             "latency protocol (its figures mean nothing)")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    ratios = [float(r) for r in args.ratios.split(",") if r]
    drops = [int(k) for k in args.drops.split(",") if k]
    order = [int(i) for i in args.drop_order.split(",")]
    if args.quick:
        profile = dataclasses.replace(profile, warmup_s=0.05, min_runs=5, repeats=1, max_cv=10.0)
        ratios, drops, args.test_size, args.train_size = ratios[1:2], drops[:1], 64, 32
    settings = PrunerSettings(round_to=profile.round_to, min_channels=8)
    rows = []

    tokenizer, encoder = minilm.load_tokenizer(), minilm.load_encoder()
    _, val, _ = minilm.split(minilm.corpus())
    for length in [int(s) for s in args.seq_lens.split(",") if s]:
        x = minilm.example_input(tokenizer, val, length)
        [stats] = measure_models(profile, [encoder], x)
        rows.append({"row": "dense", "seq_len": length, "p50_ms": round(stats.median_ms, 3),
                     "p90_ms": round(stats.p90_ms, 3), "cv": round(stats.cv, 4), "profile": profile.name})
        print(json.dumps(rows[-1]), flush=True)

    task = resolve_task("minilm")
    x = task.example_input
    test = task.test_set if not args.test_size else Subset(task.test_set, range(args.test_size))
    train = task.train_set if not args.train_size else Subset(task.train_set, range(args.train_size))
    dense = task.build_model()
    report = discover(copy.deepcopy(dense), x, round_to=settings.round_to)
    for name, plan in plans(report, ratios, drops, order):
        model = apply_plan(copy.deepcopy(dense), x, plan, settings).model
        dense_stats, pruned_stats = measure_models(profile, [dense, model], x)
        before = scores(model, test)
        row = {"row": name, "seq_len": int(x["input_ids"].shape[1]), "dense_p50_ms": round(dense_stats.median_ms, 3),
               "p50_ms": round(pruned_stats.median_ms, 3), "cv": round(pruned_stats.cv, 4),
               "speedup": round(dense_stats.median_ms / pruned_stats.median_ms, 3),
               "params": sum(p.numel() for p in model.parameters()),
               "before_ft": before, "test_sentences": len(test)}
        if not args.no_finetune:
            start = time.perf_counter()
            fine_tune(model, train, task.recipe, seed=0, loss_fn=task.loss)
            row["finetune_s"] = round(time.perf_counter() - start, 1)
            row["train_sentences"] = len(train)
            row["after_ft"] = scores(model, test)
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(f"\n{'row':28} {'seq':>4} {'p50 ms':>8} {'speed-up':>9} {'agree@10 before':>16} {'after':>6} "
          f"{'cos before':>11} {'after':>6}")
    for r in rows:
        if r["row"] == "dense":
            print(f"{'dense':28} {r['seq_len']:>4} {r['p50_ms']:>8.3f} {'1.00x':>9}")
            continue
        after = r.get("after_ft", {})
        print(f"{r['row']:28} {r['seq_len']:>4} {r['p50_ms']:>8.3f} {r['speedup']:>8.2f}x "
              f"{r['before_ft']['agreement@10']:>16.3f} {after.get('agreement@10', float('nan')):>6.3f} "
              f"{r['before_ft']['cosine']:>11.3f} {after.get('cosine', float('nan')):>6.3f}")


if __name__ == "__main__":
    main()
