"""TrialRunner: the one place that chains plan -> prune -> screen -> fine-tune -> evaluate -> record.

Latency is measured right after pruning (the architecture is final then) and interleaved with
the dense model; a candidate that is not faster than ``min_speedup`` x dense, or misses the
latency budget, is rejected before any fine-tuning. When the meter has a latency predictor, a
candidate that would fail that screen even ``predictor_margin`` faster than predicted is rejected
without being measured; every other one is measured as usual. Any failure becomes a FAILED record.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from autoprune.config import SearchConfig
from autoprune.errors import AutopruneError
from autoprune.execution.record import COMPLETE, FAILED, REJECTED, TrialRecord
from autoprune.hardware.protocol import LatencyMeter
from autoprune.plan import PruningPlan
from autoprune.pruning import IMPORTANCES, PruneResult, apply_plan, model_stats
from autoprune.pruning.importance import calibration_batches
from autoprune.pruning.saving import PruneSettings, save_pruned
from autoprune.task import Task
from autoprune.search.fidelity import promotion_refusal
from autoprune.training import evaluate, fine_tune
from autoprune.training.finetune import recalibrate_batchnorm


@dataclass
class TrialRunner:
    """Evaluates plans against one dense model on one hardware profile."""

    task: Task
    config: SearchConfig
    dense: nn.Module
    meter: LatencyMeter | None = None  # None: prune only (no measuring)
    trials_dir: Path | None = None

    def prune(self, plan: PruningPlan) -> PruneResult:
        """A pruned copy of the dense model (with its masks, if the plan has masked groups)."""
        space = self.config.space
        needs_data = IMPORTANCES.get(space.importance, where="search space `importance`").needs_data
        return apply_plan(copy.deepcopy(self.dense), self.task.example_input, plan,
                          round_to=self.config.round_to, min_channels=space.min_channels,
                          importance=space.importance, ignore=space.ignore, nm=space.nm, mask_scope=space.mask_scope,
                          calibration=calibration_batches(self.task.train_set) if needs_data else None)

    def screen(self, speedup: float, latency_ms: float) -> str:
        """Why a candidate is rejected before fine-tuning ('' when it passes)."""
        if speedup < self.config.min_speedup:
            return f"not faster than dense: speed-up {speedup:.2f}x < {self.config.min_speedup:.2f}x"
        budget = self.config.max_latency_ms
        if budget is not None and latency_ms > budget:
            return f"over the latency budget: {latency_ms:.3f} ms > {budget:.3f} ms"
        return ""

    def prescreen(self, model: nn.Module) -> tuple[float | None, str]:
        """The predicted latency (None without a predictor) and why the candidate is rejected unmeasured.

        The reason is '' unless the candidate fails ``screen`` even at ``predicted x (1 - margin)``:
        only what clearly cannot pass is rejected on a prediction; anything that might is measured.
        """
        predicted = self.meter.predict(model)
        if predicted is None:
            return None, ""
        margin = self.config.predictor_margin
        best_case = predicted * (1.0 - margin)
        if best_case <= 0:  # a degenerate fit: no basis for rejecting anything
            return predicted, ""
        reason = self.screen(self.meter.dense_median_ms() / best_case, best_case)
        if not reason:
            return predicted, ""
        return predicted, (f"predicted {predicted:.3f} ms, at best {best_case:.3f} ms with the {margin:.0%} margin "
                           f"(not measured): {reason}")

    def run(self, number: int, plan: PruningPlan, *, proxy_history: Sequence[float] = ()) -> TrialRecord:
        """Evaluate ``plan`` as trial ``number``; never raises for a trial-level failure.

        Args:
            proxy_history: proxy scores of earlier candidates; with ``config.proxy_keep < 1``
                a candidate whose proxy is not in the top share of them is rejected unfine-tuned.
        """
        seconds: dict[str, float] = {}
        base = {"number": number, "plan": plan.to_dict(), "seconds": seconds}
        try:
            start = time.perf_counter()
            pruned = self.prune(plan)
            model, channels = pruned.model, {k: list(v) for k, v in pruned.channels.items()}
            stats = model_stats(model, self.task.example_input)
            seconds["prune"] = time.perf_counter() - start
            start = time.perf_counter()
            predicted, reason = self.prescreen(model)
            if predicted is not None:
                seconds["predict"] = time.perf_counter() - start
            pruned_only = {**base, "macs": stats.macs, "params": stats.params, "channels": channels,
                           "predicted_ms": predicted}
            if reason:
                return TrialRecord(state=REJECTED, reason=reason, **pruned_only)
            start = time.perf_counter()
            latency, dense_latency = self.meter.compare(model)
            seconds["measure"] = time.perf_counter() - start
            speedup = dense_latency.median_ms / latency.median_ms
            measured = {**pruned_only, "latency": latency.to_dict(), "dense_latency": dense_latency.to_dict(),
                        "speedup": speedup}
            reason = self.screen(speedup, latency.median_ms)
            if reason:
                return TrialRecord(state=REJECTED, reason=reason, **measured)
            start = time.perf_counter()
            recalibrate_batchnorm(model, self.task.train_set)
            measured["proxy"] = evaluate(model, self.task.val_set, self.task.metric)
            seconds["proxy"] = time.perf_counter() - start
            reason = promotion_refusal(measured["proxy"], proxy_history, self.config.proxy_keep, self.config.proxy_warmup)
            if reason:
                return TrialRecord(state=REJECTED, reason=reason, **measured)
            if self.task.recipe.epochs == 0:  # nothing to train: the proxy is the full-fidelity score
                return TrialRecord(state=COMPLETE, accuracy=measured["proxy"],
                                   model_path=self._save(number, plan, pruned), **measured)
            start = time.perf_counter()
            teacher = self.dense if self.task.recipe.distill_weight > 0 else None
            fine_tune(model, self.task.train_set, self.task.recipe, seed=self.config.seed + number, teacher=teacher,
                      after_step=pruned.reapply_masks if pruned.masks else None)
            accuracy = evaluate(model, self.task.val_set, self.task.metric)
            seconds["finetune"] = time.perf_counter() - start
            return TrialRecord(state=COMPLETE, accuracy=accuracy, model_path=self._save(number, plan, pruned),
                               **measured)
        except (AutopruneError, RuntimeError, ValueError) as err:
            return TrialRecord(state=FAILED, reason=f"{type(err).__name__}: {err}", **base)

    def _save(self, number: int, plan: PruningPlan, pruned: PruneResult) -> str | None:
        """Plan + state_dict (never a pickled module), written atomically; reload with ``load_pruned``."""
        if self.trials_dir is None:
            return None
        space = self.config.space
        settings = PruneSettings(round_to=self.config.round_to, min_channels=space.min_channels, ignore=space.ignore)
        path = save_pruned(self.trials_dir / f"{number:04d}", plan, pruned.model.state_dict(), settings=settings,
                           result=pruned)
        return str(path)
