"""Pick one Pareto model for a budget, and say why (its numbers next to its neighbours').

Rules (exactly one): the most accurate model within a latency budget, the fastest model that
reaches an accuracy, or the knee of the front (see :func:`autoprune.search.pareto.knee_index`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autoprune.errors import ConfigError
from autoprune.records import DenseReference, TrialRecord, TrialState
from autoprune.search.pareto import knee_index

if TYPE_CHECKING:
    from autoprune.results.run import RunData


@dataclass(frozen=True, kw_only=True)
class Choice:
    """The picked Pareto model, the rule that picked it, and its neighbours on the front."""

    chosen: TrialRecord
    rule: str
    reason: str
    faster: TrialRecord | None
    slower: TrialRecord | None


def precision_front(data: RunData, precision: str | None) -> list[TrialRecord]:
    """The run's Pareto front, or (with ``precision``) the front of its trials in that precision alone.

    Raises:
        ConfigError: no complete trial of a run is in ``precision`` (the message lists those it has).
    """
    if precision is None:
        return list(data.front)
    complete = [r for r in data.records if r.state == TrialState.COMPLETE]
    mine = [r for r in complete if r.precision == precision]
    if not mine:
        have = sorted({r.precision for r in complete}) or ["none"]
        raise ConfigError(f"--precision {precision}: no complete trial of {data.run.path} is {precision}; "
                          f"it has {', '.join(have)}")
    return data.scoring.front(mine)


def accuracy_fraction(value: float) -> float:
    """An accuracy given as a fraction (0.97) or in percent (97) as a fraction."""
    return value / 100.0 if value > 1.0 else value


def fastest_within(front: Sequence[TrialRecord], dense: DenseReference, tolerance: float) -> TrialRecord | None:
    """The one recommendation rule: the Pareto model with the lowest measured p50 latency whose accuracy is within
    ``tolerance`` of the dense model's (``pick --min-accuracy``'s rule; the sweep report and the search's progress
    line use it too). None when no model is that accurate."""
    near = [r for r in front if r.accuracy is not None and r.latency_ms is not None
            and r.accuracy >= dense.accuracy - tolerance]
    return min(near, key=lambda r: (r.latency_ms, -r.accuracy), default=None)


def pick(
    front: Sequence[TrialRecord],
    *,
    max_latency_ms: float | None = None,
    min_accuracy: float | None = None,
    knee: bool = False,
) -> Choice:
    """Choose one model of ``front`` (complete records) by exactly one rule.

    Args:
        max_latency_ms: the most accurate model whose p50 latency is within this budget
            (ties go to the faster one).
        min_accuracy: the fastest model at least this accurate (fraction or percent).
        knee: the knee of the front.

    Raises:
        ConfigError: no rule or more than one given, an empty front, or no model meets the budget.
    """
    given = [max_latency_ms is not None, min_accuracy is not None, bool(knee)]
    if sum(given) != 1:
        raise ConfigError("pick: give exactly one of --max-latency-ms, --min-accuracy, --knee")
    if min_accuracy is not None and not 0.0 <= min_accuracy <= 100.0:
        raise ConfigError(f"--min-accuracy must be a fraction in [0, 1] or a percent in (1, 100], got {min_accuracy:g}")
    ordered = sorted(front, key=lambda r: (r.latency_ms, -(r.accuracy or 0.0)))
    if not ordered:
        raise ConfigError("pick: the Pareto front is empty (no complete trial yet)")
    if max_latency_ms is not None:
        fits = [r for r in ordered if r.latency_ms <= max_latency_ms]
        if not fits:
            raise ConfigError(f"pick: no Pareto model within {max_latency_ms:g} ms; the fastest is trial "
                              f"{ordered[0].number} at {ordered[0].latency_ms:.4f} ms")
        chosen = max(fits, key=lambda r: (r.accuracy, -r.latency_ms))
        rule = f"max latency {max_latency_ms:g} ms"
        reason = (f"the most accurate of the {len(fits)} Pareto model(s) within {max_latency_ms:g} ms "
                  f"(p50 {chosen.latency_ms:.4f} ms)")
    elif min_accuracy is not None:
        target = accuracy_fraction(min_accuracy)
        fits = [r for r in ordered if r.accuracy >= target]
        if not fits:
            best = max(ordered, key=lambda r: r.accuracy)
            raise ConfigError(f"pick: no Pareto model reaches {100 * target:.2f}% accuracy; the most accurate is "
                              f"trial {best.number} at {100 * best.accuracy:.2f}%")
        chosen = min(fits, key=lambda r: (r.latency_ms, -r.accuracy))
        rule = f"min accuracy {100 * target:.2f}%"
        reason = (f"the fastest of the {len(fits)} Pareto model(s) with accuracy >= {100 * target:.2f}% "
                  f"({100 * chosen.accuracy:.2f}%)")
    else:
        index, how = knee_index([(r.latency_ms, r.accuracy) for r in ordered])
        chosen = ordered[index]
        rule = "knee"
        reason = f"the knee of the {len(ordered)}-model front: {how}"
    i = ordered.index(chosen)
    return Choice(chosen=chosen, rule=rule, reason=reason, faster=ordered[i - 1] if i > 0 else None,
                  slower=ordered[i + 1] if i + 1 < len(ordered) else None)


def choice_table(choice: Choice, dense: DenseReference):
    """A rich table of the choice between its neighbours, with the dense model for scale."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"pick ({choice.rule}): trial {choice.chosen.number}", box=box.SIMPLE_HEAD, pad_edge=False)
    rows = (("faster", choice.faster), ("PICKED", choice.chosen), ("slower", choice.slower))
    # the precision column only when a row is not fp32 (a narrow terminal keeps the other columns)
    quantized = any(r is not None and r.precision != "fp32" for _, r in rows)
    for column in ("", "trial", *(("prec",) if quantized else ()), "acc %", "Δ pt", "p50 ms", "p90 ms", "speed-up",
                   "MMACs", "kparams"):
        table.add_column(column, justify="right", no_wrap=True)
    for role, r in rows:
        if r is None:
            table.add_row(role, "none", *["-"] * (8 if quantized else 7), style="dim")
            continue
        table.add_row(role, str(r.number), *((r.precision,) if quantized else ()), f"{100 * r.accuracy:.2f}",
                      f"{100 * (r.accuracy - dense.accuracy):+.2f}", f"{r.latency_ms:.4f}", f"{r.latency_p90_ms:.4f}",
                      f"{dense.speedup_of(r.latency_ms):.2f}x", f"{r.macs / 1e6:.2f}", f"{r.params / 1e3:.1f}",
                      style="bold" if r is choice.chosen else None)
    lat = dense.latency
    table.add_row("dense", "-", *(("fp32",) if quantized else ()), f"{100 * dense.accuracy:.2f}", "+0.00",
                  f"{lat.median_ms:.4f}", f"{lat.p90_ms:.4f}", "1.00x", f"{dense.macs / 1e6:.2f}",
                  f"{dense.params / 1e3:.1f}", style="dim")
    return table
