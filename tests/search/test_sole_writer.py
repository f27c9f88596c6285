"""The driver's study storage: what it holds in memory is what the database holds once flushed, on SQLite
and on a real PostgreSQL server; a running trial's writes reach the database at a flush or with its state."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from autoprune.search.study import flush_writes, open_storage, open_study
from tests.postgres import server_or_skip

DIRECTIONS = ["maximize", "minimize"]
SPACE = {"ratio/a": FloatDistribution(0.0, 0.9, step=0.1), "ratio/b": FloatDistribution(0.0, 0.9, step=0.1),
         "structure/a": CategoricalDistribution(["channel", "unstructured"]), "keep": IntDistribution(1, 4)}


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'study.db'}"
        return
    with server_or_skip() as url:
        yield url


def _fresh(url: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials as a reader in another process sees them: a fresh Optuna cache on the database."""
    return optuna.load_study(storage=open_storage(url), study_name="s").get_trials(deepcopy=False)


def _content(trial: optuna.trial.FrozenTrial) -> tuple:
    return (trial.number, trial.state, trial.values, trial.params, trial.distributions, trial.user_attrs,
            trial.system_attrs)


@pytest.mark.parametrize("sampler", [optuna.samplers.NSGAIISampler, optuna.samplers.TPESampler])
def test_a_fresh_reader_sees_exactly_what_the_sole_writer_holds(storage_url: str, sampler) -> None:
    study = open_study(storage_url, DIRECTIONS, sampler(seed=0), study_name="s", sole_writer=True)
    study.enqueue_trial({"ratio/a": 0.5, "ratio/b": 0.5, "structure/a": "channel", "keep": 2})
    for n in range(12):
        trial = study.ask(SPACE)
        assert n > 0 or trial.params["ratio/a"] == 0.5  # the enqueued trial is popped first
        trial.set_constraint("latency", trial.params["ratio/b"] - 0.5)
        trial.set_user_attr("record", {"number": n, "plan": (1, 2)})
        trial.set_user_attr("record", {"number": n, "plan": (3, 4)})  # written again: replaced, stored as JSON
        if n % 5 == 4:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif n % 5 == 3:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif n < 11:
            study.tell(trial, [1.0 - trial.params["ratio/a"], trial.params["keep"] + trial.params["ratio/b"]])
    flush_writes(study)

    mine, theirs = study.get_trials(deepcopy=False), _fresh(storage_url)
    assert [_content(t) for t in mine] == [_content(t) for t in theirs]
    assert theirs[-1].state == optuna.trial.TrialState.RUNNING and theirs[-1].params  # flushed, not told
    assert theirs[0].user_attrs["record"] == {"number": 0, "plan": [3, 4]}
    assert theirs[0].constraints == {"latency": 0.0}
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in theirs) == 7


def test_a_running_trial_reaches_the_database_at_a_flush_or_with_its_state(storage_url: str) -> None:
    study = open_study(storage_url, DIRECTIONS, optuna.samplers.RandomSampler(seed=0), study_name="s",
                       sole_writer=True)
    first = study.ask(SPACE)
    first.set_user_attr("note", "a")
    [held] = _fresh(storage_url)
    assert held.params == {} and held.user_attrs == {}  # pending: nothing written yet
    flush_writes(study)
    [held] = _fresh(storage_url)
    assert held.params == first.params and held.user_attrs == {"note": "a"}

    second = study.ask(SPACE)
    second.set_user_attr("note", "b")
    study.tell(second, [0.5, 1.0])  # its writes and its state in one transaction
    told = _fresh(storage_url)[1]
    assert told.state == optuna.trial.TrialState.COMPLETE and told.values == [0.5, 1.0]
    assert told.params == second.params and told.user_attrs == {"note": "b"}
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study._storage.set_trial_user_attr(second._trial_id, "late", 1)


def test_a_second_session_reads_the_study_back_from_the_database(storage_url: str) -> None:
    study = open_study(storage_url, DIRECTIONS, optuna.samplers.RandomSampler(seed=0), study_name="s",
                       sole_writer=True)
    for _ in range(3):
        trial = study.ask(SPACE)
        study.tell(trial, [0.1, 0.2])
    again = open_study(storage_url, DIRECTIONS, optuna.samplers.RandomSampler(seed=1), study_name="s",
                       sole_writer=True)
    assert [_content(t) for t in again.get_trials()] == [_content(t) for t in study.get_trials()]
    assert again.ask(SPACE).number == 3
