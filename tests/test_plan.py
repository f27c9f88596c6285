from __future__ import annotations

import pytest

from autoprune.errors import PlanError
from autoprune.plan import GroupPlan, PruningPlan, plan_groups, plan_precision


def test_round_trip_and_digest_is_order_free() -> None:
    a = PruningPlan.of({"b": GroupPlan(ratio=0.5), "a": GroupPlan(ratio=0.25, structure="none")})
    b = PruningPlan.from_dict({"a": {"ratio": 0.25, "structure": "none"}, "b": {"ratio": 0.5}})
    assert a == b and a.digest() == b.digest()
    assert PruningPlan.from_dict(a.to_dict()) == a
    assert a.digest() != PruningPlan.of({"b": GroupPlan(ratio=0.55)}).digest()


@pytest.mark.parametrize("data, message", [
    ({"g": {"ratio": 1.0}}, "ratio must be in [0, 1)"),
    ({"g": {"ratio": -0.1}}, "ratio must be in [0, 1)"),
    ({"g": {"ratio": 0.1, "structure": "filters"}}, "structure 'filters'"),
    ({"g": {}}, "malformed"),
])
def test_bad_plans(data, message) -> None:
    with pytest.raises(PlanError) as err:
        PruningPlan.from_dict(data)
    assert message in str(err.value)


def test_precision_round_trips_and_old_plans_read_as_fp32() -> None:
    old = {"a": {"ratio": 0.5, "structure": "channel"}}  # a plan written before precision existed
    fp32 = PruningPlan.from_dict(old)
    assert fp32.precision == "fp32" and fp32.to_dict() == old  # an fp32 plan writes no precision
    int8 = PruningPlan.of(fp32.as_dict(), precision="int8")
    assert int8.to_dict() == {**old, "precision": "int8"} and PruningPlan.from_dict(int8.to_dict()) == int8
    assert int8.digest() != fp32.digest() and plan_precision(int8.to_dict()) == "int8"
    assert plan_groups(int8.to_dict()) == old
    with pytest.raises(PlanError, match="precision 'int4' is not one of fp32, int8, fp16"):
        PruningPlan.from_dict({**old, "precision": "int4"})
    named = PruningPlan.from_dict({"precision": {"ratio": 0.25}})  # a group may still be called `precision`
    assert named.precision == "fp32" and named.as_dict()["precision"].ratio == 0.25
    with pytest.raises(PlanError, match="a group named 'precision' cannot carry precision 'int8'"):
        PruningPlan.of(named.as_dict(), precision="int8").to_dict()
