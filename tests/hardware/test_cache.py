from __future__ import annotations

import copy

import torch

from autoprune.hardware.cache import LatencyCache, architecture_signature, signature_digest
from autoprune.hardware.meter import LatencyMeter
from autoprune.plan import PrunerSettings, PruningPlan
from autoprune.pruning import apply_plan, discover_groups
from autoprune.tasks.digits import DigitsResNet


def _pruned(model, x, ratio):
    names = [g.name for g in discover_groups(model, x)]
    return apply_plan(copy.deepcopy(model), x, PruningPlan.uniform(names, ratio), PrunerSettings(round_to=4)).model


def test_signature_sees_every_pruned_layer() -> None:
    x = torch.randn(1, 1, 16, 16)
    dense = DigitsResNet(widths=(8, 16, 32)).eval()
    assert signature_digest(dense) == signature_digest(copy.deepcopy(dense))
    pruned = _pruned(dense, x, 0.5)
    assert signature_digest(pruned) != signature_digest(dense)
    shapes = {name: shapes for name, _, shapes in architecture_signature(pruned)[1:]}
    assert shapes["stem.0"] == [[4, 1, 3, 3]]


def test_identical_candidate_is_measured_once_across_meters(fast_profile, tmp_path) -> None:
    x = torch.randn(1, 1, 16, 16)
    dense = DigitsResNet(widths=(8, 16, 32)).eval()
    candidate = _pruned(dense, x, 0.5)
    cache = LatencyCache(tmp_path / "latency.db")
    cand, ref = LatencyMeter(fast_profile, dense, x, cache=cache).compare(candidate)
    assert len(cache) == 1 and "cached" not in cand.info
    # another run (a new meter, a rebuilt candidate) gets the stored pair back without measuring
    again, again_ref = LatencyMeter(fast_profile, dense, x, cache=LatencyCache(tmp_path / "latency.db")).compare(
        _pruned(dense, x, 0.5))
    assert again.info["cached"] and again_ref.info["cached"]
    assert (again.median_ms, again_ref.median_ms) == (cand.median_ms, ref.median_ms)
    other, _ = LatencyMeter(fast_profile, dense, x, cache=cache).compare(_pruned(dense, x, 0.25))
    assert "cached" not in other.info and len(cache) == 2


def test_profile_change_is_a_miss(fast_profile, tmp_path) -> None:
    from dataclasses import replace

    x = torch.randn(1, 1, 16, 16)
    dense = DigitsResNet(widths=(8, 16, 32)).eval()
    cache = LatencyCache(tmp_path / "latency.db")
    LatencyMeter(fast_profile, dense, x, cache=cache).compare(_pruned(dense, x, 0.5))
    cand, _ = LatencyMeter(replace(fast_profile, threads=2), dense, x, cache=cache).compare(_pruned(dense, x, 0.5))
    assert "cached" not in cand.info and len(cache) == 2


def test_default_cache_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AUTOPRUNE_LATENCY_CACHE", "off")
    assert LatencyCache.default() is None
    monkeypatch.setenv("AUTOPRUNE_LATENCY_CACHE", str(tmp_path / "x.db"))
    assert LatencyCache.default().path == tmp_path / "x.db"
