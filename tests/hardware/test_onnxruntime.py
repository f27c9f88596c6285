from __future__ import annotations

import copy

import torch

from autoprune.hardware.meter import LatencyMeter
from autoprune.hardware.protocol import measure_models
from autoprune.plan import PrunerSettings, PruningPlan
from autoprune.pruning import apply_plan, discover_groups
from autoprune.tasks.digits import DigitsResNet


def test_measurement_follows_the_protocol(fast_profile) -> None:
    model = DigitsResNet(widths=(8, 16, 32)).eval()
    stats = measure_models(fast_profile, [model], torch.randn(1, 1, 32, 32))[0]
    assert stats.runs >= fast_profile.min_runs and stats.backend == "onnxruntime"
    assert 0 < stats.median_ms <= stats.p90_ms and stats.cv >= 0
    assert stats.info["model_bytes"] > 10_000 and "onnxruntime" in stats.versions


def test_pruned_candidate_is_measured_faster_than_dense(fast_profile) -> None:
    torch.manual_seed(0)
    dense = DigitsResNet(widths=(32, 64, 128)).eval()
    x = torch.randn(1, 1, 32, 32)
    pruned = copy.deepcopy(dense)
    apply_plan(pruned, x, PruningPlan.uniform([g.name for g in discover_groups(dense, x)], 0.75),
               PrunerSettings(round_to=8))
    candidate, reference = LatencyMeter(fast_profile, dense, x).compare(pruned)
    assert reference.median_ms / candidate.median_ms > 1.5  # ~16x fewer MACs


def test_onnx_export_matches_torch() -> None:
    import onnxruntime as ort

    from autoprune.hardware.onnxruntime_backend import export_onnx_bytes

    model = DigitsResNet(widths=(8, 16, 32)).eval()
    x = torch.randn(1, 1, 32, 32)
    session = ort.InferenceSession(export_onnx_bytes(model, x), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), model(x).detach(), rtol=1e-4, atol=1e-5)
