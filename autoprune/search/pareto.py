"""Pareto geometry over objective vectors with per-objective directions: dominance, the front,
the hypervolume (the only one: ``pareto.json``, the report and the agents all use it) and the knee."""
from __future__ import annotations

from collections.abc import Sequence


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    better = False
    for x, y, up in zip(a, b, maximize, strict=True):
        if (x < y) if up else (x > y):
            return False
        if x != y:
            better = True
    return better


def pareto_front(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices of the non-dominated points (duplicates of a front point all stay)."""
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, maximize) for j, q in enumerate(points) if j != i)]


def hypervolume(points: Sequence[Sequence[float]], maximize: Sequence[bool], reference: Sequence[float]) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (exact, by slicing).

    A point that does not strictly beat the reference in every objective adds nothing. The
    slicing algorithm costs O(n^d) for n points in d objectives: plenty for search fronts.
    """
    flip = [-1.0 if up else 1.0 for up in maximize]  # to minimisation
    ref = [r * f for r, f in zip(reference, flip, strict=True)]
    pts = [[x * f for x, f in zip(p, flip, strict=True)] for p in points]
    pts = [p for p in pts if all(x < r for x, r in zip(p, ref, strict=True))]
    return _sliced_volume(pts, ref)


def _sliced_volume(points: list[list[float]], ref: list[float]) -> float:
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for i, p in enumerate(ordered):
        upper = ordered[i + 1][-1] if i + 1 < len(ordered) else ref[-1]
        if upper > p[-1]:
            volume += (upper - p[-1]) * _sliced_volume([q[:-1] for q in ordered[: i + 1]], ref[:-1])
    return volume


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
