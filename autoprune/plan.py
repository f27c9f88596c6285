"""What the pruner applies: a PruningPlan (per prunable group) and the PrunerSettings that fix how.

Plans cross process boundaries as plain dicts (``to_dict``/``from_dict``) so a worker can
rebuild a candidate from the plan alone; ``digest`` is a stable hash for de-duplication. The
settings are built once per search from its space and profile and saved beside every plan, so
a candidate is rebuilt (runner, reload, export) exactly as it was pruned (``config.pruner_settings``
builds them).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autoprune.errors import PlanError
from autoprune.registry import IMPORTANCES
from autoprune.validation import check_choice, check_int, check_list, is_list, require

#: Structure choices a group can take. ``none`` leaves the group dense; ``drop`` removes a whole block
#: (a droppable block of a layer stack, see ``pruning/blocks.py``; its ratio is ignored).
STRUCTURES = ("channel", "unstructured", "nm", "drop", "none")
#: how masked structures rank weights: per layer, or across all layers of the group
MASK_SCOPES = ("layer", "group")
#: numeric precisions a plan can ship in (which ones a search may propose: the space's
#: ``precisions`` that the profile's backend runs, ``LatencyBackend.runnable_precisions``)
PRECISIONS = ("fp32", "int8", "fp16")
#: the precision of a plan that names none (every plan written before precision was searched)
DEFAULT_PRECISION = "fp32"
#: the key of a plan dict that holds a non-default precision (a str, where groups hold mappings)
PRECISION_KEY = "precision"
#: the key of a plan dict that lists the layers a quantized plan keeps in fp32 (a list, where groups hold mappings)
KEEP_FP32_KEY = "keep_fp32"


@dataclass(frozen=True, kw_only=True)
class GroupPlan:
    """How one prunable group is pruned: a structure and the share of it to remove (``drop``: all of it, the ratio
    is ignored)."""

    ratio: float
    structure: str = "channel"

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise PlanError(f"structure {self.structure!r} is not one of {', '.join(STRUCTURES)}")
        if not 0.0 <= self.ratio < 1.0:
            raise PlanError(f"ratio must be in [0, 1), got {self.ratio}")

    @property
    def is_noop(self) -> bool:
        return self.structure == "none" or (self.ratio == 0.0 and self.structure != "drop")


@dataclass(frozen=True, kw_only=True)
class PruningPlan:
    """A per-group plan; group names are the ones graph discovery reports.

    ``precision`` is the numeric precision the candidate ships in (``PRECISIONS``): the pruned,
    fine-tuned model is quantized to it before it is evaluated and measured. ``keep_fp32`` lists
    layer-name globs (module names, as the space's ``ignore``; a group's name is its root layer's)
    whose layers a quantized plan leaves in fp32, sorted so equal plans have equal digests.
    """

    groups: tuple[tuple[str, GroupPlan], ...] = field(default_factory=tuple)
    precision: str = DEFAULT_PRECISION
    keep_fp32: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise PlanError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if not is_list(self.keep_fp32) or not all(isinstance(p, str) and p for p in self.keep_fp32):
            raise PlanError(f"keep_fp32 must be a list of layer-name globs, got {self.keep_fp32!r}")
        if self.keep_fp32 and self.precision == DEFAULT_PRECISION:
            raise PlanError(f"keep_fp32 {list(self.keep_fp32)} applies to a quantized plan; this one is all fp32")
        object.__setattr__(self, "keep_fp32", tuple(sorted(set(self.keep_fp32))))

    @classmethod
    def of(cls, groups: Mapping[str, GroupPlan], precision: str = DEFAULT_PRECISION,
           keep_fp32: tuple[str, ...] = ()) -> PruningPlan:
        return cls(groups=tuple(sorted(groups.items())), precision=precision, keep_fp32=tuple(keep_fp32))

    @classmethod
    def uniform(cls, names: list[str], ratio: float, structure: str = "channel",
                precision: str = DEFAULT_PRECISION, keep_fp32: tuple[str, ...] = ()) -> PruningPlan:
        return cls.of({n: GroupPlan(ratio=ratio, structure=structure) for n in names}, precision, keep_fp32)

    def as_dict(self) -> dict[str, GroupPlan]:
        return dict(self.groups)

    def to_dict(self) -> dict[str, Any]:
        """Group name -> {ratio, structure}; a precision other than fp32 under ``PRECISION_KEY`` (a str), and the
        layers kept in fp32, when any, under ``KEEP_FP32_KEY`` (a list).

        An fp32 plan writes neither, so its dict and ``digest`` are those of a plan written before
        precision existed. Read the groups of a plan dict with :func:`plan_groups`.
        """
        data: dict[str, Any] = {n: {"ratio": g.ratio, "structure": g.structure} for n, g in self.groups}
        if self.precision != DEFAULT_PRECISION:
            for key in (PRECISION_KEY, KEEP_FP32_KEY):
                if key in data:
                    raise PlanError(f"a group named {key!r} cannot carry precision {self.precision!r}")
            data[PRECISION_KEY] = self.precision
            if self.keep_fp32:
                data[KEEP_FP32_KEY] = list(self.keep_fp32)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruningPlan:
        """Rebuild from ``to_dict()``; a plan dict without a precision is fp32."""
        try:
            return cls.of({n: GroupPlan(ratio=float(g["ratio"]), structure=str(g.get("structure", "channel")))
                           for n, g in plan_groups(data).items()}, plan_precision(data),
                          tuple(data.get(KEEP_FP32_KEY) or ()))
        except PlanError as err:
            raise PlanError(f"plan: {err}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise PlanError(f"plan is malformed: {err}") from None

    def digest(self) -> str:
        """A short stable hash of the plan (order-independent)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def mean_ratio(self) -> float:
        active = [1.0 if g.structure == "drop" else g.ratio for _, g in self.groups if g.structure != "none"]
        return sum(active) / len(active) if active else 0.0


def plan_groups(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The group entries of a plan dict (``PruningPlan.to_dict``), without its precision and fp32 layers."""
    return {n: g for n, g in data.items() if not ((n == PRECISION_KEY and isinstance(g, str))
                                                   or (n == KEEP_FP32_KEY and isinstance(g, list)))}


def plan_precision(data: Mapping[str, Any]) -> str:
    """The precision of a plan dict (fp32 when it names none)."""
    value = data.get(PRECISION_KEY)
    return value if isinstance(value, str) else DEFAULT_PRECISION


@dataclass(frozen=True, kw_only=True)
class PrunerSettings:
    """The pruner's settings that, with a plan, decide a candidate (see ``pruning.apply_plan``).

    Attributes:
        round_to: kept channel counts are multiples of this (the width the target's kernels run fast).
        min_channels: no group keeps fewer channels than this (nor fewer than one unit).
        importance: the registered criterion that chooses which channels or weights go (``IMPORTANCES``).
        ignore: glob patterns of module names never to prune.
        nm: (N, M) of the ``nm`` structure.
        mask_scope: ``layer`` ranks masked weights per layer, ``group`` across the group's layers.
    """

    round_to: int = 1
    min_channels: int = 1
    importance: str = "l2"
    ignore: tuple[str, ...] = ()
    nm: tuple[int, int] = (2, 4)
    mask_scope: str = "layer"

    def __post_init__(self) -> None:
        check_int("round_to", self.round_to, 1)
        check_int("min_channels", self.min_channels, 1)
        check_choice("importance", self.importance, IMPORTANCES.names())
        check_choice("mask_scope", self.mask_scope, MASK_SCOPES)
        check_list("ignore", self.ignore, "layer-name globs", lambda v: isinstance(v, str))
        require(is_list(self.nm) and len(self.nm) == 2 and all(isinstance(v, int) for v in self.nm)
                and 0 < self.nm[0] < self.nm[1], f"`nm` must be [N, M] with 0 < N < M, got "
                f"{list(self.nm) if is_list(self.nm) else repr(self.nm)}")

    def to_dict(self) -> dict[str, Any]:
        return {"round_to": self.round_to, "min_channels": self.min_channels, "importance": self.importance,
                "ignore": list(self.ignore), "nm": list(self.nm), "mask_scope": self.mask_scope}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrunerSettings:
        """Rebuild from ``to_dict()``; fields a file does not hold keep their defaults."""
        values = dict(data)
        for key in ("ignore", "nm"):
            if is_list(values.get(key)):  # anything else is left for __post_init__ to reject
                values[key] = tuple(values[key])
        return cls(**values)
