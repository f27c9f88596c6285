"""PruningPlan: what an agent proposes and the pruner applies, per prunable group.

Plans cross process boundaries as plain dicts (``to_dict``/``from_dict``) so a worker can
rebuild a candidate from the plan alone; ``digest`` is a stable hash for de-duplication.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autoprune.errors import PlanError

#: Structure choices a group can take. ``none`` leaves the group dense.
STRUCTURES = ("channel", "unstructured", "nm", "none")


@dataclass(frozen=True, kw_only=True)
class GroupPlan:
    """How one prunable group is pruned: a structure and the share of it to remove."""

    ratio: float
    structure: str = "channel"

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise PlanError(f"structure {self.structure!r} is not one of {', '.join(STRUCTURES)}")
        if not 0.0 <= self.ratio < 1.0:
            raise PlanError(f"ratio must be in [0, 1), got {self.ratio}")

    @property
    def is_noop(self) -> bool:
        return self.structure == "none" or self.ratio == 0.0


@dataclass(frozen=True, kw_only=True)
class PruningPlan:
    """A per-group plan; group names are the ones graph discovery reports."""

    groups: tuple[tuple[str, GroupPlan], ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, groups: Mapping[str, GroupPlan]) -> PruningPlan:
        return cls(groups=tuple(sorted(groups.items())))

    @classmethod
    def uniform(cls, names: list[str], ratio: float, structure: str = "channel") -> PruningPlan:
        return cls.of({n: GroupPlan(ratio=ratio, structure=structure) for n in names})

    def as_dict(self) -> dict[str, GroupPlan]:
        return dict(self.groups)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {n: {"ratio": g.ratio, "structure": g.structure} for n, g in self.groups}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> PruningPlan:
        try:
            return cls.of({n: GroupPlan(ratio=float(g["ratio"]), structure=str(g.get("structure", "channel")))
                           for n, g in data.items()})
        except PlanError as err:
            raise PlanError(f"plan: {err}") from None
        except (KeyError, TypeError, ValueError) as err:
            raise PlanError(f"plan is malformed: {err}") from None

    def digest(self) -> str:
        """A short stable hash of the plan (order-independent)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def mean_ratio(self) -> float:
        active = [g.ratio for _, g in self.groups if g.structure != "none"]
        return sum(active) / len(active) if active else 0.0
