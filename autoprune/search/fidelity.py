"""Multi-fidelity: a cheap proxy score decides which candidates earn the full fine-tune.

The proxy is the candidate's accuracy right after pruning with BatchNorm statistics
re-estimated (no weight update; a fraction of a second). Successive halving, applied
asynchronously: a candidate is promoted to the full fine-tune when its proxy ranks in the
top ``keep`` share of the proxies seen so far. The Spearman rank correlation between proxy
and full scores on candidates that got both says whether the proxy deserved that trust.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def promotion_refusal(proxy: float, history: Sequence[float], keep: float, warmup: int) -> str:
    """Why a candidate with ``proxy`` does not get the full fine-tune ('' when it does).

    Args:
        proxy: the candidate's proxy score.
        history: proxy scores of the earlier candidates that reached this stage.
        keep: share of candidates promoted (1.0: all).
        warmup: candidates always promoted before the ranking is trusted.
    """
    if keep >= 1.0 or len(history) < warmup:
        return ""
    threshold = float(np.quantile(np.asarray(history, dtype=float), 1.0 - keep))
    if proxy >= threshold:
        return ""
    return f"proxy {proxy:.4f} below the top {keep:.0%} of {len(history)} earlier proxies (>= {threshold:.4f})"


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
