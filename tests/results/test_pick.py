from __future__ import annotations

import pytest

from autoprune.errors import ConfigError
from autoprune.records import DenseReference, TrialRecord, TrialState
from autoprune.results.pick import choice_table, pick
from autoprune.search.pareto import knee_index
from autoprune.testing.fakes import stats


def rec(number: int, latency_ms: float, accuracy: float) -> TrialRecord:
    lat = stats(latency_ms)
    return TrialRecord(number=number, plan={}, state=TrialState.COMPLETE, accuracy=accuracy, latency=lat,
                       dense_latency=lat, speedup=2.0 / latency_ms, macs=1000 * number, params=100 * number)


# a concave front: accuracy saturates, trial 7 is where it bends
FRONT = [rec(3, 0.5, 0.60), rec(7, 1.0, 0.90), rec(1, 1.5, 0.93), rec(4, 2.0, 0.95), rec(9, 4.0, 0.96)]


@pytest.mark.parametrize("budget, expected", [(1.2, 7), (1.5, 1), (3.9, 4), (100.0, 9), (0.5, 3)])
def test_max_latency_picks_the_most_accurate_within_budget(budget: float, expected: int) -> None:
    choice = pick(FRONT, max_latency_ms=budget)
    assert choice.chosen.number == expected and choice.chosen.latency_ms <= budget


@pytest.mark.parametrize("target, expected", [(0.9, 7), (90, 7), (0.91, 1), (95.5, 9), (0.1, 3)])
def test_min_accuracy_picks_the_fastest_accurate_enough(target: float, expected: int) -> None:
    assert pick(FRONT, min_accuracy=target).chosen.number == expected


def test_knee_is_where_the_front_bends_and_neighbours_are_reported() -> None:
    choice = pick(list(reversed(FRONT)), knee=True)  # order of the input does not matter
    assert choice.chosen.number == 7 and choice.rule == "knee" and "farthest above the line" in choice.reason
    assert choice.faster.number == 3 and choice.slower.number == 1


def test_knee_of_a_convex_or_tiny_front_falls_back_to_the_ideal_corner() -> None:
    straight = [rec(1, 1.0, 0.5), rec(2, 2.0, 0.7), rec(3, 3.0, 0.9)]  # no point above the chord
    assert knee_index([(r.latency_ms, r.accuracy) for r in straight])[1].startswith("nearest the ideal corner")
    choice = pick([rec(5, 1.0, 0.9)], knee=True)
    assert choice.chosen.number == 5 and choice.faster is None and choice.slower is None


@pytest.mark.parametrize("kwargs, message", [
    ({"max_latency_ms": 0.4}, "no Pareto model within 0.4 ms; the fastest is trial 3"),
    ({"min_accuracy": 0.99}, "no Pareto model reaches 99.00% accuracy; the most accurate is trial 9"),
    ({}, "exactly one of"),
    ({"knee": True, "min_accuracy": 0.5}, "exactly one of"),
])
def test_impossible_or_ambiguous_requests_are_user_errors(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        pick(FRONT, **kwargs)
    with pytest.raises(ConfigError, match="front is empty"):
        pick([], knee=True)


def test_choice_table_shows_the_neighbours_numbers() -> None:
    from rich.console import Console

    dense = DenseReference(accuracy=0.97, latency=stats(5.0), macs=10_000, params=1000, groups=[])
    console = Console(width=120, record=True)
    console.print(choice_table(pick(FRONT, max_latency_ms=1.2), dense))
    text = console.export_text()
    assert "PICKED" in text and "90.00" in text and "60.00" in text and "93.00" in text and "97.00" in text
