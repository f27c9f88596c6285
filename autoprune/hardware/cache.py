"""A persistent latency cache: an identical candidate is never measured twice, across runs.

A measurement is keyed by the candidate's architecture signature (every layer's shape after
pruning), the dense model it was compared with, the input shape, the whole hardware profile,
the library versions and the machine fingerprint; any change to one of them is a miss. The
value is the interleaved pair (candidate stats, dense stats) of that one measurement, so a hit
gives back a speed-up that was measured in one process and moment, as the protocol wants.
Storage is SQLite (one file, safe for concurrent readers and a few writers).
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.latency import LatencyStats

if TYPE_CHECKING:
    from torch import nn

    from autoprune.config import HardwareProfile
    from autoprune.inputs import Inputs

#: environment variable naming the cache file; ``off`` disables caching
CACHE_ENV = "AUTOPRUNE_LATENCY_CACHE"
DEFAULT_CACHE = Path("results/.cache/latency.db")


def architecture_signature(model: nn.Module) -> list[list[Any]]:
    """Every leaf layer of ``model``: name, its repr (channels, kernel, stride, groups...) and
    parameter shapes. Two models with equal signatures run the same computation."""
    layers = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        shapes = [list(p.shape) for p in module.parameters(recurse=False)]
        layers.append([name, repr(module), shapes])
    return [[type(model).__qualname__], *layers]


def signature_digest(model: nn.Module) -> str:
    """A short stable hash of :func:`architecture_signature`."""
    return hashlib.sha256(json.dumps(architecture_signature(model)).encode()).hexdigest()[:24]


def measurement_key(candidate: nn.Module, dense: nn.Module, example_input: Inputs, profile: HardwareProfile,
                    versions: dict[str, str], machine_id: str) -> str:
    """The cache key of measuring ``candidate`` against ``dense`` on ``profile``."""
    from autoprune.inputs import describe

    blob = json.dumps({"candidate": signature_digest(candidate), "dense": signature_digest(dense),
                       "input": describe(example_input), "profile": profile.to_dict(),
                       "versions": versions, "machine": machine_id}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class LatencyCache:
    """(candidate, dense) LatencyStats pairs by measurement key, in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS latency (key TEXT PRIMARY KEY, candidate TEXT NOT NULL, "
                       "dense TEXT NOT NULL, created REAL NOT NULL)")

    @classmethod
    def default(cls) -> LatencyCache | None:
        """The cache at ``$AUTOPRUNE_LATENCY_CACHE`` (or results/.cache/latency.db); None when ``off``."""
        where = os.environ.get(CACHE_ENV, str(DEFAULT_CACHE))
        return None if where.lower() == "off" else cls(where)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:  # commits, or rolls back on error
                yield db
        finally:
            db.close()

    def get(self, key: str) -> tuple[LatencyStats, LatencyStats] | None:
        """The stored (candidate, dense) pair, or None."""
        with self._connect() as db:
            row = db.execute("SELECT candidate, dense FROM latency WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return LatencyStats.from_dict(json.loads(row[0])), LatencyStats.from_dict(json.loads(row[1]))

    def put(self, key: str, candidate: LatencyStats, dense: LatencyStats) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO latency VALUES (?, ?, ?, ?)",
                       (key, json.dumps(candidate.to_dict()), json.dumps(dense.to_dict()), time.time()))

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM latency").fetchone()[0])
