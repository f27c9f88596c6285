"""Objectives, constraints and the scalar score, all derived from one SearchConfig.

Objective values are normalised against the dense model before they are compared across
runs: accuracy stays a score (0..1), every cost (latency, params, MACs, memory) becomes a
fraction of the dense model's value. The hypervolume reference point, the Pareto front and
the scalar score used by single-objective agents (the RL reward) all read the same
normalised values, so they agree on what "better" means.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from autoprune.config import OBJECTIVES, SearchConfig
from autoprune.errors import ConfigError
from autoprune.records import DenseReference, TrialRecord, TrialState
from autoprune.search.pareto import dominates, hypervolume, pareto_front

#: reference point defaults: accuracy 0.5, every cost the dense model's value (1.0)
DEFAULT_REFERENCE = {"accuracy": 0.5}
#: score of a trial with no usable outcome (failed): worse than any feasible trial
FAILED_SCORE = -2.0


@dataclass(frozen=True, kw_only=True)
class Scoring:
    """How trials are judged: objective directions, constraints, reference point, scalar score.

    Attributes:
        objectives: objective names (``config.OBJECTIVES``) in the study's order.
        dense: the dense model's value of each objective (the normalisation base).
        reference: normalised hypervolume reference point per objective.
        weights: weight of each normalised objective in the scalar score.
        max_latency_ms, min_accuracy, max_params: constraints (None: unconstrained).
    """

    objectives: tuple[str, ...]
    dense: Mapping[str, float]
    reference: Mapping[str, float] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=dict)
    max_latency_ms: float | None = None
    min_accuracy: float | None = None
    max_params: int | None = None

    @classmethod
    def from_config(cls, config: SearchConfig, dense: DenseReference) -> Scoring:
        """Scoring for ``config``, normalised by the dense model's values.

        Raises:
            ConfigError: an objective the profile does not measure (no dense value).
        """
        values = {o: dense.objective(o) for o in OBJECTIVES}
        missing = [o for o in config.objectives if values[o] is None]
        if missing:
            measured = [o for o, v in values.items() if v is not None]
            raise ConfigError(f"objectives: `{missing[0]}` is not measured by profile {config.profile.name!r} "
                              f"(backend {config.profile.backend}); measured objectives: {', '.join(measured)}")
        base = {o: float(v) for o, v in values.items() if o in config.objectives and v is not None}
        return cls(objectives=tuple(config.objectives), dense=base,
                   reference={o: float(config.reference.get(o, DEFAULT_REFERENCE.get(o,
                                                                                     1.0))) for o in config.objectives},
                   weights={o: float(config.weights.get(o, 1.0)) for o in config.objectives},
                   max_latency_ms=config.max_latency_ms, min_accuracy=config.min_accuracy,
                   max_params=config.max_params)

    @property
    def maximize(self) -> list[bool]:
        return [OBJECTIVES[o] == "maximize" for o in self.objectives]

    def normalise(self, name: str, value: float) -> float:
        """Accuracy as is; a cost as a fraction of the dense model's value."""
        if OBJECTIVES[name] == "maximize":
            return value
        return value / self.dense[name] if self.dense.get(name) else value

    def vector(self, record: TrialRecord) -> list[float] | None:
        """Normalised objective values of a complete trial (None if one is missing)."""
        values = [record.objective(o) for o in self.objectives]
        if any(v is None for v in values):
            return None
        return [self.normalise(o, v) for o, v in zip(self.objectives, values, strict=True)]  # type: ignore[arg-type]

    def violations(self, record: TrialRecord) -> list[str]:
        """The constraints ``record`` breaks, as short strings ([] when feasible)."""
        out = []
        if self._too_slow(record):
            out.append(f"latency {record.latency_ms:.3f} ms > {self.max_latency_ms} ms")
        if self.min_accuracy is not None and record.accuracy is not None and record.accuracy < self.min_accuracy:
            out.append(f"accuracy {record.accuracy:.4f} < {self.min_accuracy}")
        if self.max_params is not None and record.params is not None and record.params > self.max_params:
            out.append(f"params {record.params} > {self.max_params}")
        return out

    def _too_slow(self, record: TrialRecord) -> bool:
        """A measured latency over ``max_latency_ms``."""
        latency = record.latency_ms
        return self.max_latency_ms is not None and latency is not None and latency > self.max_latency_ms

    def constraint_values(self, record: TrialRecord) -> list[float]:
        """[latency, accuracy, params] constraint margins, relative; <= 0 means met (Optuna's convention).

        A candidate rejected on its predicted latency (never measured) gets its latency margin from
        the prediction, so the samplers still learn that its region of the space is over budget.
        """
        latency = record.latency_ms if record.latency_ms is not None else record.predicted_ms
        lat = latency / self.max_latency_ms - 1.0 if self.max_latency_ms is not None and latency is not None else 0.0
        acc = (self.min_accuracy - record.accuracy
               if self.min_accuracy is not None and record.accuracy is not None else 0.0)
        size = (record.params / self.max_params - 1.0
                if self.max_params is not None and record.params is not None else 0.0)
        return [lat, acc, size]

    def feasible(self, record: TrialRecord) -> bool:
        """A complete trial with every objective measured that meets every constraint."""
        return record.state == TrialState.COMPLETE and self.vector(record) is not None and not self.violations(record)

    def front(self, records: Sequence[TrialRecord]) -> list[TrialRecord]:
        """The Pareto-optimal feasible trials (duplicates of an earlier trial counted once), sorted by
        latency (or, without a latency objective, by the first objective)."""
        pool = [r for r in records if self.feasible(r) and r.duplicate_of is None]
        vectors = [self.vector(r) for r in pool]
        key = "latency" if "latency" in self.objectives else self.objectives[0]
        front = [pool[i] for i in pareto_front(vectors, self.maximize)]  # type: ignore[arg-type]
        return sorted(front, key=lambda r: r.objective(key) or 0.0)

    def hypervolume(self, records: Iterable[TrialRecord]) -> float:
        """Hypervolume of the feasible trials' normalised objectives against ``reference``."""
        vectors = [self.vector(r) for r in records if self.feasible(r)]
        ref = [self.reference[o] for o in self.objectives]
        return hypervolume(vectors, self.maximize, ref)  # type: ignore[arg-type]

    def hypervolume_history(self, records: Iterable[TrialRecord]) -> list[float]:
        """The hypervolume after each record, in order; keeps a running front so a long run stays cheap."""
        ref = [self.reference[o] for o in self.objectives]
        front: list[list[float]] = []
        history = []
        for record in records:
            vector = self.vector(record) if self.feasible(record) else None
            if vector is not None and not any(q == vector or dominates(q, vector, self.maximize) for q in front):
                front = [q for q in front if not dominates(vector, q, self.maximize)] + [vector]
            history.append(hypervolume(front, self.maximize, ref))  # type: ignore[arg-type]
        return history

    def score(self, record: TrialRecord, accuracy: float | None = None) -> float:
        """The scalar score: sum of weight x normalised objective (costs count negatively).

        A constraint violation subtracts 1 plus the relative size of each violation, so every
        infeasible trial scores below every feasible one with the same objectives. A trial
        without a full-fidelity accuracy may be scored with a stand-in ``accuracy`` (its
        proxy); a trial with nothing measured scores ``FAILED_SCORE``.
        """
        total = 0.0
        for name in self.objectives:
            value = accuracy if name == "accuracy" and accuracy is not None else record.objective(name)
            if value is None:
                return FAILED_SCORE
            sign = 1.0 if OBJECTIVES[name] == "maximize" else -1.0
            total += sign * self.weights.get(name, 1.0) * self.normalise(name, value)
        penalty = 0.0
        if self._too_slow(record):
            penalty += 1.0 + record.latency_ms / self.max_latency_ms - 1.0
        acc = accuracy if accuracy is not None else record.accuracy
        if self.min_accuracy is not None and acc is not None and acc < self.min_accuracy:
            penalty += 1.0 + (self.min_accuracy - acc)
        if self.max_params is not None and record.params is not None and record.params > self.max_params:
            penalty += 1.0 + record.params / self.max_params - 1.0
        return total - penalty
