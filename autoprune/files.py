"""Atomic file writes: a run folder never holds a half-written artifact."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def umask_mode(mode: int) -> int:
    """``mode`` less the process umask: what ``open``/``mkdir`` would give (mkstemp/mkdtemp give 0600/0700)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, umask_mode(0o666))
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return _atomic_write(path, lambda h: h.write(data))


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> Path:
    import torch

    return _atomic_write(path, lambda h: torch.save(obj, h))
