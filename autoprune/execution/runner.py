"""TrialRunner: the one place that chains plan -> prune -> screen -> proxy -> fine-tune -> quantize -> evaluate.

A trial runs in two stages, each one executor job, so the driver decides in between, with the
fresh history of every proxy so far, whether the candidate earns the full fine-tune:

* ``screen``: prune; with a latency predictor, reject unmeasured what clearly cannot pass;
  measure interleaved with the dense model; reject what is not faster than ``min_speedup`` x
  dense or over the latency budget; score the proxy (accuracy after BatchNorm recalibration).
  Returns a REJECTED, FAILED or SCREENED record.
* ``finetune``: rebuild the same candidate from its plan (pruning is deterministic), recalibrate
  BatchNorm, fine-tune, evaluate. Returns the COMPLETE (or FAILED) record and the weights.

A plan whose precision is not fp32 (int8 on an ONNX Runtime CPU profile, fp16 on a CUDA one) ships
as a quantized ONNX file (``to_precision``: ``hardware/quantize.py``, ``hardware/half.py``), its
``keep_fp32`` layers left in fp32, and every figure of its record is that file's:

* the screen quantizes the BN-recalibrated candidate and measures the *quantized* file
  interleaved with the dense fp32 model (a 1-3 s quantization on small models, paid so that a
  plan whose speed-up comes from int8 kernels is not rejected on its fp32 latency; the latency
  predictor, fitted on fp32 models, does not prescreen such plans); its proxy is the quantized
  file's score in ONNX Runtime;
* after fine-tuning the candidate is quantized again, scored in ONNX Runtime over the
  validation (and test) split, and measured interleaved with the dense model and with its own
  fp32 self (``fp32_latency``); a quantized file no faster than its fp32 self says so in
  ``quantization["note"]``. A model ONNX Runtime cannot quantize is a FAILED trial naming the step.

Every complete record states the size on disk of the file it ships, plain and gzip'd (``size_bytes``,
``compressed_bytes``): the weights as ``torch.save`` writes them, or the quantized file.

Any trial-level failure becomes a FAILED record; nothing here raises for one.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.utils.data import Subset

from autoprune.config import HardwareProfile, SearchConfig
from autoprune.errors import AutopruneError, ConfigError
from autoprune.execution.outcomes import Candidate, Probe
from autoprune.files import disk_size, weights_bytes
from autoprune.hardware.meter import Meter
from autoprune.inputs import Inputs
from autoprune.plan import DEFAULT_PRECISION, PrunerSettings, PruningPlan
from autoprune.pruning import PruneResult, model_stats
from autoprune.pruning.saving import rebuild
from autoprune.records import TrialRecord, TrialState
from autoprune.task import Task
from autoprune.training import evaluate, fine_tune, test_score
from autoprune.training.finetune import recalibrate_batchnorm

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from autoprune.hardware.quantize import QuantizedModel

#: fine-tune steps ``trial_cost`` times (scaled to the recipe's length)
COST_PROBE_STEPS = 8
#: failures of a trial's own code (pruning, a runtime, fine-tuning) that become its FAILED record
TRIAL_ERRORS = (AutopruneError, RuntimeError, ValueError)


@dataclass
class TrialRunner:
    """Evaluates plans against one dense model on one hardware profile."""

    task: Task
    config: SearchConfig
    dense: nn.Module
    meter: Meter
    #: wraps every fine-tune step (on Ray: paused while latency is measured on this machine)
    step_guard: Callable[[], AbstractContextManager[Any]] | None = None
    settings: PrunerSettings = field(init=False)

    _calibration: list | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.settings = self.config.pruner

    def calibration(self) -> list:
        """The int8 calibration batches: the first ``calibration_samples`` of the training split (made once)."""
        if self._calibration is None:
            self._calibration = calibration_of(self.config.profile, self.task)
        return self._calibration

    def quantize(self, model: nn.Module, plan: PruningPlan) -> QuantizedModel:
        """``model`` in the plan's precision (``to_precision``), calibrated (int8) on this runner's batches."""
        return to_precision(model, plan, profile=self.config.profile, example_input=self.task.example_input,
                            calibration=self.calibration)

    def onnx_score(self, onnx: bytes, dataset: Dataset) -> float:
        """The task's metric of an ONNX file over ``dataset``, run by ONNX Runtime on the profile's device."""
        from autoprune.hardware.quantize import onnx_score

        return onnx_score(onnx, dataset, self.task.metric, threads=self.task.recipe.threads,
                          device=self.config.profile.device)

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

    def trial_cost(self, steps: int = COST_PROBE_STEPS) -> float:
        """Seconds a trial of this search is expected to take, timed on a copy of the dense model.

        Times what a trial does (one interleaved measurement, BatchNorm recalibration, scoring the
        validation split twice and the test split once) and ``steps`` fine-tune steps, scaled to the
        recipe's full length. The dense model is the largest candidate, so this errs long: a deadline
        search uses it only until its own first trial has finished.
        """
        model = copy.deepcopy(self.dense)
        start = time.perf_counter()
        self.meter.compare(model)
        recalibrate_batchnorm(model, self.task.train_set)
        scored = time.perf_counter()
        evaluate(model, self.task.val_set, self.task.metric)
        validation = time.perf_counter() - scored  # paid twice by a trial: the proxy, then the final score
        test_score(self.task, model)
        seconds = time.perf_counter() - start + validation
        recipe = self.task.recipe
        batches = len(self.task.train_set) // recipe.batch_size  # fine_tune drops the last partial batch
        if recipe.epochs == 0 or batches == 0:
            return seconds
        steps = min(steps, batches)
        teacher = self.dense if recipe.distill_weight > 0 else None

        def train(count: int) -> float:
            start = time.perf_counter()
            fine_tune(model, Subset(self.task.train_set, range(count * recipe.batch_size)),
                      dataclasses.replace(recipe, epochs=1), seed=self.config.seed, teacher=teacher,
                      loss_fn=self.task.loss, step_guard=self.step_guard)
            return time.perf_counter() - start

        train(1)  # warm-up: a first step's one-off costs (allocations, thread start) are not paid per step
        return seconds + train(steps) / steps * batches * recipe.epochs

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
            if plan.precision != DEFAULT_PRECISION:
                return self._screen_quantized(plan, pruned.model, fields, seconds)
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

    def _screen_quantized(self, plan: PruningPlan, model: nn.Module, fields: dict[str, Any],
                          seconds: dict[str, float]) -> TrialRecord:
        """The screen of a quantized plan: its quantized file measured against dense, its proxy scored in ONNX
        Runtime."""
        recalibrate_batchnorm(model, self.task.train_set)
        with _timed(seconds, "quantize"):
            quantized = self.quantize(model, plan)
        with _timed(seconds, "measure"):
            latency, dense_latency = self.meter.compare_onnx(quantized.onnx, None)[:2]
        fields.update(latency=latency, dense_latency=dense_latency, speedup=dense_latency.median_ms / latency.median_ms)
        reason = self.screen_reason(fields["speedup"], latency.median_ms)
        if reason:
            return TrialRecord(state=TrialState.REJECTED, reason=f"{plan.precision}: {reason}", **fields)
        with _timed(seconds, "proxy"):
            fields["proxy"] = self.onnx_score(quantized.onnx, self.task.val_set)
        return TrialRecord(state=TrialState.SCREENED, **fields)

    def _finish_quantized(self, record: TrialRecord, model: nn.Module, fp32_accuracy: float | None) -> Candidate:
        """A fine-tuned candidate quantized, scored in ONNX Runtime and measured against dense and its fp32 self."""
        plan = PruningPlan.from_dict(record.plan)
        precision = plan.precision
        seconds = dict(record.seconds)
        with _timed(seconds, "quantize"):
            quantized = self.quantize(model, plan)
        with _timed(seconds, "evaluate"):
            accuracy = self.onnx_score(quantized.onnx, self.task.val_set)
            test_accuracy = None if self.task.test_set is None else self.onnx_score(quantized.onnx, self.task.test_set)
        with _timed(seconds, "measure"):
            latency, dense_latency, fp32_latency = self.meter.compare_onnx(quantized.onnx, model)
        vs_fp32 = fp32_latency.median_ms / latency.median_ms
        facts: dict[str, Any] = {**quantized.facts(), "precision": precision, "fp32_accuracy": fp32_accuracy,
                                 "speedup_vs_fp32": vs_fp32}
        if vs_fp32 <= 1.0:
            facts["note"] = (f"{precision} is no faster than this candidate in fp32 "
                             f"({latency.median_ms:.3f} ms vs {fp32_latency.median_ms:.3f} ms)")
        size, compressed = disk_size(quantized.onnx)
        done = dataclasses.replace(record, state=TrialState.COMPLETE, accuracy=accuracy, test_accuracy=test_accuracy,
                                   latency=latency, dense_latency=dense_latency, fp32_latency=fp32_latency,
                                   speedup=dense_latency.median_ms / latency.median_ms, quantization=facts,
                                   seconds=seconds, size_bytes=size, compressed_bytes=compressed)
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return Candidate(record=done, weights=weights, onnx=quantized.onnx)

    def remeasure(self, record: TrialRecord) -> TrialRecord:
        """``record`` with its candidate measured again (interleaved with the dense model, as in the screen).

        The less noisy of the two measurements is kept (with its dense figure and speed-up);
        ``remeasures`` counts this one. The pruned architecture is rebuilt from the plan: latency does
        not depend on the fine-tuned weights.
        """
        seconds = dict(record.seconds)
        try:
            with _timed(seconds, "remeasure"):
                plan = PruningPlan.from_dict(record.plan)
                model = self.prune(plan).model
                if plan.precision == DEFAULT_PRECISION:
                    latency, dense_latency = self.meter.compare(model)
                else:  # the shipped file's latency: quantized again (its latency does not depend on the weights)
                    recalibrate_batchnorm(model, self.task.train_set)
                    quantized = self.quantize(model, plan).onnx
                    latency, dense_latency = self.meter.compare_onnx(quantized, None)[:2]
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
            plan = PruningPlan.from_dict(screened.plan)
            pruned = self.prune(plan)
            recalibrate_batchnorm(pruned.model, self.task.train_set)
            accuracy = screened.proxy
            if self.task.recipe.epochs > 0:
                teacher = self.dense if self.task.recipe.distill_weight > 0 else None
                fine_tune(pruned.model, self.task.train_set, self.task.recipe, seed=self.config.seed + screened.number,
                          teacher=teacher, after_step=pruned.reapply_masks if pruned.masks else None,
                          loss_fn=self.task.loss, step_guard=self.step_guard)
                seconds["finetune"] = time.perf_counter() - start
            if plan.precision != DEFAULT_PRECISION:
                fp32_accuracy = evaluate(pruned.model, self.task.val_set, self.task.metric)
                return dataclasses.replace(
                    self._finish_quantized(dataclasses.replace(screened, seconds=seconds), pruned.model, fp32_accuracy),
                    sparsity=pruned.sparsity)
            if self.task.recipe.epochs > 0:
                accuracy = evaluate(pruned.model, self.task.val_set, self.task.metric)
            test_accuracy = test_score(self.task, pruned.model)
        except TRIAL_ERRORS as err:
            failed = dataclasses.replace(screened, state=TrialState.FAILED, reason=f"{type(err).__name__}: {err}")
            return Candidate(record=failed)
        weights = {k: v.detach().clone() for k, v in pruned.model.state_dict().items()}
        size, compressed = disk_size(weights_bytes(weights))
        record = dataclasses.replace(screened, state=TrialState.COMPLETE, accuracy=accuracy, seconds=seconds,
                                     test_accuracy=test_accuracy, size_bytes=size, compressed_bytes=compressed)
        return Candidate(record=record, weights=weights, sparsity=pruned.sparsity)


def _onnxruntime_options(profile: HardwareProfile) -> Any:
    from autoprune.hardware.onnxruntime_backend import OnnxRuntimeOptions

    return profile.options if isinstance(profile.options, OnnxRuntimeOptions) else OnnxRuntimeOptions()


def calibration_of(profile: HardwareProfile, task: Task) -> list:
    """The int8 calibration batches of a profile: the first ``calibration_samples`` of the task's training split.

    Raises:
        QuantizationError: the training split is empty.
    """
    from autoprune.hardware.quantize import calibration_batches

    return calibration_batches(task.train_set, _onnxruntime_options(profile).calibration_samples)


def to_precision(model: nn.Module, plan: PruningPlan, *, profile: HardwareProfile, example_input: Inputs,
                 calibration: Callable[[], list]) -> QuantizedModel:
    """``model`` as the ONNX file of the plan's precision (a ``QuantizedModel``), its ``keep_fp32`` layers in fp32:
    int8 by ONNX Runtime's static quantization with the profile's calibration method on ``calibration()``'s
    batches, fp16 by PyTorch's half precision.

    Raises:
        QuantizationError: the model cannot be converted (the message names the step, op or layer).
    """
    from autoprune.hardware.half import convert_fp16
    from autoprune.hardware.quantize import QuantizationError, quantize_int8

    if plan.precision == "fp16":
        return convert_fp16(model, example_input, keep_fp32=plan.keep_fp32)
    if plan.precision != "int8":
        raise QuantizationError(f"precision {plan.precision} has no converter (int8 and fp16 have)")
    return quantize_int8(model, example_input, calibration(), method=_onnxruntime_options(profile).calibration,
                         keep_fp32=plan.keep_fp32)


def check_precisions(config: SearchConfig, task: Task, model: nn.Module) -> None:
    """Before a search runs: the dense model converts to every precision its space lists besides fp32, with the
    space's ``keep_fp32`` layers, so a model that cannot be quantized (or a glob naming no layer, or int8 without
    calibration data) stops the search at once instead of failing every such trial.

    Raises:
        ConfigError: one line naming the space, the precision and what failed (the op or layer, when known).
    """
    from autoprune.config import runnable_precisions
    from autoprune.hardware.quantize import QuantizationError

    runs = runnable_precisions(config.profile)
    for precision in (p for p in config.space.precisions if p != DEFAULT_PRECISION and p in runs):
        plan = PruningPlan(precision=precision, keep_fp32=config.space.keep_fp32)
        try:
            to_precision(model, plan, profile=config.profile, example_input=task.example_input,
                         calibration=lambda: calibration_of(config.profile, task))
        except QuantizationError as err:
            raise ConfigError(f"search space {config.space.name}: `precisions` lists {precision}, but the task's "
                              f"model cannot be converted: {err}") from None


@contextmanager
def _timed(seconds: dict[str, float], key: str) -> Iterator[None]:
    """``with _timed(seconds, "prune"):`` stores the block's wall time under that key when it succeeds."""
    start = time.perf_counter()
    yield
    seconds[key] = time.perf_counter() - start
