"""Sensitivity analysis: prune each group alone at a few ratios; accuracy drop and measured speed-up.

No fine-tuning: BatchNorm statistics are re-estimated on a few training batches, then the
candidate is scored on the validation set and timed interleaved with the dense model on the
hardware profile. Users read it to see where pruning pays; agents may use it as a prior.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from autoprune.config import HardwareProfile
from autoprune.errors import ConfigError
from autoprune.hardware.meter import LatencyMeter
from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan
from autoprune.pruning import discover_groups, model_stats
from autoprune.pruning.saving import rebuild
from autoprune.task import Task
from autoprune.training import evaluate
from autoprune.training.finetune import recalibrate_batchnorm


@dataclass(frozen=True, kw_only=True)
class SensitivityRow:
    """One group pruned alone at one ratio."""

    group: str
    ratio: float
    channels: tuple[int, int]
    accuracy: float
    accuracy_drop: float
    latency_ms: float
    speedup: float
    macs_ratio: float


@dataclass(frozen=True, kw_only=True)
class SensitivityReport:
    task: str
    profile: str
    dense_accuracy: float
    dense_latency_ms: float
    rows: tuple[SensitivityRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_ratios(text: str) -> tuple[float, ...]:
    """``"0.25,0.5"`` -> (0.25, 0.5); ConfigError naming the flag when a value is not in (0, 1)."""
    try:
        ratios = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--ratios: expected comma-separated numbers in (0, 1), got {text!r}") from None
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise ConfigError(f"--ratios: every ratio must be in (0, 1), got {text!r}")
    return ratios


def sensitivity(task: Task, profile: HardwareProfile, settings: PrunerSettings, ratios: Sequence[float],
                on_row: Callable[[SensitivityRow], None] | None = None) -> SensitivityReport:
    """Prune every discovered group alone at each ratio (with the search's ``settings``) and measure
    what it costs and gains."""
    dense = task.build_model()
    x = task.example_input
    groups = discover_groups(dense, x, settings.ignore, round_to=settings.round_to)
    dense_macs = model_stats(dense, x).macs
    dense_accuracy = evaluate(dense, task.val_set, task.metric)
    meter = LatencyMeter(profile, dense, x)
    rows, dense_ms = [], []
    for group in groups:
        for ratio in ratios:
            result = rebuild(task, PruningPlan.of({group.name: GroupPlan(ratio=ratio)}), settings, dense=dense)
            model = result.model
            recalibrate_batchnorm(model, task.train_set)
            accuracy = evaluate(model, task.val_set, task.metric)
            candidate, reference = meter.compare(model)
            dense_ms.append(reference.median_ms)
            row = SensitivityRow(group=group.name, ratio=ratio, channels=result.channels[group.name],
                                 accuracy=accuracy, accuracy_drop=dense_accuracy - accuracy,
                                 latency_ms=candidate.median_ms, speedup=reference.median_ms / candidate.median_ms,
                                 macs_ratio=model_stats(model, x).macs / dense_macs)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    median_dense = sorted(dense_ms)[len(dense_ms) // 2] if dense_ms else meter.dense().median_ms
    return SensitivityReport(task=task.name, profile=profile.name, dense_accuracy=dense_accuracy,
                             dense_latency_ms=median_dense, rows=tuple(rows))
