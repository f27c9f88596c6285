"""The study storage of a search's driver: the only writer of its study, so it reads the database once
and writes each trial in a few transactions.

Optuna's ``_CachedStorage`` (what an RDB study gets by default) keeps finished trials in memory but
re-reads every *unfinished* trial from the database on each ``get_all_trials``, i.e. on every
``study.ask`` and every sampler call, and reads a running trial again on every ``tell`` and
``set_constraint``; and every parameter and attribute is its own transaction (about 2 ms each
on SQLite here and 7-10 ms on a PostgreSQL server, most of it client-side SQLAlchemy work). A
trial cost the driver 38-104 ms, on its only thread, while finished workers waited to be refilled
(``bench/scale.py``).

A search's study has exactly one writer, its driver (workers return results and never touch the
study; every search is its own study). So this storage reads a study's trials from the database
once and then serves every read from memory. Writes of a running trial's parameters and
attributes are applied in memory at once and kept pending; they reach the database in one
transaction at the next ``flush()`` or together with the trial's next state change (``tell``),
the order Optuna's own cache guarantees (a trial's attributes are stored before its state).
The driver flushes after each round of proposals, so a killed driver leaves each started trial
with its parameters (a resume re-runs its plan) and each finished one complete. Readers in other
processes (``report``, ``pick``, optuna-dashboard) see the database. Open a study with it only
where this process is that study's only writer (``open_study(..., sole_writer=True)``).
"""
from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, check_distribution_compatibility, distribution_to_json
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState


@dataclass
class _Pending:
    """A running trial's writes that have not reached the database yet (the last value of each key)."""

    params: dict[str, tuple[float, BaseDistribution]] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)


class SoleWriterStorage(_CachedStorage):
    """An RDB storage whose trials, once read, live in memory; a running trial's writes are batched."""

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._loaded: set[int] = set()  # studies whose trials were read from the database
        self._pending: dict[int, _Pending] = {}  # trial id -> writes not yet in the database

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        if study_id not in self._loaded:
            self._read_trials_from_remote_storage(study_id)  # every trial the database holds, once
            self._loaded.add(study_id)
        with self._lock:
            trials = sorted((t for t in self._studies[study_id].trials.values() if states is None or t.state in states),
                            key=lambda t: t.number)
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            trial = self._known(trial_id)
        if trial is None:
            return self._backend.get_trial(trial_id)
        # a running trial's copy: ``optuna.Trial`` updates the frozen trial it holds in place
        return trial if trial.state.is_finished() else copy.deepcopy(trial)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        with self._lock:
            study = self._studies[self._trial_id_to_study_id_and_number[trial_id][0]]
            known = study.param_distribution.get(param_name) or next(
                (t.distributions[param_name] for t in study.trials.values() if param_name in t.distributions), None)
            if known is not None:
                check_distribution_compatibility(known, distribution)
            study.param_distribution[param_name] = distribution
            self._pending_of(trial_id).params[param_name] = (param_value_internal, distribution)
        value = distribution.to_external_repr(param_value_internal)

        def update(trial: FrozenTrial) -> None:
            trial.params = {**trial.params, param_name: value}
            trial.distributions = {**trial.distributions, param_name: distribution}

        self._mirror(trial_id, update)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        stored = _as_stored(value)
        with self._lock:
            self._pending_of(trial_id).user_attrs[key] = stored
        self._mirror(trial_id, lambda t: setattr(t, "user_attrs", {**t.user_attrs, key: stored}))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        stored = _as_stored(value)
        with self._lock:
            self._pending_of(trial_id).system_attrs[key] = stored
        self._mirror(trial_id, lambda t: setattr(t, "system_attrs", {**t.system_attrs, key: stored}))

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        self._mirror(trial_id, lambda t: setattr(t, "intermediate_values",
                                                 {**t.intermediate_values, step: intermediate_value}))

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        """Change a trial's state; a finished state is written with every pending write in one transaction."""
        if not state.is_finished():  # WAITING -> RUNNING (an enqueued trial popped): Optuna's own check-and-set
            self.flush()
            changed = super().set_trial_state_values(trial_id, state, values)
        else:
            self._write_pending(finish=(trial_id, state, values))
            changed = True
        if changed:
            now = datetime.datetime.now()
            self._mirror(trial_id, lambda t: _set_state(t, state, values, now))
        return changed

    def flush(self) -> None:
        """Write every pending parameter and attribute to the database, in one transaction."""
        self._write_pending()

    def _write_pending(self, finish: tuple[int, TrialState, Sequence[float] | None] | None = None) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending and finish is None:
            return
        try:
            with _create_scoped_session(self._backend.scoped_session) as session:
                rows = {trial_id: _write(session, trial_id, writes) for trial_id, writes in pending.items()}
                if finish is not None:
                    trial_id, state, values = finish
                    row = rows[trial_id] if trial_id in rows else _updatable(session, trial_id)
                    _finish(session, row, state, values)
        except BaseException:
            with self._lock:  # kept for the next try: nothing a caller was told is stored may be dropped
                self._pending = {**pending, **self._pending}
            raise

    def _pending_of(self, trial_id: int) -> _Pending:
        """The trial's pending writes (call with the lock held); UpdateFinishedTrialError once it has finished,
        at the write as every Optuna storage raises it, not at the flush."""
        trial = self._known(trial_id)
        if trial is not None and trial.state.is_finished():
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"Trial#{trial.number} has already finished and can not be updated.")
        return self._pending.setdefault(trial_id, _Pending())

    def _known(self, trial_id: int) -> FrozenTrial | None:
        """The trial as this storage holds it (call with the lock held), or None."""
        where = self._trial_id_to_study_id_and_number.get(trial_id)
        return None if where is None else self._studies[where[0]].trials[where[1]]

    def _mirror(self, trial_id: int, update: Callable[[FrozenTrial], Any]) -> None:
        """Apply a write to a copy of the trial held in memory (lists handed out earlier stay as they were)."""
        with self._lock:
            trial = self._known(trial_id)
            if trial is None:
                return
            trial = copy.copy(trial)
            update(trial)
            self._studies[self._trial_id_to_study_id_and_number[trial_id][0]].trials[trial.number] = trial


def _as_stored(value: Any) -> Any:
    """``value`` as the database gives it back (attributes are stored as JSON: tuples become lists)."""
    return json.loads(json.dumps(value))


def _set_state(trial: FrozenTrial, state: TrialState, values: Sequence[float] | None, now: datetime.datetime) -> None:
    if state == TrialState.RUNNING and trial.datetime_start is None:
        trial.datetime_start = now
    if state.is_finished():
        trial.datetime_complete = now
    trial.state = state
    if values is not None:
        trial.values = [float(v) for v in values]


def _updatable(session: Any, trial_id: int) -> models.TrialModel:
    """The trial's row, locked; UpdateFinishedTrialError when it has finished (as every Optuna storage write checks)."""
    trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
    if trial.state.is_finished():
        raise optuna.exceptions.UpdateFinishedTrialError(
            f"Trial#{trial.number} has already finished and can not be updated.")
    return trial


def _write(session: Any, trial_id: int, writes: _Pending) -> models.TrialModel:
    """A running trial's pending parameters and attributes, as Optuna's RDB schema stores them; returns its
    locked row (a finish in the same transaction reuses it)."""
    trial = _updatable(session, trial_id)
    session.add_all(models.TrialParamModel(trial_id=trial_id, param_name=name, param_value=value,
                                           distribution_json=distribution_to_json(distribution))
                    for name, (value, distribution) in writes.params.items())
    for model, attrs in ((models.TrialUserAttributeModel, writes.user_attrs),
                         (models.TrialSystemAttributeModel, writes.system_attrs)):
        if attrs:  # an attribute written again replaces its row
            session.query(model).filter(model.trial_id == trial_id, model.key.in_(list(attrs))).delete(
                synchronize_session=False)
            session.add_all(model(trial_id=trial_id, key=key, value_json=json.dumps(value))
                            for key, value in attrs.items())
    return trial


def _finish(session: Any, trial: models.TrialModel, state: TrialState, values: Sequence[float] | None) -> None:
    """A trial's final state and objective values on its locked row (what ``RDBStorage.set_trial_state_values``
    writes)."""
    for objective, value in enumerate(values or []):
        stored, value_type = models.TrialValueModel.value_to_stored_repr(float(value))
        session.add(models.TrialValueModel(trial_id=trial.trial_id, objective=objective, value=stored,
                                           value_type=value_type))
    trial.state = state
    trial.datetime_complete = datetime.datetime.now()
