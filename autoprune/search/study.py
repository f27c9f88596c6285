"""The run's Optuna study: its storage, and the trial records kept in its trials' user attributes.

Every trial of a search, whatever agent proposed it, is one trial of this study; the driver
stores each finished trial's ``TrialRecord`` under ``RECORD_ATTR``, so agents, resumes, reports
and ``optuna-dashboard`` all read the same history. Default storage: ``RUN/study.db`` (SQLite);
any SQLAlchemy URL works (a team database).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from autoprune.records import TrialRecord

if TYPE_CHECKING:
    import optuna

STUDY_NAME = "autoprune"
#: trial user attribute: the finished trial's ``TrialRecord.to_dict()``
RECORD_ATTR = "record"
#: trial user attribute: hypervolume of the run's feasible trials up to and including this one
HYPERVOLUME_ATTR = "hypervolume"


def open_study(storage_url: str, directions: Sequence[str], sampler: optuna.samplers.BaseSampler | None = None, *,
               create: bool = True) -> optuna.Study:
    """Create or load the run's multi-objective study (``create=False``: it must exist)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(storage_url)
    if create:
        return optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=list(directions),
                                   sampler=sampler, load_if_exists=True)
    return optuna.load_study(storage=storage, study_name=STUDY_NAME, sampler=sampler)


def _storage(storage_url: str) -> optuna.storages.RDBStorage:
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


def records_of(trials: Iterable[optuna.trial.FrozenTrial]) -> list[TrialRecord]:
    """The records of the finished ones among ``trials``, by trial number."""
    out = [TrialRecord.from_dict(t.user_attrs[RECORD_ATTR]) for t in trials if RECORD_ATTR in t.user_attrs]
    return sorted(out, key=lambda r: r.number)


def finished_records(study: optuna.Study) -> list[TrialRecord]:
    """Records of every finished trial of ``study``, by trial number."""
    return records_of(study.get_trials(deepcopy=False))
