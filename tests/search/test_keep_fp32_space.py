"""Layers kept in fp32: the space's globs, fixed or searched, in the plans agents propose; strict validation."""
from __future__ import annotations

import pytest

from autoprune.config import SearchSpace
from autoprune.errors import ConfigError, PlanError
from autoprune.plan import PruningPlan, plan_groups
from autoprune.search.space import KEEP_FP32, PRECISION
from autoprune.testing.toy import toy_space


def _space(**fields) -> SearchSpace:
    return SearchSpace(name="q", ratio_step=0.05, precisions=("fp32", "int8"), **fields)


def test_a_fixed_list_goes_into_every_quantized_plan_and_no_fp32_one() -> None:
    space = toy_space(_space(keep_fp32=("fc*", "conv1")), precisions=("fp32", "int8"))
    assert not any(k.startswith(KEEP_FP32) for k in space.distributions())  # not searched: no parameter
    int8 = space.plan_from_params({PRECISION: "int8"})
    assert int8.keep_fp32 == ("conv1", "fc*") and space.plan_from_params({PRECISION: "fp32"}).keep_fp32 == ()
    assert space.uniform_plan(0.3, "int8").keep_fp32 == ("conv1", "fc*")
    assert space.canonical(int8) != space.canonical(PruningPlan.of(int8.as_dict(), "int8"))


def test_a_searched_list_is_one_yes_no_parameter_per_glob() -> None:
    space = toy_space(_space(keep_fp32=("fc*", "conv1"), search_keep_fp32=True), precisions=("fp32", "int8"))
    dists = space.distributions()
    assert dists[KEEP_FP32 + "fc*"].choices == (False, True) and KEEP_FP32 + "conv1" in dists
    plan = space.plan_from_params({PRECISION: "int8", KEEP_FP32 + "fc*": True, KEEP_FP32 + "conv1": False})
    assert plan.keep_fp32 == ("fc*",)
    assert space.params_from_plan(plan)[KEEP_FP32 + "fc*"] is True
    assert space.plan_from_params(space.params_from_plan(plan)) == plan  # a round trip through the study
    assert space.plan_from_params({PRECISION: "fp32", KEEP_FP32 + "fc*": True}).keep_fp32 == ()
    # a profile that runs only fp32: nothing to keep, so nothing searched
    assert not any(k.startswith(KEEP_FP32) for k in toy_space(
        _space(keep_fp32=("fc*",), search_keep_fp32=True), precisions=("fp32",)).distributions())


@pytest.mark.parametrize("agent", ["tpe", "rl"])
def test_agents_propose_both_choices(agent: str, tmp_path) -> None:
    """TPE samples the parameter itself; the RL agent (a plan agent) leaves it to the seeded fallback."""
    from autoprune.testing.toy import drive, new_study

    space = toy_space(_space(keep_fp32=("fc*",), search_keep_fp32=True), precisions=("fp32", "int8"))
    records = drive(agent, new_study(), space, 16, seed=0, log_dir=tmp_path)
    plans = [PruningPlan.from_dict(r.plan) for r in records]
    assert {p.keep_fp32 for p in plans if p.precision == "int8"} == {(), ("fc*",)}
    assert all(p.keep_fp32 == () for p in plans if p.precision == "fp32")


def test_the_plan_dict_round_trips_and_keeps_older_digests() -> None:
    plan = PruningPlan.uniform(["a", "b"], 0.5, precision="int8", keep_fp32=("b", "a"))
    data = plan.to_dict()
    assert data["keep_fp32"] == ["a", "b"] and set(plan_groups(data)) == {"a", "b"}
    assert PruningPlan.from_dict(data) == plan
    without = PruningPlan.uniform(["a", "b"], 0.5, precision="int8")
    assert "keep_fp32" not in without.to_dict() and without.digest() != plan.digest()
    with pytest.raises(PlanError, match=r"keep_fp32 \['a'\] applies to a quantized plan"):
        PruningPlan.uniform(["a"], 0.5, keep_fp32=("a",))
    with pytest.raises(PlanError, match="keep_fp32 must be a list of layer-name globs"):
        PruningPlan.from_dict({"a": {"ratio": 0.5}, "precision": "int8", "keep_fp32": [""]})


@pytest.mark.parametrize(("fields", "message"), [
    ({"keep_fp32": "fc"}, "`keep_fp32` must be a list of layer-name globs, got 'fc'"),
    ({"keep_fp32": (3,)}, "`keep_fp32` must be a list of layer-name globs"),
    ({"keep_fp32": ("fc",), "precisions": ("fp32",)}, "`keep_fp32` applies to quantized plans, but `precisions` "
                                                      "lists only fp32"),
    ({"search_keep_fp32": True}, "`search_keep_fp32` needs `keep_fp32`"),
    ({"keep_fp32": ("fc",), "search_keep_fp32": "yes"}, "`search_keep_fp32` must be true or false, got 'yes'"),
])
def test_the_space_fields_are_validated_strictly(fields, message) -> None:
    values = {"precisions": ("fp32", "int8"), **fields}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("`", "`")):
        SearchSpace(name="q", **values)
