"""Atomic file writes (a run folder never holds a half-written artifact) and sizes on disk, plain and gzip'd."""
from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from autoprune.errors import ConfigError, StorageError


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


#: the gzip level of every compressed size a record, report or card states: gzip's own default, what a user's
#: ``gzip model.pt`` gives (zeroed weights of unstructured and N:M sparsity shrink only once compressed)
GZIP_LEVEL = 6


def disk_size(blob: bytes) -> tuple[int, int]:
    """(plain, gzip'd) size in bytes of a file's contents; the gzip header carries no time, so sizes repeat."""
    return len(blob), len(gzip.compress(blob, compresslevel=GZIP_LEVEL, mtime=0))


def size_text(size: int | None) -> str:
    """A size on disk in kB or MB for tables (``-`` when unknown: a run folder older than the figure)."""
    if size is None:
        return "-"
    return f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def weights_bytes(state_dict: Any) -> bytes:
    """A state dict serialised as ``torch.save`` writes it to disk (``model.pt``), CPU tensors."""
    import torch

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
    return buffer.getvalue()


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


#: below this much free space a run is refused before it starts (a trial's weights and the study need room)
MIN_FREE_BYTES = 50 * 2**20


def _probe_write(folder: Path, what: str) -> None:
    """StorageError unless a file can be created (and removed) in ``folder`` and its disk has ``MIN_FREE_BYTES``."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".autoprune-probe-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        reason = (err.strerror or type(err).__name__).lower()
        raise StorageError(f"{folder}: cannot write there ({reason}); choose a writable {what}") from None
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise StorageError(f"{folder}: only {free / 2**20:.1f} MiB free on its disk; free space or choose "
                           f"another {what}")


def check_writable_folder(path: str | Path, what: str = "--out") -> None:
    """Before any long work: ``path`` is (or can be created as) a folder this process can write into.

    Raises:
        ConfigError: ``path`` is a file, or lies under a file.
        StorageError: the folder (or the nearest existing one above it) is read-only or not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: exists and is not a folder; give a folder path")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise ConfigError(f"{what} {path}: {existing} is a file, not a folder")
    _probe_write(existing, what)


def check_writable_file(path: str | Path, what: str = "--out") -> None:
    """Before any long work: a file can be written at ``path`` (its folder is, or can be, created and written).

    Raises:
        ConfigError: ``path`` is a folder, or lies under a file.
        StorageError: the folder it goes in is read-only or not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a folder; give the path of a file")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise ConfigError(f"{what} {path}: {existing} is a file, not a folder")
    _probe_write(existing, what)


def read_json(path: Path, what: str) -> Any:
    """The JSON in ``path``; ConfigError naming the file (and ``what`` it should hold) when it is not JSON."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err}); it should hold {what}") from None
    except OSError as err:
        raise StorageError(f"{path}: cannot be read ({(err.strerror or type(err).__name__).lower()})") from None
