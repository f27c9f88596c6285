"""Multi-fidelity: a cheap proxy score decides which candidates earn the full fine-tune.

The proxy is the candidate's accuracy right after pruning with BatchNorm statistics
re-estimated (no weight update; a fraction of a second). Successive halving, applied
asynchronously and judged against latency: a candidate is promoted to the full fine-tune when it
ranks in the top ``keep`` share of the candidates screened so far by how many of them beat it on
both proxy and measured speed-up. A proxy ranked alone would refuse every aggressive plan (a
faster candidate scores lower before its fine-tune) and shrink the front to its slow end. The
Spearman rank correlation between proxy and full scores on candidates that got both says whether
the proxy deserved that trust.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: a screened candidate as the promotion rule sees it: (proxy score, measured speed-up over dense)
Screened = tuple[float, float]


def dominated_by(point: Screened, others: Sequence[Screened]) -> int:
    """How many of ``others`` are at least as good as ``point`` on proxy and speed-up, and better on one."""
    return sum(o[0] >= point[0] and o[1] >= point[1] and o != point for o in others)


def promotion_refusal(candidate: Screened, history: Sequence[Screened], keep: float, warmup: int) -> str:
    """Why a screened candidate does not get the full fine-tune ('' when it does).

    The candidate is promoted when the number of earlier candidates dominating it (proxy and speed-up)
    is at most the ``keep`` quantile of the same count over the earlier candidates: the top share
    of the proxy-vs-latency ranking. At equal speed-ups this is the top ``keep`` share by proxy.

    Args:
        candidate: its (proxy, speed-up).
        history: the (proxy, speed-up) of the earlier candidates that reached this stage.
        keep: share of candidates promoted (1.0: all).
        warmup: candidates always promoted before the ranking is trusted.
    """
    if keep >= 1.0 or len(history) < warmup:
        return ""
    counts = [dominated_by(h, history) for h in history]
    threshold = float(np.quantile(np.asarray(counts, dtype=float), keep))
    beaten = dominated_by(candidate, history)
    if beaten <= threshold:
        return ""
    return (f"proxy {candidate[0]:.4f} at {candidate[1]:.2f}x: {beaten} of {len(history)} earlier candidates are "
            f"faster and better by proxy; the top {keep:.0%} allow {threshold:g}")


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Average ranks (ties share the mean of their positions)."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (None with fewer than 3 pairs or a constant side)."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])
