"""``pareto.json``: the feasible Pareto front of a run with its counts, hypervolume, proxy quality and screening.

Written after every batch of finished trials and at the end of a session, from every record so
far; the report, pick and export recompute the front from the study itself.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.config import OBJECTIVES, SearchConfig
from autoprune.files import atomic_write_json
from autoprune.hardware.predictor import mdape
from autoprune.records import DenseReference, TrialRecord, TrialState
from autoprune.search.fidelity import spearman
from autoprune.search.objectives import Scoring

if TYPE_CHECKING:
    from autoprune.hardware.predictor import PredictorChoice


def screening_info(choice: PredictorChoice, margin: float) -> dict[str, Any]:
    """What screens the run's candidates by predicted latency, as plain data (the console line, pareto.json)."""
    predictor = choice.predictor
    return {"setting": choice.setting, "path": None if choice.path is None else str(choice.path),
            "active": predictor is not None, "margin": margin,
            "holdout_mdape": None if predictor is None else predictor.holdout_mdape}


def screening_summary(records: Sequence[TrialRecord], info: dict[str, Any]) -> dict[str, Any]:
    """``info`` plus what the predictor rejected unmeasured and its error on the candidates measured anyway."""
    own = [r for r in records if r.duplicate_of is None]
    pairs = [(r.predicted_ms, r.latency_ms) for r in own if r.predicted_ms is not None and r.latency_ms is not None]
    return {**info, "rejected_unmeasured": sum(r.screened_unmeasured for r in own), "measured": len(pairs),
            "mdape": mdape([p for p, _ in pairs], [m for _, m in pairs]) if pairs else None}  # type: ignore[misc]


def search_summary(records: Sequence[TrialRecord], scoring: Scoring) -> dict[str, Any]:
    """Counts, hypervolume per trial and proxy/full Spearman correlation of a run."""
    ordered = sorted(records, key=lambda r: r.number)
    history = [{"trial": r.number, "hypervolume": hv}
               for r, hv in zip(ordered, scoring.hypervolume_history(ordered), strict=True)]
    complete = TrialState.COMPLETE
    both = [r for r in ordered if r.state == complete and r.proxy is not None and r.duplicate_of is None]
    return {
        "fine_tunes": sum(r.state == complete and r.duplicate_of is None for r in records),
        "duplicates": sum(r.duplicate_of is not None for r in records),
        "proxy_rejected": sum(r.state == TrialState.REJECTED and r.reason.startswith("proxy") for r in records),
        "hypervolume": {"value": history[-1]["hypervolume"] if history else 0.0,
                        "reference": dict(scoring.reference),
                        "normalisation": "accuracy as is; other objectives as a fraction of the dense model",
                        "history": history},
        "proxy_vs_full": {"pairs": len(both),
                          "spearman": spearman([r.proxy for r in both], [r.accuracy for r in both])},  # type: ignore[misc]
    }


def write_pareto(path: Path, config: SearchConfig, dense: DenseReference, records: Sequence[TrialRecord],
                 screening: dict[str, Any]) -> list[TrialRecord]:
    """Write ``pareto.json``; return the front (feasible, Pareto-optimal, sorted by latency)."""
    scoring = Scoring.from_config(config, dense)
    front = scoring.front(records)
    atomic_write_json(path, {
        "objectives": {o: OBJECTIVES[o] for o in config.objectives},
        "constraints": {"max_latency_ms": config.max_latency_ms, "min_accuracy": config.min_accuracy,
                        "max_params": config.max_params, "min_speedup": config.min_speedup},
        "dense": dense.to_dict(),
        "trials": {"finished": len(records), "complete": sum(r.state == TrialState.COMPLETE for r in records),
                   "rejected": sum(r.state == TrialState.REJECTED for r in records),
                   "failed": sum(r.state == TrialState.FAILED for r in records)},
        #: complete trials per precision (a joint prune-and-quantize search has several)
        "precisions": dict(sorted(Counter(r.precision for r in records if r.state == TrialState.COMPLETE).items())),
        **search_summary(records, scoring),
        "screening": screening_summary(records, screening),
        "front": [r.to_dict() for r in front],
        #: front points whose latency stayed noisy after every re-measure (not trustworthy)
        "noisy_front": [r.number for r in front if r.noisy],
    })
    return front
