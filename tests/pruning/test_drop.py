"""Depth pruning: the ``drop`` structure removes whole blocks whose input and output shapes match."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from autoprune.config import SearchSpace
from autoprune.errors import PlanError
from autoprune.inputs import call
from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan
from autoprune.pruning import apply_plan, discover
from autoprune.pruning.saving import load_pruned, save_pruned
from autoprune.search.space import PlanSpace, droppable
from autoprune.task import Task
from autoprune.tasks.digits import DigitsResNet
from tests.pruning.reference import scramble


def _digits() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return scramble(DigitsResNet(widths=(8, 8, 16))), torch.randn(2, 1, 32, 32)


def _as_identity(model: nn.Module, name: str) -> nn.Module:
    """The dense model with block ``name`` replaced by identity (its output is its input)."""
    ref = copy.deepcopy(model)
    ref.get_submodule(name).register_forward_hook(lambda _m, args, _out: args[0])
    return ref


def test_discovery_lists_blocks_whose_shapes_match_and_no_others() -> None:
    model, x = _digits()
    report = discover(model, x)
    # stages.0 (8->8, stride 1) and stages.1 (8->8, stride 2: smaller output) ... only shape-keeping ones
    assert [(b.name, b.root_type, b.unit, b.structures) for b in report.blocks] == [
        ("stages.0", "BasicBlock", "block", ("drop", "none"))]
    assert 0 < report.blocks[0].macs_share < 1 and report.blocks[0].layers == ("stages.0.conv1", "stages.0.conv2")
    assert all(g.unit != "block" for g in report.groups)


@torch.no_grad()
def test_a_dropped_basic_block_equals_the_dense_model_with_identity_there() -> None:
    model, x = _digits()
    want = _as_identity(model, "stages.0")(x)
    result = apply_plan(model, x[:1], PruningPlan.of({"stages.0": GroupPlan(ratio=0.0, structure="drop")}))
    assert result.dropped == ("stages.0",) and result.channels["stages.0"] == (1, 0)
    assert len(model.stages) == 2 and isinstance(model.stages[0], type(model.stages[1]))
    torch.testing.assert_close(model(x), want)


@torch.no_grad()
def test_torchvision_resnet_drops_basic_blocks_without_projection() -> None:
    from autoprune.testing.real import torchvision_model

    torch.manual_seed(0)
    model = scramble(torchvision_model("resnet18"))
    x = torch.randn(1, 3, 32, 32)
    blocks = [b.name for b in discover(copy.deepcopy(model), x).blocks]
    assert blocks == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]  # the first of 2-4 projects
    want = _as_identity(_as_identity(model, "layer1.1"), "layer3.1")(x)
    plan = PruningPlan.of({"layer1.1": GroupPlan(ratio=0.0, structure="drop"),
                           "layer3.1": GroupPlan(ratio=0.5, structure="drop")})  # ratio ignored
    apply_plan(model, x, plan)
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [1, 2, 1, 2]
    torch.testing.assert_close(model(x), want)


def test_drop_with_channel_pruning_saves_and_reloads(tmp_path) -> None:
    model, x = _digits()
    dense = copy.deepcopy(model)
    groups = [g.name for g in discover(copy.deepcopy(model), x[:1]).groups]
    plan = PruningPlan.of({**{g: GroupPlan(ratio=0.5) for g in groups},
                           "stages.0": GroupPlan(ratio=0.0, structure="drop")})
    result = apply_plan(model, x[:1], plan)
    save_pruned(tmp_path, plan, model.state_dict(), settings=PrunerSettings(),
                channels={k: list(v) for k, v in result.channels.items()})
    task = Task(name="d", build_model=lambda: copy.deepcopy(dense), example_input=x[:1], train_set=[], val_set=[])
    reloaded = load_pruned(tmp_path, task)
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))


def test_drop_is_refused_where_it_does_not_fit() -> None:
    model, x = _digits()
    with pytest.raises(PlanError, match="droppable blocks of DigitsResNet: stages.0"):
        apply_plan(copy.deepcopy(model), x[:1], PruningPlan.of({"stages.1": GroupPlan(ratio=0.0, structure="drop")}))
    with pytest.raises(PlanError, match="droppable blocks"):
        apply_plan(copy.deepcopy(model), x[:1], PruningPlan.of({"stem.0": GroupPlan(ratio=0.0, structure="drop")}))
    with pytest.raises(PlanError, match="is a block: its structure is `drop` or `none`"):
        apply_plan(copy.deepcopy(model), x[:1], PruningPlan.of({"stages.0": GroupPlan(ratio=0.5)}))
    assert not GroupPlan(ratio=0.0, structure="drop").is_noop


def test_the_space_offers_drop_only_where_it_is_allowed() -> None:
    model, x = _digits()
    report = discover(model, x)
    channel_only = SearchSpace(name="c")
    assert droppable(list(report.blocks), channel_only) == []
    for space in (SearchSpace(name="d", structures=("channel", "drop")),
                  SearchSpace(name="t", layer_structures={"BasicBlock": ("drop",)})):
        blocks = droppable(list(report.blocks), space)
        assert [b.name for b in blocks] == ["stages.0"]
        plans = PlanSpace.build(list(report.groups) + blocks, space, PrunerSettings(), ("channel",))
        assert plans.group_structures["stages.0"] == ("drop", "none")
        assert all("drop" not in plans.group_structures[g.name] for g in report.groups)
        dists = plans.distributions()
        assert "ratio/stages.0" not in dists and set(dists["structure/stages.0"].choices) == {"drop", "none"}
        params = {k: (d.choices[0] if hasattr(d, "choices") else 0.25) for k, d in dists.items()}
        plan = plans.plan_from_params(params)
        assert plan.as_dict()["stages.0"] == GroupPlan(ratio=0.0, structure="drop")
        assert plans.params_from_plan(plan) == {k: v for k, v in params.items() if k in dists}
        assert plans.uniform_plan(0.5).as_dict()["stages.0"].structure == "none"  # baselines keep the depth
        assert plans.kept_fraction("stages.0", plan.as_dict()["stages.0"]) == 0.0
        apply_plan(copy.deepcopy(model), x[:1], plan)  # the proposed plan builds
    with torch.no_grad():
        assert call(model, x).shape == (2, 10)


def test_a_stack_keeps_one_block() -> None:
    from autoprune.testing.real import hf_bert, hf_bert_inputs

    torch.manual_seed(0)
    model, x = hf_bert().eval(), hf_bert_inputs()
    plan = PruningPlan.of({f"encoder.layer.{i}": GroupPlan(ratio=0.0, structure="drop") for i in range(2)})
    result = apply_plan(model, x, plan)
    assert result.dropped == ("encoder.layer.0",) and "would leave it empty" in result.unshrinkable["encoder.layer.1"]
    assert len(model.encoder.layer) == model.config.num_hidden_layers == 1


def test_inspect_lists_droppable_blocks(capsys) -> None:
    import json

    pytest.importorskip("transformers")
    from autoprune.cli import main

    assert main(["inspect", "--task", "tests.tiny_text_task:tiny_text_task", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(b["name"], b["root_type"], b["unit"]) for b in report["blocks"]] == [
        ("encoder.encoder.layer.0", "BertLayer", "block"), ("encoder.encoder.layer.1", "BertLayer", "block")]
    assert main(["inspect", "--task", "tests.tiny_text_task:tiny_text_task"]) == 0
    out = capsys.readouterr().out
    assert "2 droppable blocks" in out and "BertLayer" in out
