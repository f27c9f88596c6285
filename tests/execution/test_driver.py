"""The driver's loop on formula executors: promotion from the fresh proxy history, every measurement a job."""
from __future__ import annotations

import dataclasses

import pytest

from autoprune.config import SearchConfig, SearchSpace
from autoprune.errors import ConfigError
from autoprune.execution.driver import Driver, Search
from autoprune.execution.executor import LocalExecutor
from autoprune.execution.jobs import DenseJob, Done, FinetuneJob, Job, ProbeJob, ScreenJob, TrialCostJob
from autoprune.plan import PruningPlan
from autoprune.records import TrialRecord, TrialState
from autoprune.results.search import run_search
from autoprune.search.agent import AgentContext, make_agent
from autoprune.testing.fakes import NullSink, fake_profile, stats
from autoprune.testing.toy import SCORING, FormulaExecutor, new_study, toy_space


def falling_accuracy(number: int, plan: PruningPlan) -> TrialRecord:
    """Each trial scores lower than the one before it."""
    return TrialRecord(number=number, plan=plan.to_dict(), state=TrialState.COMPLETE, accuracy=0.9 - 0.1 * number,
                       latency=stats(0.5), speedup=2.0, macs=1, params=1)


class Together(FormulaExecutor):
    """Two slots; ``wait`` finishes every job in flight at once (parallel trials that end together)."""

    slots = 2

    def wait(self) -> list[Done]:
        jobs, self._queue = list(self._queue), type(self._queue)()
        return [Done(job=job, result=self.result(job)) for job in jobs]


class Recording(FormulaExecutor):
    """A formula executor that keeps every job it was given, in order (``submitted``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.submitted: list[Job] = []

    def submit(self, job: Job) -> None:
        self.submitted.append(job)
        super().submit(job)


def _search(executor, **config) -> Search:
    space = toy_space()
    study = new_study()
    study.sampler = make_agent("random", AgentContext(space=space, seed=0, scoring=SCORING))
    settings = SearchConfig(task="toy", profile=fake_profile(), space=space.space, agent="random", **config)
    return Search(config=settings, study=study, space=space, scoring=SCORING, executor=executor)


def test_promotion_is_decided_on_every_proxy_so_far_including_candidates_still_fine_tuning() -> None:
    """Trials 0 and 1 are screened together; trial 0 is promoted (warm-up) and still fine-tuning when
    trial 1 is judged against it: a worker-side snapshot taken at submission would have held no proxy."""
    executor = Together(falling_accuracy)
    records = Driver(_search(executor, trials=2, proxy_keep=0.5, proxy_warmup=1), NullSink()).run()
    first, second = records
    assert first.state == TrialState.COMPLETE and first.accuracy == pytest.approx(0.9)
    assert second.state == TrialState.REJECTED and second.reason.startswith("proxy 0.8000 at 2.00x: 1 of 1 earlier")


def test_a_trial_is_a_screen_job_then_a_fine_tune_job() -> None:
    sink = NullSink()
    executor = Recording(falling_accuracy)
    records = Driver(_search(executor, trials=2), sink).run()
    assert [type(j) for j in executor.submitted] == [ScreenJob, FinetuneJob, ScreenJob, FinetuneJob]
    assert [r.number for r in sink.records] == [0, 1] == [r.number for r in records]


def test_the_feasibility_probe_and_the_dense_measurement_run_on_the_executor(tmp_path, tiny) -> None:
    from autoprune.execution.runner import TrialRunner
    from autoprune.hardware.meter import LatencyMeter

    profile = fake_profile()
    space = SearchSpace(name="t", min_channels=4)
    config = SearchConfig(task="tests.tiny_task:tiny_task", profile=profile, space=space, max_params=10, trials=2)
    dense = tiny.build_model()
    ran: list[type] = []

    class Recording(LocalExecutor):
        def wait(self) -> list[Done]:
            ran.append(type(self._queue[0]))
            return super().wait()

    runner = TrialRunner(task=config.trial_task(), config=config, dense=dense,
                         meter=LatencyMeter(profile, dense, tiny.example_input, cache=None))
    with pytest.raises(ConfigError, match="max_params 10 is below the smallest candidate"):
        run_search(config, tmp_path / "run", executor=Recording(runner))
    assert ran == [DenseJob, ProbeJob]


def test_a_duplicate_is_a_pruned_trial_in_the_study_marked_with_its_original() -> None:
    import optuna

    from autoprune.search.study import DUPLICATE_ATTR

    search = _search(FormulaExecutor(falling_accuracy), trials=1)
    [first] = Driver(search, NullSink()).run()
    search.study.enqueue_trial(search.study.trials[0].params)  # the agent proposes the same plan again
    again = Search(config=dataclasses.replace(search.config, trials=2), study=search.study, space=search.space,
                   scoring=search.scoring, executor=search.executor)
    records = Driver(again, NullSink()).run()
    assert records[1].duplicate_of == first.number and records[1].state == TrialState.COMPLETE
    trials = search.study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert trials[1].user_attrs[DUPLICATE_ATTR] == first.number
    assert [t.number for t in search.study.best_trials] == [first.number]  # one front point, as autoprune counts


def test_before_any_estimate_one_trial_runs_at_a_time_and_earlier_searches_give_the_estimate() -> None:
    import time

    from autoprune.execution.trials import TrialClock

    clock = TrialClock.of(time.time() + 60, [])
    assert clock.allows_another()
    clock.start(0)
    assert not clock.allows_another()  # the first trial measures the estimate: no second one beside it
    clock.finish(0)
    assert clock.estimate() is not None and clock.allows_another()  # it took ~0 s: time for more
    assert not TrialClock.of(time.time() + 60, [], prior=[120.0, 100.0, 90.0]).allows_another()  # none fits
    assert TrialClock.of(time.time() + 600, [], prior=[100.0]).allows_another()
    assert TrialClock.of(None, []).allows_another()
    assert not TrialClock.of(time.time() - 1, []).allows_another()


def test_a_deadline_search_with_nothing_to_go_by_times_a_trial_first_and_starts_none_that_cannot_fit() -> None:
    import time

    events: list[tuple] = []
    slow = Recording(falling_accuracy, trial_cost=100.0)
    assert Driver(_search(slow, trials=3), NullSink(), deadline=time.time() + 30,
                  on_event=lambda kind, payload: events.append((kind, payload))).run() == []
    assert [type(j) for j in slow.submitted] == [TrialCostJob]  # its one timed trial takes 100 s: none fits in 30
    assert ("trial_estimate", 100.0) in events
    fast = Recording(falling_accuracy, trial_cost=0.5)
    assert len(Driver(_search(fast, trials=3), NullSink(), deadline=time.time() + 30).run()) == 3
    assert type(fast.submitted[0]) is TrialCostJob
    known = Recording(falling_accuracy, trial_cost=100.0)  # earlier searches' durations: nothing to time
    run = Driver(_search(known, trials=2), NullSink(), deadline=time.time() + 30, prior_durations=[1.0]).run()
    assert len(run) == 2
    assert TrialCostJob not in {type(j) for j in known.submitted}
    unbounded = Recording(falling_accuracy, trial_cost=100.0)  # no deadline: nothing to time
    Driver(_search(unbounded, trials=2), NullSink()).run()
    assert TrialCostJob not in {type(j) for j in unbounded.submitted}


def test_trial_cost_times_a_trial_of_the_dense_model_scaled_to_the_whole_fine_tune(tiny) -> None:
    import time

    from autoprune.execution.runner import TrialRunner
    from autoprune.hardware.meter import LatencyMeter

    profile = fake_profile()
    config = SearchConfig(task="tests.tiny_task:tiny_task", profile=profile, space=SearchSpace(name="t"), trials=1,
                          min_speedup=0.0)
    dense = tiny.build_model()
    runner = TrialRunner(task=config.trial_task(), config=config, dense=dense,
                         meter=LatencyMeter(profile, dense, tiny.example_input, cache=None))
    estimate = runner.trial_cost()
    start = time.perf_counter()  # the real thing: a trial of the mildest plan (the dense model's size)
    screened = runner.screen(0, PruningPlan())
    assert screened.state == TrialState.SCREENED, screened.reason
    assert runner.finetune(screened).record.state == TrialState.COMPLETE
    actual = time.perf_counter() - start
    assert actual / 10 < estimate < actual * 10, (estimate, actual)
