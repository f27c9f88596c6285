"""A trial's saved files (``plan.json``, ``model.pt``) kept in a team study database beside its study.

A run whose study lives in a database server (``--storage postgresql://...``) must be readable
from that database alone: another machine, or a fresh run folder, reports, picks and exports
from it. Optuna's tables hold plans and records; the candidates' weights go in one more table,
``autoprune_artifacts`` (study name, trial number, file name, bytes), written by the driver
when it saves a candidate and read back into the run folder when a command needs the files.
A run folder's own ``study.db`` keeps no copy: its files are beside it.
"""
from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from autoprune.files import atomic_write_bytes
from autoprune.search.study import open_storage

if TYPE_CHECKING:
    import sqlalchemy

TABLE = "autoprune_artifacts"


@lru_cache(maxsize=16)
def _table(storage_url: str) -> tuple[sqlalchemy.Engine, sqlalchemy.Table]:
    """The engine of the study's storage and the artifacts table (created when missing)."""
    import sqlalchemy as sa
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    engine = open_storage(storage_url).engine
    metadata = sa.MetaData()
    table = sa.Table(TABLE, metadata,
                     sa.Column("study", sa.String(512), primary_key=True),
                     sa.Column("trial", sa.Integer, primary_key=True),
                     sa.Column("name", sa.String(255), primary_key=True),
                     sa.Column("data", sa.LargeBinary, nullable=False))
    for attempt in range(3):
        try:
            metadata.create_all(engine, checkfirst=True)
            break
        except (IntegrityError, ProgrammingError):  # another search created it at the same moment
            if attempt == 2:
                raise
            time.sleep(0.2)
    return engine, table


def put_trial_files(storage_url: str, study: str, trial: int, folder: Path) -> None:
    """Store every file of ``folder`` (a trial's saved candidate) for ``study``'s trial ``trial``."""
    import sqlalchemy as sa

    engine, table = _table(storage_url)
    rows = [{"study": study, "trial": trial, "name": f.name, "data": f.read_bytes()}
            for f in sorted(folder.iterdir()) if f.is_file()]
    with engine.begin() as con:  # one transaction: a reader sees all of a trial's files or none
        con.execute(sa.delete(table).where(table.c.study == study, table.c.trial == trial))
        if rows:
            con.execute(sa.insert(table), rows)


def fetch_trial_files(storage_url: str, study: str, trial: int, folder: Path) -> list[Path]:
    """Write the stored files of ``study``'s trial ``trial`` into ``folder``; return them (none stored: [])."""
    import sqlalchemy as sa

    engine, table = _table(storage_url)
    with engine.connect() as con:
        rows = con.execute(sa.select(table.c.name, table.c.data)
                           .where(table.c.study == study, table.c.trial == trial)).all()
    return [atomic_write_bytes(folder / name, bytes(data)) for name, data in rows]
