"""A run folder and its Optuna study: where a search writes and how it is read back.

Layout (see results/README.md): ``config.json`` (resolved), ``environment.json`` (versions,
machine fingerprint, seed), ``dense.json`` (the dense reference), ``study.db`` (every trial,
records in user attributes), ``trials/NNNN/`` (plan + state_dict), ``pareto.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoprune.errors import ConfigError
from autoprune.execution.record import TrialRecord

STUDY_NAME = "autoprune"
RECORD_ATTR = "record"
INTERRUPTED_ATTR = "interrupted"


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def environment(self) -> Path:
        return self.path / "environment.json"

    @property
    def dense(self) -> Path:
        return self.path / "dense.json"

    @property
    def pareto(self) -> Path:
        return self.path / "pareto.json"

    @property
    def trials(self) -> Path:
        return self.path / "trials"

    @property
    def study_db(self) -> Path:
        return self.path / "study.db"

    def storage_url(self) -> str:
        return f"sqlite:///{self.study_db.resolve()}"

    def read_json(self, path: Path) -> Any:
        return json.loads(path.read_text())

    @classmethod
    def existing(cls, path: str | Path) -> RunFolder:
        """An existing run folder; ConfigError when ``path`` is not one."""
        run = cls(Path(path))
        if not run.config.is_file() or not run.study_db.is_file():
            raise ConfigError(f"{path}: not a run folder (no config.json and study.db); "
                              "give the --out folder of a finished or running search")
        return run


def open_study(storage_url: str, directions: list[str], sampler=None, *, create: bool = True):
    """Create or load the run's multi-objective study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(storage_url)
    if create:
        return optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=directions,
                                   sampler=sampler, load_if_exists=True)
    return optuna.load_study(storage=storage, study_name=STUDY_NAME, sampler=sampler)


def _storage(storage_url: str):
    """The RDB storage; SQLite in WAL mode without an fsync per commit.

    Optuna commits once per suggested parameter, so the default rollback journal with an fsync
    per commit cost ~10 ms each here, over 100 ms per trial. WAL with ``synchronous=NORMAL``
    stays consistent and loses nothing when the process is killed (only an OS crash or power
    loss can drop the last commits, which a resume re-runs).
    """
    import optuna

    storage = optuna.storages.RDBStorage(storage_url)
    if storage_url.startswith("sqlite"):
        from sqlalchemy import event

        def pragmas(connection, _record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        event.listen(storage.engine, "connect", pragmas)
        storage.engine.dispose()  # pooled connections were opened before the listener
    return storage


def finished_records(study) -> list[TrialRecord]:
    """Records of every finished trial (interrupted attempts excluded), by trial number."""
    out = []
    for trial in study.get_trials(deepcopy=False):
        data = trial.user_attrs.get(RECORD_ATTR)
        if data is not None and not trial.user_attrs.get(INTERRUPTED_ATTR):
            out.append(TrialRecord.from_dict(data))
    return sorted(out, key=lambda r: r.number)
