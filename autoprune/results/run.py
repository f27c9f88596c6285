"""A run folder: what a search writes into it and how it is read back.

Layout (see results/README.md): ``config.json`` (resolved), ``environment.json`` (versions,
machine fingerprint, seed), ``dense.json`` (the dense reference), ``study.db`` (every trial,
records in user attributes), ``trials/NNNN/`` (plan + pruner settings + state_dict),
``pareto.json``. Everything is written atomically, by the driver's process only.

A run whose study lives in a database (``--storage URL``, e.g. a team PostgreSQL) records where
in ``storage.json`` (the URL without its password, and the study name: ``--study``, by default
the folder's name). The study then also holds ``config``/``environment``/``dense`` (study user
attributes) and every saved candidate (``results/artifacts.py``), so the database alone resumes,
reports, picks and exports the run: a fresh folder given the same ``--storage``/``--study`` is
filled from it.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.config import OBJECTIVES, SearchConfig, search_config_from_dict
from autoprune.environment import library_versions, machine_fingerprint
from autoprune.errors import ConfigError
from autoprune.execution.outcomes import Candidate
from autoprune.files import atomic_write_bytes, atomic_write_json, check_writable_folder, read_json
from autoprune.plan import PruningPlan
from autoprune.pruning.saving import save_pruned
from autoprune.records import DenseReference, TrialRecord
from autoprune.results.pareto_file import write_pareto
from autoprune.search.objectives import Scoring
from autoprune.search.study import (
    RUN_ATTRS,
    STUDY_NAME,
    finished_records,
    open_study,
    public_url,
    run_attrs,
    study_errors,
)

if TYPE_CHECKING:
    import optuna

#: fields that must match for a run folder to be resumed with a new command
IDENTITY_FIELDS = ("task", "data", "model_weights", "input_size", "agent", "seed", "objectives", "profile", "space")


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run, and its writers.

    ``storage``/``study``: the study database this session was given (``--storage``/``--study``);
    None: the one ``storage.json`` names, else the folder's own ``study.db``.
    """

    path: Path
    storage: str | None = field(default=None, kw_only=True)
    study: str | None = field(default=None, kw_only=True)

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

    def trial_folder(self, number: int) -> Path:
        """Where trial ``number``'s candidate is saved (plan.json + model.pt, inside the run)."""
        return self.trials / f"{number:04d}"

    def trial_onnx(self, number: int, precision: str) -> Path:
        """Where a quantized trial's ONNX file (the model that ships) is saved."""
        return self.trial_folder(number) / f"model.{precision}.onnx"

    def trial_weights(self, number: int) -> Path:
        return self.trial_folder(number) / "model.pt"

    @property
    def storage_file(self) -> Path:
        return self.path / "storage.json"

    def _saved_location(self) -> dict[str, str]:
        if not self.storage_file.is_file():
            return {}
        data = read_json(self.storage_file, "the run's study database (url, study)")
        if not (isinstance(data, dict) and isinstance(data.get("url"), str) and isinstance(data.get("study"), str)):
            raise ConfigError(f"{self.storage_file}: expected {{\"url\": ..., \"study\": ...}}; delete it and give "
                              "--storage and --study")
        return data

    def local_storage_url(self) -> str:
        return f"sqlite:///{self.study_db.resolve()}"

    def storage_url(self) -> str:
        """The study's storage: ``--storage``, else the one ``storage.json`` names, else ``study.db``."""
        return self.storage or self._saved_location().get("url") or self.local_storage_url()

    def study_name(self) -> str:
        """``--study``, else ``storage.json``'s, else the folder's name in a database (``autoprune`` in study.db)."""
        if self.study:
            return self.study
        saved = self._saved_location()
        if saved and (self.storage is None or public_url(self.storage) == saved.get("url")):
            return saved["study"]
        return self.path.resolve().name if self.in_database else STUDY_NAME

    @property
    def in_database(self) -> bool:
        """Whether the study lives in a database outside the folder (a team database)."""
        return self.storage_url() != self.local_storage_url()

    def study_source(self) -> str:
        """How messages name the study's storage: ``--storage URL`` (without its password) as given, the URL
        ``storage.json`` names, or the ``study.db`` path."""
        if self.storage:
            return f"--storage {public_url(self.storage)}"
        return public_url(self.storage_url()) if self.in_database else str(self.study_db)

    def open_study(self, directions: list[str], *, create: bool = True, sole_writer: bool = False) -> optuna.Study:
        """The run's study (``search.study.open_study`` at this run's storage and study name; ``sole_writer``:
        this process runs the search, the study's only writer)."""
        return open_study(self.storage_url(), directions, create=create, study_name=self.study_name(),
                          source=self.study_source(), sole_writer=sole_writer)

    def bind(self, directions: list[str] | None = None) -> None:
        """For a study in a database: record where (``storage.json``) and fill the folder from the study.

        ``directions``: create the study when missing (a search); None: it must exist (a reader).
        Files the folder lacks (``config.json``, ``environment.json``, ``dense.json``) are written from
        the study's attributes; nothing happens for a folder's own ``study.db``.
        """
        if not self.in_database:
            return
        study = self.open_study(directions or [], create=directions is not None)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.storage_file, {"url": public_url(self.storage_url()), "study": self.study_name()})
        for key, value in run_attrs(study).items():
            if not (self.path / f"{key}.json").is_file():
                atomic_write_json(self.path / f"{key}.json", value)

    def _publish(self, key: str, value: Any) -> None:
        """Keep ``key``'s file in the study too (a database run only)."""
        assert key in RUN_ATTRS
        if self.in_database:
            self.open_study([], create=False).set_user_attr(key, value)

    def ensure_trial_files(self, number: int) -> Path:
        """Trial ``number``'s saved candidate folder, fetched from the database when the folder lacks it."""
        folder = self.trial_folder(number)
        if self.in_database and not (folder / "model.pt").is_file():
            from autoprune.results.artifacts import fetch_trial_files

            fetch_trial_files(self.storage_url(), self.study_name(), number, folder)
        return folder

    @classmethod
    def existing(cls, path: str | Path, *, storage: str | None = None, study: str | None = None) -> RunFolder:
        """An existing run: a folder, or (``storage``) a study in a database, which fills ``path``.

        Raises:
            ConfigError: ``path`` is not a run folder, or the database holds no such study.
        """
        run = cls(Path(path), storage=storage, study=study)
        if run.in_database:
            run.bind()
            if not run.config.is_file():
                raise ConfigError(f"{public_url(run.storage_url())}: study `{run.study_name()}` holds no run "
                                  "(no config); give the --study of a search")
            return run
        if not run.config.is_file() or not run.study_db.is_file():
            raise ConfigError(f"{path}: not a run folder (no config.json and study.db); "
                              "give the --out folder of a finished or running search, or --storage and --study")
        return run

    def check_resumable(self, config: SearchConfig) -> None:
        """ConfigError when the folder holds a search with other identity fields (``IDENTITY_FIELDS``)."""
        if not self.config.is_file():
            return
        # both read back the same way, so a record written by an older autoprune compares by meaning
        saved = _plain(self.read_config().to_dict())
        current = _plain(config.to_dict())
        for data in (saved, current):  # where a device is measured from is placement, not the search's identity
            data["profile"].pop("ray_resource", None)
        where = (f"study `{self.study_name()}` in {public_url(self.storage_url())}" if self.in_database
                 else str(self.path))
        for key in IDENTITY_FIELDS:
            if saved.get(key) != current.get(key):
                raise ConfigError(f"{where}: holds a search with a different `{key}`; resume it with the same "
                                  f"settings or choose another --out" + (" or --study" if self.in_database else ""))

    def read_config(self) -> SearchConfig:
        """The resolved config a search recorded here; ConfigError naming ``config.json`` when it is damaged."""
        data = read_json(self.config, "the resolved search config autoprune wrote")
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config}: not a search config (a JSON object was expected, got "
                              f"{type(data).__name__})")
        return search_config_from_dict(data, str(self.config))

    def check_writable(self) -> None:
        """Before any work: the folder is, or can be created as, a folder this process can write into."""
        check_writable_folder(self.path)

    def start(self, config: SearchConfig) -> None:
        """Create the folder and record the resolved config, library versions, machine and seed."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config, config.to_dict())
        environment = {"versions": library_versions(), "machine": machine_fingerprint(), "seed": config.seed}
        atomic_write_json(self.environment, environment)
        self._publish("config", config.to_dict())
        self._publish("environment", environment)

    def read_dense(self) -> DenseReference | None:
        """The dense reference an earlier session measured, if any (a resumed run keeps it)."""
        if not self.dense.is_file():
            return None
        data = read_json(self.dense, "the dense model's reference measurement")
        try:
            return DenseReference.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ConfigError(f"{self.dense}: not a dense reference ({type(err).__name__}: {err}); delete it to "
                              "measure the dense model again") from None

    def write_dense(self, dense: DenseReference) -> None:
        atomic_write_json(self.dense, dense.to_dict())
        self._publish("dense", dense.to_dict())


class RunSetup:
    """Guards the set-up of a search session (folder, config, study, dense model, feasibility check).

    A *fresh* run (no ``config.json`` before) that fails before ``commit()`` -- a constraint no
    plan can meet, an objective the profile does not measure, Ctrl-C while the dense model is
    measured -- removes everything the session created in the folder (and a new SQLite ``--storage``
    file), so the corrected command on the same ``--out`` starts clean. A resumed run is left as it was.
    """

    def __init__(self, run: RunFolder, storage: str | None = None) -> None:
        self.run = run
        self.existed = run.path.is_dir()
        self.before = {p.name for p in run.path.iterdir()} if self.existed else set()
        self.fresh = not run.config.is_file()
        self.new_files: list[Path] = []
        prefix = "sqlite:///"
        if storage and storage.startswith(prefix) and not Path(storage[len(prefix):]).exists():
            db = Path(storage[len(prefix):])
            self.new_files = [db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))]
        self.committed = False

    def commit(self) -> None:
        """The session got past its checks: from now on the folder holds a run worth resuming."""
        self.committed = True

    def __enter__(self) -> RunSetup:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if kind is None or self.committed or not self.fresh:
            return False
        import shutil

        for path in self.new_files:
            path.unlink(missing_ok=True)
        if not self.existed:
            shutil.rmtree(self.run.path, ignore_errors=True)
        elif self.run.path.is_dir():
            for entry in self.run.path.iterdir():
                if entry.name not in self.before:
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        return False


def _plain(data: dict[str, Any]) -> Any:
    """``data`` as JSON holds it (tuples as lists)."""
    return json.loads(json.dumps(data))


@dataclass(frozen=True, kw_only=True)
class RunWriter:
    """The driver's ``RunSink`` for a run folder: saves candidates and keeps ``pareto.json`` current."""

    run: RunFolder
    config: SearchConfig
    dense: DenseReference
    #: what screened the candidates (``pareto_file.screening_info``)
    screening: dict[str, Any]

    def save_candidate(self, candidate: Candidate) -> TrialRecord:
        record = candidate.record
        if candidate.weights is None:  # a formula stood in for the model (benchmarks, tests): nothing to save
            return record
        path = save_pruned(self.run.trial_folder(record.number), PruningPlan.from_dict(record.plan),
                           candidate.weights, settings=self.config.pruner, channels=record.channels,
                           sparsity=candidate.sparsity)
        if candidate.onnx is not None:
            onnx = atomic_write_bytes(self.run.trial_onnx(record.number, record.precision), candidate.onnx)
            record = dataclasses.replace(record, quantization={**record.quantization, "onnx_path": str(onnx)})
        if self.run.in_database:
            from autoprune.results.artifacts import put_trial_files

            put_trial_files(self.run.storage_url(), self.run.study_name(), record.number, path.parent)
        return dataclasses.replace(record, model_path=str(path))

    def trials_finished(self, records: Sequence[TrialRecord]) -> None:
        write_pareto(self.run.pareto, self.config, self.dense, records, self.screening)


@dataclass(frozen=True, kw_only=True)
class RunData:
    """Everything a finished (or running) search left, read back for reports, pick and export."""

    run: RunFolder
    config: SearchConfig
    dense: DenseReference
    environment: dict[str, Any]
    records: list[TrialRecord]
    front: list[TrialRecord]

    @property
    def scoring(self) -> Scoring:
        return Scoring.from_config(self.config, self.dense)

    def record(self, number: int) -> TrialRecord:
        """The record of trial ``number``; ConfigError naming the finished trials otherwise."""
        for r in self.records:
            if r.number == number:
                return r
        raise ConfigError(f"{self.run.path}: no finished trial {number}; finished trials: "
                          f"{', '.join(str(r.number) for r in self.records) or 'none'}")

    def on_front(self, number: int) -> bool:
        return any(r.number == number for r in self.front)


def load_run(path: str | Path, *, storage: str | None = None, study: str | None = None) -> RunData:
    """Read a run folder: its config, dense reference, every finished trial and the Pareto front.

    The front is recomputed from the study (the source of truth), not read from pareto.json. With
    ``storage`` (and ``study``), the run is read from that database and ``path`` filled from it.

    Raises:
        ConfigError: ``path`` is not a run folder (or the database holds no such study), or it holds
            no dense reference yet.
    """
    run = RunFolder.existing(path, storage=storage, study=study)
    config = run.read_config()
    dense = run.read_dense()
    if dense is None:
        raise ConfigError(f"{path}: the search has not measured the dense model yet (no dense.json)")
    environment = read_json(run.environment, "library versions and the machine") if run.environment.is_file() else {}
    study = run.open_study([OBJECTIVES[o] for o in config.objectives], create=False)
    with study_errors(run.storage_url(), run.study_source()):
        records = finished_records(study)
    return RunData(run=run, config=config, dense=dense, environment=environment, records=records,
                   front=Scoring.from_config(config, dense).front(records))
