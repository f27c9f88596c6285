"""Geometry of an accuracy/latency front: hypervolume and the knee.

Both work on (latency, accuracy) points, latency minimised and accuracy maximised, which is
the trade-off every report, pick and model card talks about.
"""
from __future__ import annotations

from collections.abc import Sequence

from autoprune.execution.record import COMPLETE, TrialRecord


def points_of(records: Sequence[TrialRecord]) -> list[tuple[float, float]]:
    """(latency ms, accuracy) of the complete records, in their order."""
    return [(float(r.latency_ms), float(r.accuracy)) for r in records  # type: ignore[arg-type]
            if r.state == COMPLETE and r.latency is not None and r.accuracy is not None]


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (latency max, accuracy min).

    Points worse than the reference in either objective add nothing.
    """
    ref_lat, ref_acc = reference
    inside = sorted((lat, acc) for lat, acc in points if lat < ref_lat and acc > ref_acc)
    area, best_acc = 0.0, ref_acc
    # sweep from the fastest point: each point adds the strip of accuracy it improves on
    for i, (lat, acc) in enumerate(inside):
        best_acc = max(best_acc, acc)
        next_lat = inside[i + 1][0] if i + 1 < len(inside) else ref_lat
        area += (next_lat - lat) * (best_acc - ref_acc)
    return area


def hypervolume_reference(records: Sequence[TrialRecord], dense_latency_ms: float) -> tuple[float, float]:
    """A reference point every useful candidate beats: the dense latency (or the slowest trial) and
    the lowest accuracy seen, so the hypervolume grows exactly when the front improves."""
    pts = points_of(records)
    worst_lat = max([dense_latency_ms] + [p[0] for p in pts])
    worst_acc = min([p[1] for p in pts], default=0.0)
    return worst_lat, worst_acc


def hypervolume_history(records: Sequence[TrialRecord], reference: tuple[float, float]) -> list[tuple[int, float]]:
    """(trial number, hypervolume of every complete trial up to it), by trial number."""
    ordered = sorted(records, key=lambda r: r.number)
    history, seen = [], []
    for r in ordered:
        seen.extend(points_of([r]))
        history.append((r.number, hypervolume(seen, reference)))
    return history


def knee_index(points: Sequence[tuple[float, float]]) -> tuple[int, str]:
    """Index of the knee of a front: the point farthest from the chord joining its two extremes,
    both axes scaled to [0, 1]. With fewer than three points (no chord to bend away from), the
    point nearest the ideal corner (fastest latency, best accuracy) is the knee.

    Returns:
        The index and a sentence saying which of the two rules chose it.
    """
    if not points:
        raise ValueError("knee of an empty front")
    lats = [p[0] for p in points]
    accs = [p[1] for p in points]
    span_l = (max(lats) - min(lats)) or 1.0
    span_a = (max(accs) - min(accs)) or 1.0
    scaled = [((lat - min(lats)) / span_l, (acc - min(accs)) / span_a) for lat, acc in points]
    if len(points) >= 3:
        first = min(range(len(scaled)), key=lambda i: scaled[i])
        last = max(range(len(scaled)), key=lambda i: scaled[i])
        (x1, y1), (x2, y2) = scaled[first], scaled[last]
        length = ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5
        if length > 0:
            # points above the chord (more accuracy for their latency) bend the front outwards
            bends = [((x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)) / length for x, y in scaled]
            best = max(range(len(bends)), key=lambda i: bends[i])
            if bends[best] > 1e-12:
                return best, ("farthest above the line from the fastest to the most accurate model "
                              "(axes scaled to [0, 1])")
    nearest = min(range(len(scaled)), key=lambda i: scaled[i][0] ** 2 + (1.0 - scaled[i][1]) ** 2)
    return nearest, "nearest the ideal corner (axes scaled to [0, 1]); the front has no bend to pick"
