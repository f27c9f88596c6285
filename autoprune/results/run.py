"""A run folder and its Optuna study: where a search writes and how it is read back.

Layout (see results/README.md): ``config.json`` (resolved), ``environment.json`` (versions,
machine fingerprint, seed), ``dense.json`` (the dense reference), ``study.db`` (every trial,
records in user attributes), ``trials/NNNN/`` (plan + state_dict), ``pareto.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.errors import ConfigError
from autoprune.execution.record import TrialRecord

if TYPE_CHECKING:
    from autoprune.config import SearchConfig
    from autoprune.execution.driver import DenseReference

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

    def trial_weights(self, number: int) -> Path:
        """Where trial ``number``'s state_dict is saved (inside the run, so a moved run still works)."""
        return self.trials / f"{number:04d}" / "model.pt"

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


@dataclass(frozen=True, kw_only=True)
class RunData:
    """Everything a finished (or running) search left, read back for reports, pick and export."""

    run: RunFolder
    config: SearchConfig
    dense: DenseReference
    environment: dict[str, Any]
    records: list[TrialRecord]
    front: list[TrialRecord]

    def record(self, number: int) -> TrialRecord:
        """The record of trial ``number``; ConfigError naming the finished trials otherwise."""
        for r in self.records:
            if r.number == number:
                return r
        raise ConfigError(f"{self.run.path}: no finished trial {number}; finished trials: "
                          f"{', '.join(str(r.number) for r in self.records) or 'none'}")

    def on_front(self, number: int) -> bool:
        return any(r.number == number for r in self.front)


def load_run(path: str | Path) -> RunData:
    """Read a run folder: its config, dense reference, every finished trial and the Pareto front.

    The front is recomputed from the study (the source of truth), not read from pareto.json.

    Raises:
        ConfigError: ``path`` is not a run folder, or it holds no dense reference yet.
    """
    from autoprune.config import OBJECTIVES, search_config_from_dict
    from autoprune.execution.driver import DenseReference, front_of

    run = RunFolder.existing(path)
    config = search_config_from_dict(run.read_json(run.config), str(run.config))
    if not run.dense.is_file():
        raise ConfigError(f"{path}: the search has not measured the dense model yet (no dense.json)")
    dense = DenseReference(**run.read_json(run.dense))
    environment = run.read_json(run.environment) if run.environment.is_file() else {}
    study = open_study(run.storage_url(), [OBJECTIVES[o] for o in config.objectives], create=False)
    records = finished_records(study)
    return RunData(run=run, config=config, dense=dense, environment=environment, records=records,
                   front=front_of(config, dense, records))
