"""Pareto fronts over objective vectors with per-objective directions."""
from __future__ import annotations

from collections.abc import Sequence


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    better = False
    for x, y, up in zip(a, b, maximize):
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
    ref = [r * f for r, f in zip(reference, flip)]
    pts = [[x * f for x, f in zip(p, flip)] for p in points]
    pts = [p for p in pts if all(x < r for x, r in zip(p, ref))]
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
