from __future__ import annotations

import pytest

from autoprune.errors import PlanError
from autoprune.plan import GroupPlan, PruningPlan


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
