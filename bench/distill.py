"""Knowledge distillation vs plain fine-tuning at the same budget, on the digits task.

The dense digits CNN is pruned with one fixed plan (the same ``--ratio`` in every group,
channels rounded to 8), then fine-tuned from the same pruned weights for the same number of
epochs with the same optimizer and schedule, once plainly and once distilled from the dense
model (``--weight``, ``--temperature``), for several seeds. Prints validation accuracy
(mean and spread over seeds) and fine-tune seconds, as JSON lines and a table.

Run: ``python bench/distill.py [--ratio 0.6] [--epochs 2] [--seeds 3]``.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoprune.plan import PrunerSettings, PruningPlan  # noqa: E402
from autoprune.pruning import apply_plan, discover_groups  # noqa: E402
from autoprune.task import resolve_task  # noqa: E402
from autoprune.training import evaluate, fine_tune  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.6, help="share of channels removed in every group")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--weight", type=float, default=0.7, help="distillation loss weight")
    parser.add_argument("--temperature", type=float, default=4.0)
    args = parser.parse_args()
    task = resolve_task("digits")
    dense = task.build_model()
    groups = discover_groups(dense, task.example_input)
    plan = PruningPlan.uniform([g.name for g in groups], args.ratio)
    pruned = apply_plan(copy.deepcopy(dense), task.example_input, plan, PrunerSettings(round_to=8,
                                                                                       min_channels=8)).model
    dense_acc = evaluate(dense, task.val_set, task.metric)
    no_tune = evaluate(pruned, task.val_set, task.metric)
    rows = []
    for name, weight in (("plain", 0.0), ("distilled", args.weight)):
        recipe = dataclasses.replace(task.recipe, epochs=args.epochs, distill_weight=weight,
                                     temperature=args.temperature)
        accs, secs = [], []
        for seed in range(args.seeds):
            model = copy.deepcopy(pruned)
            start = time.perf_counter()
            fine_tune(model, task.train_set, recipe, seed=seed, teacher=dense if weight > 0 else None)
            secs.append(time.perf_counter() - start)
            accs.append(evaluate(model, task.val_set, task.metric))
        rows.append({"recipe": name, "distill_weight": weight, "temperature": args.temperature, "epochs": args.epochs,
                     "ratio": args.ratio, "seeds": args.seeds, "accuracy_mean": round(statistics.fmean(accs), 4),
                     "accuracy_min": round(min(accs), 4), "accuracy_max": round(max(accs), 4),
                     "finetune_s_mean": round(statistics.fmean(secs), 2)})
    for row in rows:
        print(json.dumps({**row, "dense_accuracy": round(dense_acc, 4), "pruned_before_finetune": round(no_tune, 4)}))
    print(f"\ndigits, every group pruned {100 * args.ratio:.0f}% (dense {100 * dense_acc:.2f}%, "
          f"pruned before fine-tuning {100 * no_tune:.2f}%), {args.epochs} epochs, {args.seeds} seeds")
    print(f"{'recipe':10} {'accuracy % mean':>16} {'min':>7} {'max':>7} {'fine-tune s':>12}")
    for r in rows:
        print(f"{r['recipe']:10} {100 * r['accuracy_mean']:16.2f} {100 * r['accuracy_min']:7.2f} "
              f"{100 * r['accuracy_max']:7.2f} {r['finetune_s_mean']:12.2f}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared: seconds are noisy)")


if __name__ == "__main__":
    main()
