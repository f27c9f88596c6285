"""Pareto fronts, hypervolume, scoring and proxy statistics against hand-computed values."""
from __future__ import annotations

import pytest

from autoprune.config import SearchConfig, SearchSpace
from autoprune.records import DenseReference, TrialRecord, TrialState
from autoprune.search.fidelity import promotion_refusal, spearman
from autoprune.search.objectives import Scoring
from autoprune.search.pareto import hypervolume, pareto_front
from autoprune.testing.fakes import stats


def test_pareto_front_hand_computed() -> None:
    points = [(0.9, 0.5), (0.8, 0.2), (0.85, 0.6), (0.5, 0.1), (0.7, 0.3)]  # (accuracy up, latency down)
    assert pareto_front(points, [True, False]) == [0, 1, 3]


def test_hypervolume_2d_hand_computed() -> None:
    # minimisation view: rectangles 0.5 x 0.9 + 0.3 x 0.8 + 0.1 x 0.5 = 0.74; the dominated point adds nothing
    points = [(0.9, 0.5), (0.8, 0.2), (0.5, 0.1), (0.7, 0.3)]
    assert hypervolume(points, [True, False], [0.0, 1.0]) == pytest.approx(0.74)
    assert hypervolume([(0.9, 1.5)], [True, False], [0.0, 1.0]) == 0.0  # beyond the reference
    assert hypervolume([], [True, False], [0.0, 1.0]) == 0.0


def test_hypervolume_3d_hand_computed() -> None:
    # boxes 1x1x1 and 2x0.5x0.5 overlapping in 1x0.5x0.5: 1 + 0.5 - 0.25
    points = [(1.0, 1.0, 1.0), (0.0, 1.5, 1.5)]
    assert hypervolume(points, [False, False, False], [2.0, 2.0, 2.0]) == pytest.approx(1.25)


def _record(n: int, acc: float, lat: float, params: int = 100, state: str = TrialState.COMPLETE,
            dup: int | None = None):
    return TrialRecord(number=n, plan={}, state=state, accuracy=acc if state == TrialState.COMPLETE else None,
                       latency=stats(lat), params=params, macs=10, duplicate_of=dup)


def _scoring(**kwargs) -> Scoring:
    from autoprune.config import HardwareProfile

    config = SearchConfig(task="t", profile=HardwareProfile(name="p", backend="torch"), space=SearchSpace(name="s"),
                          **kwargs)
    return Scoring.from_config(config, DenseReference(accuracy=0.95, latency=stats(2.0), params=200, macs=10,
                                                      groups=[]))


def test_scoring_front_and_hypervolume_use_feasible_trials_only() -> None:
    scoring = _scoring(max_latency_ms=1.5, min_accuracy=0.6, reference={"accuracy": 0.5})
    records = [_record(0, 0.9, 1.0), _record(1, 0.8, 0.4), _record(2, 0.95, 1.8),  # 2 too slow
               _record(3, 0.55, 0.2), _record(4, 0.9, 1.0, dup=0), _record(5, 0.99, 0.1, state=TrialState.REJECTED)]
    assert [r.number for r in scoring.front(records)] == [1, 0]  # sorted by latency
    assert scoring.violations(records[2]) == ["latency 1.800 ms > 1.5 ms"]
    assert scoring.constraint_values(records[3])[1] == pytest.approx(0.05)
    # normalised: (0.9, 0.5) and (0.8, 0.2) against (0.5, 1.0): 0.3 x 0.8 + 0.1 x 0.5
    assert scoring.hypervolume(records) == pytest.approx(0.29)


def test_a_trial_rejected_on_its_prediction_is_judged_by_it_and_never_feasible() -> None:
    scoring = _scoring(max_latency_ms=1.5)
    screened = TrialRecord(number=0, plan={}, state=TrialState.REJECTED, reason="predicted", predicted_ms=3.0,
                           params=100, macs=10)
    assert screened.screened_unmeasured and not scoring.feasible(screened) and not scoring.front([screened])
    assert scoring.constraint_values(screened) == [pytest.approx(1.0), 0.0, 0.0]  # 3.0 / 1.5 - 1: the samplers see it
    measured = TrialRecord(number=1, plan={}, state=TrialState.COMPLETE, accuracy=0.9, latency=stats(1.2, p90_ms=1.3),
                           predicted_ms=3.0, params=100, macs=10)
    assert scoring.constraint_values(measured)[0] == pytest.approx(1.2 / 1.5 - 1)  # a measurement wins
    assert scoring.hypervolume_history([screened, measured]) == [0.0, pytest.approx(scoring.hypervolume([measured]))]


def test_score_weights_and_penalties() -> None:
    scoring = _scoring(objectives=("accuracy", "latency", "params"), weights={"latency": 0.5}, max_params=150)
    ok = _record(0, 0.9, 1.0, params=100)
    assert scoring.score(ok) == pytest.approx(0.9 - 0.5 * 0.5 - 100 / 200)
    too_big = _record(1, 0.9, 1.0, params=180)
    assert scoring.score(too_big) < scoring.score(_record(2, 0.2, 1.0, params=100))  # infeasible ranks last
    assert scoring.score(_record(3, 0.0, 1.0, state=TrialState.REJECTED),
                         accuracy=0.9) == pytest.approx(scoring.score(ok))


def test_scoring_reference_defaults() -> None:
    scoring = _scoring(objectives=("accuracy", "latency_p90", "params"))
    assert scoring.reference == {"accuracy": 0.5, "latency_p90": 1.0, "params": 1.0}


def test_spearman_matches_scipy_with_ties() -> None:
    from scipy.stats import spearmanr

    xs, ys = [0.1, 0.4, 0.4, 0.9, 0.3, 0.7], [0.5, 0.6, 0.8, 0.95, 0.5, 0.7]
    assert spearman(xs, ys) == pytest.approx(spearmanr(xs, ys).statistic)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_promotion_keeps_the_top_share_by_proxy_at_equal_speedups() -> None:
    history = [(p, 2.0) for p in (0.1, 0.2, 0.3, 0.4, 0.5)]
    assert promotion_refusal((0.0, 2.0), history[:2], keep=0.5, warmup=3) == ""  # warm-up: everything promoted
    assert promotion_refusal((0.25, 2.0), history, keep=0.5, warmup=3).startswith("proxy 0.2500 at 2.00x: 3 of 5")
    assert promotion_refusal((0.3, 2.0), history, keep=0.5, warmup=3) == ""
    assert promotion_refusal((0.0, 2.0), history, keep=1.0, warmup=0) == ""


def test_promotion_judges_the_proxy_against_latency() -> None:
    """A fast candidate with a low proxy is promoted when nothing screened is both faster and better: ranked by
    proxy alone it would be refused, and the front would lose its fast end."""
    history = [(0.9, 1.2), (0.8, 1.5), (0.7, 1.8), (0.85, 1.3), (0.6, 1.6)]
    assert promotion_refusal((0.3, 4.0), history, keep=0.2, warmup=0) == ""
    assert promotion_refusal((0.5, 1.7), history, keep=0.2, warmup=0).startswith("proxy 0.5000 at 1.70x: 1 of 5")
    assert promotion_refusal((0.75, 1.4), history, keep=0.2, warmup=0).startswith("proxy 0.7500 at 1.40x: 1 of 5")
    assert promotion_refusal((0.95, 1.1), history, keep=0.2, warmup=0) == ""  # the best proxy yet, though slow

