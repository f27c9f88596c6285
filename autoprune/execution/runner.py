"""TrialRunner: the one place that chains plan -> prune -> screen -> proxy -> fine-tune -> evaluate -> record.

A trial runs in two stages, each one executor job, so the driver decides in between, with the
fresh history of every proxy so far, whether the candidate earns the full fine-tune:

* ``screen``: prune; with a latency predictor, reject unmeasured what clearly cannot pass;
  measure interleaved with the dense model; reject what is not faster than ``min_speedup`` x
  dense or over the latency budget; score the proxy (accuracy after BatchNorm recalibration).
  Returns a REJECTED, FAILED or SCREENED record.
* ``finetune``: rebuild the same candidate from its plan (pruning is deterministic), recalibrate
  BatchNorm, fine-tune, evaluate. Returns the COMPLETE (or FAILED) record and the weights.

Any trial-level failure becomes a FAILED record; nothing here raises for one.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from autoprune.config import SearchConfig
from autoprune.errors import AutopruneError
from autoprune.execution.outcomes import Candidate, Probe
from autoprune.hardware.meter import Meter
from autoprune.plan import PrunerSettings, PruningPlan
from autoprune.pruning import PruneResult, model_stats
from autoprune.pruning.saving import rebuild
from autoprune.records import TrialRecord, TrialState
from autoprune.task import Task
from autoprune.training import evaluate, fine_tune, test_score
from autoprune.training.finetune import recalibrate_batchnorm

#: failures of a trial's own code (pruning, a runtime, fine-tuning) that become its FAILED record
TRIAL_ERRORS = (AutopruneError, RuntimeError, ValueError)


@dataclass
class TrialRunner:
    """Evaluates plans against one dense model on one hardware profile."""

    task: Task
    config: SearchConfig
    dense: nn.Module
    meter: Meter
    settings: PrunerSettings = field(init=False)

    def __post_init__(self) -> None:
        self.settings = self.config.pruner

    def prune(self, plan: PruningPlan) -> PruneResult:
        """A pruned copy of the dense model (with its masks, if the plan has masked groups)."""
        return rebuild(self.task, plan, self.settings, dense=self.dense)

    def screen_reason(self, speedup: float, latency_ms: float) -> str:
        """Why a candidate is rejected before fine-tuning ('' when it passes)."""
        if speedup < self.config.min_speedup:
            return f"not faster than dense: speed-up {speedup:.2f}x < {self.config.min_speedup:.2f}x"
        budget = self.config.max_latency_ms
        if budget is not None and latency_ms > budget:
            return f"over the latency budget: {latency_ms:.3f} ms > {budget:.3f} ms"
        return ""

    def prescreen(self, model: nn.Module) -> tuple[float | None, str]:
        """The predicted latency (None without a predictor) and why the candidate is rejected unmeasured.

        The reason is '' unless the candidate fails the screen even at ``predicted x (1 - margin)``:
        only what clearly cannot pass is rejected on a prediction; anything that might is measured.
        """
        predicted = self.meter.predict(model)
        if predicted is None:
            return None, ""
        margin = self.config.predictor_margin
        best_case = predicted * (1.0 - margin)
        if best_case <= 0:  # a degenerate fit: no basis for rejecting anything
            return predicted, ""
        reason = self.screen_reason(self.meter.dense_median_ms() / best_case, best_case)
        if not reason:
            return predicted, ""
        return predicted, (f"predicted {predicted:.3f} ms, at best {best_case:.3f} ms with the {margin:.0%} margin "
                           f"(not measured): {reason}")

    def probe(self, plan: PruningPlan, *, measure: bool) -> Probe:
        """Prune ``plan`` and count its parameters; with ``measure``, measure it against the dense model."""
        model = self.prune(plan).model
        latency = self.meter.compare(model)[0] if measure else None
        return Probe(params=model_stats(model, self.task.example_input).params, latency=latency)

    def screen(self, number: int, plan: PruningPlan) -> TrialRecord:
        """Stage one of trial ``number``: a REJECTED, FAILED or SCREENED (proxy-scored) record."""
        seconds: dict[str, float] = {}
        fields: dict[str, Any] = {"number": number, "plan": plan.to_dict(), "seconds": seconds}
        try:
            with _timed(seconds, "prune"):
                pruned = self.prune(plan)
                stats = model_stats(pruned.model, self.task.example_input)
            fields.update(macs=stats.macs, params=stats.params, channels={k: list(v) for k,
                                                                          v in pruned.channels.items()})
            start = time.perf_counter()
            fields["predicted_ms"], reason = self.prescreen(pruned.model)
            if fields["predicted_ms"] is not None:
                seconds["predict"] = time.perf_counter() - start
            if reason:
                return TrialRecord(state=TrialState.REJECTED, reason=reason, **fields)
            with _timed(seconds, "measure"):
                latency, dense_latency = self.meter.compare(pruned.model)
            fields.update(latency=latency, dense_latency=dense_latency,
                          speedup=dense_latency.median_ms / latency.median_ms)
            reason = self.screen_reason(fields["speedup"], latency.median_ms)
            if reason:
                return TrialRecord(state=TrialState.REJECTED, reason=reason, **fields)
            with _timed(seconds, "proxy"):
                recalibrate_batchnorm(pruned.model, self.task.train_set)
                fields["proxy"] = evaluate(pruned.model, self.task.val_set, self.task.metric)
            return TrialRecord(state=TrialState.SCREENED, **fields)
        except TRIAL_ERRORS as err:
            return TrialRecord(state=TrialState.FAILED, reason=f"{type(err).__name__}: {err}", **fields)

    def remeasure(self, record: TrialRecord) -> TrialRecord:
        """``record`` with its candidate measured again (interleaved with the dense model, as in the screen).

        The less noisy of the two measurements is kept (with its dense figure and speed-up);
        ``remeasures`` counts this one. The pruned architecture is rebuilt from the plan: latency does
        not depend on the fine-tuned weights.
        """
        seconds = dict(record.seconds)
        try:
            with _timed(seconds, "remeasure"):
                latency, dense_latency = self.meter.compare(self.prune(PruningPlan.from_dict(record.plan)).model)
        except TRIAL_ERRORS:
            return dataclasses.replace(record, remeasures=record.remeasures + 1)  # keep the figure it had
        if record.latency is not None and record.latency.cv <= latency.cv:
            return dataclasses.replace(record, remeasures=record.remeasures + 1, seconds=seconds)
        return dataclasses.replace(record, latency=latency, dense_latency=dense_latency,
                                   speedup=dense_latency.median_ms / latency.median_ms,
                                   remeasures=record.remeasures + 1, seconds=seconds)

    def finetune(self, screened: TrialRecord) -> Candidate:
        """Stage two: the screened candidate rebuilt, fine-tuned and evaluated (COMPLETE), or FAILED.

        With a zero-epoch recipe nothing is trained and the proxy is the full-fidelity score.
        """
        seconds = dict(screened.seconds)
        try:
            start = time.perf_counter()
            pruned = self.prune(PruningPlan.from_dict(screened.plan))
            recalibrate_batchnorm(pruned.model, self.task.train_set)
            accuracy = screened.proxy
            if self.task.recipe.epochs > 0:
                teacher = self.dense if self.task.recipe.distill_weight > 0 else None
                fine_tune(pruned.model, self.task.train_set, self.task.recipe, seed=self.config.seed + screened.number,
                          teacher=teacher, after_step=pruned.reapply_masks if pruned.masks else None,
                          loss_fn=self.task.loss)
                accuracy = evaluate(pruned.model, self.task.val_set, self.task.metric)
                seconds["finetune"] = time.perf_counter() - start
            test_accuracy = test_score(self.task, pruned.model)
        except TRIAL_ERRORS as err:
            failed = dataclasses.replace(screened, state=TrialState.FAILED, reason=f"{type(err).__name__}: {err}")
            return Candidate(record=failed)
        record = dataclasses.replace(screened, state=TrialState.COMPLETE, accuracy=accuracy, seconds=seconds,
                                     test_accuracy=test_accuracy)
        weights = {k: v.detach().clone() for k, v in pruned.model.state_dict().items()}
        return Candidate(record=record, weights=weights, sparsity=pruned.sparsity)


@contextmanager
def _timed(seconds: dict[str, float], key: str) -> Iterator[None]:
    """``with _timed(seconds, "prune"):`` stores the block's wall time under that key when it succeeds."""
    start = time.perf_counter()
    yield
    seconds[key] = time.perf_counter() - start
