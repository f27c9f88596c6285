"""The run's Optuna study: its storage, and the trial records kept in its trials' user attributes.

Every trial of a search, whatever agent proposed it, is one trial of this study; the driver
stores each finished trial's ``TrialRecord`` under ``RECORD_ATTR``, so agents, resumes, reports
and ``optuna-dashboard`` all read the same history. Default storage: ``RUN/study.db`` (SQLite);
any SQLAlchemy URL Optuna accepts works (a team database, e.g. ``postgresql://host/db``), where each
search is its own study (``STUDY_NAME`` in a run folder's own ``study.db``, a name derived from the
run elsewhere). A study also keeps what reads its run back without the folder (``RUN_ATTRS``).
"""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
#: study user attributes: the run folder's ``config.json``, ``environment.json`` and ``dense.json``
#: (by file stem), so a run can be read back, reported and resumed from its database alone
RUN_ATTRS = ("config", "environment", "dense")


def open_study(storage_url: str, directions: Sequence[str], sampler: optuna.samplers.BaseSampler | None = None, *,
               create: bool = True, source: str | None = None, study_name: str = STUDY_NAME,
               sole_writer: bool = False) -> optuna.Study:
    """Create or load the run's multi-objective study (``create=False``: it must exist).

    Args:
        source: how the user named the storage, for messages (default: the SQLite file, or the URL
            without its password).
        study_name: the study in the storage (``STUDY_NAME`` in a run folder's own ``study.db``).
        sole_writer: this process is the study's only writer (a search's driver): its trials are read
            from the database once and then served from memory (``sole_writer.SoleWriterStorage``).

    Raises:
        ConfigError: the URL names no database autoprune can open (unknown scheme, missing driver), or
            ``create=False`` and a database holds no study ``study_name`` (the message lists those it holds).
        StorageError: the database cannot be opened or read (corrupt, truncated, unreachable, holds no study).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with study_errors(storage_url, source):
        rdb = open_storage(storage_url)
        storage: optuna.storages.BaseStorage = rdb
        if sole_writer:
            from autoprune.search.sole_writer import SoleWriterStorage

            storage = SoleWriterStorage(rdb)
        if create:
            return optuna.create_study(storage=storage, study_name=study_name, directions=list(directions),
                                       sampler=sampler, load_if_exists=True)
        names = [s.study_name for s in rdb.get_all_studies()]
        if study_name not in names:
            if storage_url.startswith("sqlite"):
                raise StorageError(f"{_source(storage_url, source)}: holds no autoprune study (`{study_name}`); is "
                                   "it the study.db of an autoprune run?")
            raise ConfigError(f"{_source(storage_url, source)}: no study `{study_name}`; studies there: "
                              f"{', '.join(sorted(names)) or 'none'}")
        return optuna.load_study(storage=storage, study_name=study_name, sampler=sampler)


def _source(storage_url: str, source: str | None) -> str:
    if source is not None:
        return source
    prefix = "sqlite:///"
    return storage_url[len(prefix):] if storage_url.startswith(prefix) else public_url(storage_url)


def _short(err: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's background link."""
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


@contextmanager
def study_errors(storage_url: str, source: str | None = None) -> Iterator[None]:
    """Turn what a bad or broken study storage raises into one-line errors naming it (never its password)."""
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
        hint = ("pip install 'autoprune[postgres]' (psycopg2-binary)" if storage_url.startswith("postgres")
                else "install the SQLAlchemy driver this URL names")
        raise ConfigError(f"{where}: the database driver is not installed ({err}); {hint}, or use "
                          "sqlite:///PATH") from None
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


def public_url(storage_url: str) -> str:
    """``storage_url`` without its password (safe to print and to keep in a run folder)."""
    try:
        from sqlalchemy.engine import make_url

        url = make_url(storage_url)
    except Exception:  # not a URL SQLAlchemy can parse: opening it says so
        return storage_url.split("@")[-1]
    # URL.set(password=None) keeps the password; the URL is a named tuple
    return url._replace(password=None).render_as_string(hide_password=False) if url.password else storage_url


def open_storage(storage_url: str) -> optuna.storages.RDBStorage:
    """The RDB storage at ``storage_url`` (errors as SQLAlchemy raises them: wrap the call in ``study_errors``).

    A database server's storage is opened once per URL and process (each opens a connection pool
    and checks the schema); a SQLite file is opened each time (a test or user may replace it).
    """
    if storage_url.startswith("sqlite"):
        return _storage(storage_url)
    return _server_storage(storage_url)


@functools.lru_cache(maxsize=16)
def _server_storage(storage_url: str) -> optuna.storages.RDBStorage:
    return _storage(storage_url)


def _storage(storage_url: str) -> optuna.storages.RDBStorage:
    """The RDB storage; SQLite in WAL mode without an fsync per commit.

    Optuna commits once per suggested parameter, so the default rollback journal with an fsync
    per commit cost ~10 ms each here, over 100 ms per trial. WAL with ``synchronous=NORMAL``
    stays consistent and loses nothing when the process is killed (only an OS crash or power
    loss can drop the last commits, which a resume re-runs).
    """
    storage = _create_storage(storage_url)
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


def _create_storage(storage_url: str) -> optuna.storages.RDBStorage:
    """``RDBStorage(storage_url)``, retried when another process created the schema at the same moment
    (two searches starting on an empty team database race in PostgreSQL's catalog)."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    url = _with_installed_driver(storage_url)
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, ProgrammingError):
            if attempt == 2:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def _with_installed_driver(storage_url: str) -> str:
    """A plain ``postgresql://`` URL with the PostgreSQL driver that is installed.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; the ``postgres`` extra installs psycopg2
    (``psycopg2-binary``), so a URL that names no driver uses whichever of the two is present.
    """
    import importlib.util

    scheme, sep, rest = storage_url.partition("://")
    if scheme not in ("postgresql", "postgres") or not sep or importlib.util.find_spec("psycopg") is not None:
        return storage_url
    return f"postgresql+psycopg2://{rest}" if importlib.util.find_spec("psycopg2") is not None else storage_url


def flush_writes(study: optuna.Study) -> None:
    """Store what the study's storage still holds back: a driver's storage (``SoleWriterStorage``) batches a
    running trial's parameters and attributes until its state changes or this call; other storages write at once."""
    flush = getattr(study._storage, "flush", None)  # Optuna keeps a study's storage private
    if flush is not None:
        flush()


def run_attrs(study: optuna.Study) -> dict[str, Any]:
    """The run's files kept in the study (``RUN_ATTRS``), those it holds."""
    attrs = study.user_attrs
    return {key: attrs[key] for key in RUN_ATTRS if key in attrs}


def records_of(trials: Iterable[optuna.trial.FrozenTrial]) -> list[TrialRecord]:
    """The records of the finished ones among ``trials``, by trial number."""
    out = [TrialRecord.from_dict(t.user_attrs[RECORD_ATTR]) for t in trials if RECORD_ATTR in t.user_attrs]
    return sorted(out, key=lambda r: r.number)


def finished_records(study: optuna.Study) -> list[TrialRecord]:
    """Records of every finished trial of ``study``, by trial number."""
    return records_of(study.get_trials(deepcopy=False))
