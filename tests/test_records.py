"""Records and latency statistics keep one shape on disk, typed in memory."""
from __future__ import annotations

import json

from autoprune.records import DenseReference, TrialRecord, TrialState
from autoprune.testing.fakes import stats


def test_a_record_round_trips_through_json_with_its_state_as_a_string() -> None:
    record = TrialRecord(number=3, plan={"g": {"ratio": 0.5, "structure": "channel"}}, state=TrialState.COMPLETE,
                         accuracy=0.9, latency=stats(1.0), dense_latency=stats(2.0), speedup=2.0, macs=5, params=7)
    data = json.loads(json.dumps(record.to_dict()))
    assert data["state"] == "complete" and data["latency"]["median_ms"] == 1.0 and data["latency"]["p90_ms"] == 1.1
    again = TrialRecord.from_dict(data)
    assert again == record and again.state is TrialState.COMPLETE and again.latency_ms == 1.0


def test_objectives_read_typed_fields_and_the_dense_reference_answers_the_same_way() -> None:
    record = TrialRecord(number=0, plan={}, state=TrialState.REJECTED, latency=stats(2.0, p90_ms=3.0), params=4)
    assert (record.objective("latency"), record.objective("latency_p90"), record.objective("params")) == (2.0, 3.0, 4.0)
    assert record.objective("accuracy") is None and record.objective("memory") is None
    dense = DenseReference(accuracy=0.95, latency=stats(2.0), macs=10, params=20, groups=[])
    assert DenseReference.from_dict(json.loads(json.dumps(dense.to_dict()))) == dense
    assert dense.objective("macs") == 10.0


def test_a_quantized_record_round_trips_with_its_precision_and_fp32_latency() -> None:
    record = TrialRecord(number=2, plan={"a": {"ratio": 0.5, "structure": "channel"}, "precision": "int8"},
                         state=TrialState.COMPLETE, accuracy=0.9, latency=stats(0.5), fp32_latency=stats(1.0),
                         quantization={"calibration": "minmax", "speedup_vs_fp32": 2.0})
    back = TrialRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert back == record and back.precision == "int8" and back.fp32_latency.median_ms == 1.0
    assert TrialRecord.from_dict({"number": 0, "plan": {}, "state": "failed"}).precision == "fp32"
