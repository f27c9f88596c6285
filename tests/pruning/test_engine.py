"""Heads, grouped convs, width attributes, masks through fine-tuning, importance criteria, errors."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from autoprune.config import SearchSpace
from autoprune.errors import ConfigError, PlanError
from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan
from autoprune.pruning import apply_plan, discover
from autoprune.pruning.importance import make_importance
from autoprune.registry import IMPORTANCES
from autoprune.task import FineTuneRecipe
from autoprune.testing.models import TINY, Bert, RegNet, Swin, ViT
from autoprune.testing.suites import ImportanceSuite
from autoprune.training import fine_tune


def _model(name: str):
    build, x = TINY[name]
    torch.manual_seed(0)
    return build().eval(), x


def _dropped_heads(dense_w: torch.Tensor, pruned_w: torch.Tensor, heads: int) -> list[int]:
    """Which head blocks of rows of ``dense_w`` are missing from ``pruned_w``."""
    hd = dense_w.shape[0] // heads
    kept = [h for h in range(heads) if any(torch.equal(dense_w[h * hd:(h + 1) * hd], pruned_w[k * hd:(k + 1) * hd])
                                           for k in range(pruned_w.shape[0] // hd))]
    return [h for h in range(heads) if h not in kept]


@torch.no_grad()
def test_head_pruning_removes_whole_heads_and_matches_the_masked_dense_model() -> None:
    dense, x = _model("bert")
    pruned = copy.deepcopy(dense)
    result = apply_plan(pruned, x, PruningPlan.of({"layers.0.attn.value": GroupPlan(ratio=0.5)}))
    attn = pruned.layers[0].attn
    assert result.heads["layers.0.attn.value"] == (4, 2) and attn.num_heads == 2 and attn.head_dim == 8
    assert attn.query.out_features == attn.key.out_features == attn.value.out_features == attn.out.in_features == 16
    # a head whose values are zero contributes nothing: zeroing the dropped heads' values in the dense
    # model must give exactly what physically removing them gives
    dropped = _dropped_heads(dense.layers[0].attn.value.weight, attn.value.weight, 4)
    assert len(dropped) == 2
    masked = copy.deepcopy(dense)
    for h in dropped:
        masked.layers[0].attn.value.weight[h * 8:(h + 1) * 8] = 0
        masked.layers[0].attn.value.bias[h * 8:(h + 1) * 8] = 0
    torch.testing.assert_close(pruned(x), masked(x), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_fused_qkv_head_pruning_keeps_q_k_v_aligned() -> None:
    torch.manual_seed(0)
    dense, x = Swin().eval(), TINY["swin"][1]
    pruned = copy.deepcopy(dense)
    result = apply_plan(pruned, x, PruningPlan.of({"layers.1.attn.qkv": GroupPlan(ratio=0.75)}))
    attn = pruned.layers[1].attn
    assert result.heads["layers.1.attn.qkv"] == (4, 1) and attn.num_heads == 1
    assert attn.qkv.out_features == 3 * 8 and attn.proj.in_features == 8
    value_rows = dense.layers[1].attn.qkv.weight[64:]
    dropped = _dropped_heads(value_rows, attn.qkv.weight[16:], 4)
    masked = copy.deepcopy(dense)
    for h in dropped:
        masked.layers[1].attn.qkv.weight[64 + h * 8:64 + (h + 1) * 8] = 0
        masked.layers[1].attn.qkv.bias[64 + h * 8:64 + (h + 1) * 8] = 0
    torch.testing.assert_close(pruned(x), masked(x), rtol=1e-5, atol=1e-6)


def test_vit_width_attribute_follows_the_residual_stream() -> None:
    torch.manual_seed(0)
    model, x = ViT().eval(), TINY["vit_attrs"][1]
    stream = max(discover(model, x).groups, key=lambda g: len(g.layers))
    result = apply_plan(model, x, PruningPlan.of({stream.name: GroupPlan(ratio=0.5)}), PrunerSettings(round_to=8))
    assert result.channels[stream.name] == (32, 16)
    assert model.hidden_dim == 16 and model.pos_embedding.shape[-1] == 16 and model(x).shape == (1, 10)


def test_grouped_conv_keeps_equal_groups_and_round_to() -> None:
    torch.manual_seed(0)
    model, x = RegNet(widths=(32, 64), group_width=4).eval(), TINY["regnet"][1]
    groups = {g.name: g for g in discover(model, x).groups}
    assert groups["blocks.1.a.0"].channel_groups == 16 and "grouped conv" in groups["blocks.1.a.0"].couplings
    plan = PruningPlan.of({"blocks.1.a.0": GroupPlan(ratio=0.4), "blocks.1.b.0": GroupPlan(ratio=0.6)})
    result = apply_plan(model, x, plan, PrunerSettings(round_to=8, min_channels=8))
    conv = model.blocks[1].b[0]
    assert result.channels["blocks.1.a.0"] == (64, 32)  # 38.4 kept -> multiple of lcm(8, 16 groups) = 16
    assert conv.groups == 16 and conv.in_channels == 32 and conv.out_channels == 32
    assert model(x).shape == (1, 10)


def test_min_channels_never_empties_a_layer() -> None:
    model, x = _model("resnet_basic")
    names = [g.name for g in discover(model, x).groups]
    result = apply_plan(model, x, PruningPlan.uniform(names, 0.95), PrunerSettings(round_to=1, min_channels=3))
    assert all(after >= min(3, before) for before, after in result.channels.values())


def test_discovery_reports_left_out_layers_with_reasons() -> None:
    model, x = _model("vit_mha")
    report = discover(model, x, ignore=("layers.1.mlp.fc1",))
    reasons = {o.layer: o.reason for o in report.left_out}
    assert reasons["classifier"].startswith("output layer: its channels are the model's output `output`")
    assert reasons["layers.1.mlp.fc1"].startswith("user-ignored")
    assert "nn.MultiheadAttention" in reasons["layers.0.attn.attn"]
    stream = max(report.groups, key=lambda g: len(g.layers))
    assert stream.channel_groups == 4  # embed_dim stays divisible by the 4 heads
    shuffle = {o.layer: o.reason for o in discover(*_model("shufflenet")).left_out}
    assert "channel shuffle" in shuffle["stem.0"]
    total = discover(*_model("resnet_bottleneck"))
    assert all(0 < g.macs_share <= 1 and 0 < g.params_share <= 1 for g in total.groups)


def test_masks_stay_enforced_through_fine_tuning() -> None:
    model, x = _model("resnet_basic")
    result = apply_plan(model, x, PruningPlan.of({"blocks.1.conv1.0": GroupPlan(ratio=0.6, structure="unstructured"),
                                                  "stem.0.0": GroupPlan(ratio=0.5, structure="nm")}))
    data = TensorDataset(torch.randn(64, 3, 16, 16), torch.randint(0, 10, (64,)))
    fine_tune(model, data, FineTuneRecipe(epochs=1, batch_size=16, threads=1), after_step=result.reapply_masks)
    conv = model.blocks[1].conv1[0].weight
    assert float((conv == 0).float().mean()) >= 0.6 - 1e-3
    nm_layers = [n for n, g in result.masked_groups.items() if g == "stem.0.0"]
    assert nm_layers == ["blocks.0.conv2.0"]  # the stem's residual partner; the stem conv itself has 3 inputs
    for name in nm_layers:
        blocks = model.get_submodule(name).weight.movedim(1, -1).reshape(-1, 4)
        assert int((blocks != 0).sum(1).max()) <= 2
    assert result.skipped["stem.0.0"].startswith("2:4 not applicable: input width 3")


def test_global_mask_scope_ranks_across_the_group() -> None:
    model, x = _model("resnet_basic")
    result = apply_plan(model, x, PruningPlan.of({"stem.0.0": GroupPlan(ratio=0.5, structure="unstructured")}),
                        PrunerSettings(mask_scope="group"))
    zeros = sum(int((~m).sum()) for m in result.masks.values())
    total = sum(m.numel() for m in result.masks.values())
    assert abs(zeros / total - 0.5) < 0.01 and len(set(result.sparsity.values())) > 1


@pytest.fixture(params=IMPORTANCES.names())
def importance_name(request) -> str:
    return request.param


class TestEveryCriterion(ImportanceSuite):
    @pytest.fixture(autouse=True)
    def _name(self, importance_name: str) -> None:
        self.name = importance_name


def test_wanda_keeps_channels_fed_by_large_activations() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    with torch.no_grad():
        layer[2].weight.fill_(1.0)
        layer[0].weight.fill_(0.1)
        layer[0].weight[:, 0] = 1.0  # input 0 has the largest weights...
    x = torch.zeros(16, 4)
    x[:, 3] = 100.0  # ...but input 3 carries the activations
    imp = make_importance("wanda")
    imp.calibrate(layer, [x])
    scores = imp.weight_scores(layer[0])
    assert int(scores.argmax()) % 4 == 3 and int(make_importance("l1").weight_scores(layer[0]).argmax()) % 4 == 0


def test_importance_is_validated_in_the_search_space() -> None:
    assert {"l1", "l2", "bn_scale", "taylor", "wanda", "random"} <= set(IMPORTANCES.names())
    with pytest.raises(ConfigError, match="`importance` must be one of .*wanda.*got 'bogus'"):
        SearchSpace(name="s", importance="bogus")


def test_bad_input_names_the_group_or_layer() -> None:
    model, x = _model("resnet_bottleneck")
    with pytest.raises(PlanError, match="ratio must be in"):
        PruningPlan.from_dict({"stem.0.0": {"ratio": 1.0}})
    with pytest.raises(PlanError, match="group 'nope' is not a prunable group of ResNet"):
        apply_plan(model, x, PruningPlan.of({"nope": GroupPlan(ratio=0.5)}))
    with pytest.raises(PlanError, match="group 'stem.0.0': no layer can take 2:4 sparsity .*stem.0.0: .*input width 3"):
        apply_plan(model, x, PruningPlan.of({"stem.0.0": GroupPlan(ratio=0.5, structure="nm")}))
    with pytest.raises(PlanError, match="model Bert cannot be traced for pruning"):
        apply_plan(Bert(), torch.randn(1, 3, 16, 16), PruningPlan.of({}))
    with pytest.raises(ConfigError, match="unknown importance 'nope'"):
        make_importance("nope")
