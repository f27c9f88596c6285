"""The run's Optuna study: its storage, and the trial records kept in its trials' user attributes.

Every trial of a search, whatever agent proposed it, is one trial of this study; the driver
stores each finished trial's ``TrialRecord`` under ``RECORD_ATTR``, so agents, resumes, reports
and ``optuna-dashboard`` all read the same history. Default storage: ``RUN/study.db`` (SQLite);
any SQLAlchemy URL works (a team database).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from autoprune.errors import ConfigError, StorageError
from autoprune.records import TrialRecord

if TYPE_CHECKING:
    import optuna

STUDY_NAME = "autoprune"
#: trial user attribute: the finished trial's ``TrialRecord.to_dict()``
RECORD_ATTR = "record"
#: trial user attribute: hypervolume of the run's feasible trials up to and including this one
HYPERVOLUME_ATTR = "hypervolume"
#: trial user attribute of a duplicate: the number of the earlier trial whose candidate it builds (it is told as
#: PRUNED, so optuna-dashboard's front and autoprune's agree)
DUPLICATE_ATTR = "duplicate_of"


def open_study(storage_url: str, directions: Sequence[str], sampler: optuna.samplers.BaseSampler | None = None, *,
               create: bool = True, source: str | None = None) -> optuna.Study:
    """Create or load the run's multi-objective study (``create=False``: it must exist).

    Args:
        source: how the user named the storage, for messages (default: the SQLite file, or the URL).

    Raises:
        ConfigError: the URL names no database autoprune can open (unknown scheme, missing driver).
        StorageError: the database cannot be opened or read (corrupt, truncated, unreachable, holds no study).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with study_errors(storage_url, source):
        storage = _storage(storage_url)
        if create:
            return optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=list(directions),
                                       sampler=sampler, load_if_exists=True)
        try:
            return optuna.load_study(storage=storage, study_name=STUDY_NAME, sampler=sampler)
        except KeyError:
            raise StorageError(f"{_source(storage_url, source)}: holds no autoprune study (`{STUDY_NAME}`); is it the "
                               "study.db of an autoprune run?") from None


def _source(storage_url: str, source: str | None) -> str:
    if source is not None:
        return source
    prefix = "sqlite:///"
    return storage_url[len(prefix):] if storage_url.startswith(prefix) else storage_url


def _short(err: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's background link."""
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


@contextmanager
def study_errors(storage_url: str, source: str | None = None) -> Iterator[None]:
    """Turn what a bad or broken study storage raises into one-line errors naming it."""
    import sqlite3

    import sqlalchemy.exc

    where = _source(storage_url, source)
    db = Path(_source(storage_url, None))  # the SQLite file, for an sqlite:/// URL
    try:
        yield
    except (sqlalchemy.exc.NoSuchModuleError, sqlalchemy.exc.ArgumentError) as err:
        raise ConfigError(f"{where}: not a database URL autoprune can open ({_short(err)}); give sqlite:///PATH or "
                          "a SQLAlchemy URL such as postgresql://USER@HOST/DB") from None
    except ImportError as err:
        raise ConfigError(f"{where}: the database driver is not installed ({err}); install it (e.g. "
                          "psycopg2-binary for postgresql://) or use sqlite:///PATH") from None
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error) as err:
        folder = db.parent
        if storage_url.startswith("sqlite") and folder.is_dir() and not os.access(folder, os.W_OK):
            raise StorageError(f"{where}: cannot open the study database: {folder} is read-only (SQLite needs to "
                               "write its lock files beside it); copy the run folder somewhere writable") from None
        if storage_url.startswith("sqlite") and db.is_file():
            raise StorageError(f"{where}: not a readable study database ({_short(err)}); restore it from a backup "
                               "or start a new run in another folder") from None
        raise StorageError(f"{where}: cannot open the study database ({_short(err)}); check the URL, that the "
                           "server is up and the folder exists and is writable") from None


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
