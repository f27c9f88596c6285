"""Size on disk of every complete candidate, plain and gzip'd: sparsity shows only once the file is compressed."""
from __future__ import annotations

import dataclasses

import pytest

from autoprune.config import SearchConfig, SearchSpace
from autoprune.execution.runner import TrialRunner
from autoprune.files import disk_size, weights_bytes
from autoprune.hardware.meter import LatencyMeter
from autoprune.plan import GroupPlan, PruningPlan
from autoprune.records import TrialState

TASK = "tests.tiny_task:tiny_task"


@pytest.fixture(scope="module")
def runner(tiny) -> TrialRunner:
    from autoprune.testing.fakes import fake_profile

    profile = fake_profile(fast_structures=("channel", "unstructured"))
    task = dataclasses.replace(tiny, recipe=dataclasses.replace(tiny.recipe, epochs=0))  # no fine-tune: fast
    dense = tiny.build_model()
    config = SearchConfig(task=TASK, profile=profile, space=SearchSpace(name="t", min_channels=4), min_speedup=0.0)
    return TrialRunner(task=task, config=config, dense=dense,
                       meter=LatencyMeter(profile, dense, task.example_input, cache=None))


def _complete(runner: TrialRunner, plan: PruningPlan):
    screened = runner.screen(0, plan)
    assert screened.state == TrialState.SCREENED, screened.reason
    record = runner.finetune(screened).record
    assert record.state == TrialState.COMPLETE, record.reason
    return record


def _groups(runner: TrialRunner) -> list[str]:
    from autoprune.pruning import discover_groups

    return [g.name for g in discover_groups(runner.dense, runner.task.example_input)]


def test_an_unstructured_half_is_smaller_only_once_compressed(runner) -> None:
    dense_size, dense_gzip = disk_size(weights_bytes(runner.dense.state_dict()))
    plan = PruningPlan.of({n: GroupPlan(ratio=0.5, structure="unstructured") for n in _groups(runner)})
    record = _complete(runner, plan)
    assert record.size_bytes == pytest.approx(dense_size, rel=0.02)  # the same tensors, half of them zeros
    assert record.compressed_bytes < 0.8 * dense_gzip, (record.compressed_bytes, dense_gzip)
    assert record.compressed_bytes < record.size_bytes


def test_a_channel_plan_is_smaller_plain_and_compressed(runner) -> None:
    dense_size, dense_gzip = disk_size(weights_bytes(runner.dense.state_dict()))
    record = _complete(runner, PruningPlan.uniform(_groups(runner), 0.5))
    assert record.size_bytes < 0.8 * dense_size and record.compressed_bytes < 0.8 * dense_gzip


def test_sizes_repeat_and_a_record_keeps_them() -> None:
    from autoprune.records import TrialRecord

    blob = bytes(1000) + bytes(range(256)) * 4
    assert disk_size(blob) == disk_size(blob) and disk_size(blob)[0] == len(blob) > disk_size(blob)[1]
    record = TrialRecord(number=1, plan={}, state=TrialState.COMPLETE, size_bytes=10, compressed_bytes=4)
    assert TrialRecord.from_dict(record.to_dict()) == record
    assert TrialRecord.from_dict({"number": 1, "plan": {}, "state": "complete"}).compressed_bytes is None
