"""Every test model family x every structure: random plans prune, run, export and reload exactly."""
from __future__ import annotations

import copy
import math
import random
import zlib

import numpy as np
import pytest
import torch

from autoprune.hardware.onnxruntime_backend import export_onnx_bytes
from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan
from autoprune.pruning import apply_plan, discover, model_stats
from autoprune.pruning.saving import load_pruned, save_pruned
from autoprune.testing.models import TINY, model_task

ROUND_TO, MIN_CHANNELS = 4, 4


def random_plan(groups, structure: str, seed: int) -> PruningPlan:
    rng = random.Random(seed)
    chosen = {}
    eligible = [g for g in groups if structure in g.structures]
    for g in eligible:
        if rng.random() < 0.8:
            chosen[g.name] = GroupPlan(ratio=rng.choice([0.25, 0.5, 0.75]), structure=structure)
    if not chosen and eligible:  # a small model's dice may skip every group: prune one anyway
        chosen[eligible[0].name] = GroupPlan(ratio=0.5, structure=structure)
    return PruningPlan.of(chosen)


def onnx_output(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    # nn.MultiheadAttention's eval fast path (aten::_native_multi_head_attention) has no ONNX export;
    # the math path computes the same thing and exports
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        blob = export_onnx_bytes(model, x)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("structure", ["channel", "unstructured", "nm"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_random_plan_prunes_runs_exports_and_reloads(name: str, structure: str, tmp_path) -> None:
    build, x = TINY[name]
    torch.manual_seed(0)
    dense = build().eval()
    model = copy.deepcopy(dense)
    groups = discover(model, x).groups
    plan = random_plan(groups, structure, seed=zlib.crc32(f"{name}/{structure}".encode()))
    assert plan.groups, "the random plan must prune something"
    result = apply_plan(model, x, plan, PrunerSettings(round_to=ROUND_TO, min_channels=MIN_CHANNELS))

    with torch.no_grad():
        out = model(x)
    assert out.shape == dense(x).shape
    before, after = model_stats(dense, x), model_stats(model, x)
    if structure == "channel":
        by_name = {g.name: g for g in groups}
        for group, spec in plan.groups:
            old, new = result.channels[group]
            assert 0 < new <= old and model.get_submodule(group).weight.shape[0] == new  # the root really shrank
            if group in result.heads:
                h_old, h_new = result.heads[group]
                assert h_new == max(1, round((1 - spec.ratio) * h_old))
            else:
                step = math.lcm(ROUND_TO, by_name[group].channel_groups)
                assert new % step == 0 or new == old
                assert abs(new - (1 - spec.ratio) * old) <= step + MIN_CHANNELS  # as planned, up to rounding
        assert after.macs < before.macs and after.params < before.params
    else:
        assert (after.macs, after.params) == (before.macs, before.params)  # masks keep the shapes
        assert result.masks and set(result.sparsity) == set(result.masks)
        for layer, sparsity in result.sparsity.items():
            expected = 0.5 if structure == "nm" else dict(plan.groups)[result.masked_groups[layer]].ratio
            assert sparsity >= expected - 0.02, (layer, sparsity, expected)

    np.testing.assert_allclose(onnx_output(model, x), out.numpy(), atol=1e-4, rtol=1e-4)

    save_pruned(tmp_path, plan, model.state_dict(), settings=PrunerSettings(round_to=ROUND_TO,
                                                                            min_channels=MIN_CHANNELS),
                channels=result.channels, sparsity=result.sparsity)
    torch.manual_seed(123)  # the rebuilt model starts from other random weights: only the saved ones may count
    reloaded = load_pruned(tmp_path, model_task(build, x))
    with torch.no_grad():
        assert torch.equal(reloaded(x), out)
