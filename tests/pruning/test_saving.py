"""Save/reload: plan + state_dict, rebuilt in a fresh process with bit-identical outputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from autoprune.errors import PlanError
from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan
from autoprune.pruning import apply_plan
from autoprune.pruning.saving import load_pruned, save_pruned
from autoprune.testing.models import TINY, model_task
from tests.conftest import ROOT

RELOAD = """
import sys, torch
from autoprune.pruning.saving import load_pruned
from autoprune.testing.models import TINY, model_task
build, x = TINY["vit_attrs"]
torch.manual_seed(99)
model = load_pruned(sys.argv[1], model_task(build, x))
with torch.no_grad():
    torch.save(model(x), sys.argv[2])
"""


def _pruned(tmp_path):
    build, x = TINY["vit_attrs"]
    torch.manual_seed(0)
    model = build().eval()
    plan = PruningPlan.of({"layers.1.mlp.fc2": GroupPlan(ratio=0.5), "layers.0.attn.qkv": GroupPlan(ratio=0.5),
                           "layers.1.mlp.fc1": GroupPlan(ratio=0.5, structure="unstructured"),
                           "layers.0.mlp.fc1": GroupPlan(ratio=0.5, structure="nm")})
    result = apply_plan(model, x, plan, PrunerSettings(round_to=8))
    save_pruned(tmp_path, plan, model.state_dict(), settings=PrunerSettings(round_to=8), channels=result.channels,
                sparsity=result.sparsity)
    return model, x


def test_reload_in_a_fresh_process_is_bit_identical(tmp_path) -> None:
    model, x = _pruned(tmp_path)
    meta = json.loads((tmp_path / "plan.json").read_text())
    assert meta["format"] == 1 and meta["channels"]["layers.1.mlp.fc2"] == [32, 16] and meta["sparsity"]
    subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path), str(tmp_path / "out.pt")], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "out.pt", weights_only=True), model(x))


def test_reload_refuses_another_model_and_missing_files(tmp_path) -> None:
    _pruned(tmp_path)
    build, x = TINY["vit_attrs"]
    with pytest.raises(PlanError, match="is not a prunable group"):
        load_pruned(tmp_path, model_task(*TINY["bert"]))
    with pytest.raises(PlanError, match="plan.json: not found"):
        load_pruned(tmp_path / "nothing", model_task(build, x))
    meta = json.loads((tmp_path / "plan.json").read_text())
    meta["channels"]["layers.1.mlp.fc2"] = [32, 24]
    (tmp_path / "plan.json").write_text(json.dumps(meta))
    with pytest.raises(PlanError, match="group 'layers.1.mlp.fc2' rebuilt with .* but was saved with"):
        load_pruned(tmp_path, model_task(build, x))
