"""PlanSpace: the discovered groups of a model crossed with a SearchSpace, as Optuna parameters.

Every agent's proposal is stored as Optuna parameters ``ratio/<group>`` (and
``structure/<group>`` when a group has more than one allowed structure), so every trial,
whatever agent proposed it, lives in the same study with the same distributions.

A group's structures are those the space allows on its layer type (``layer_structures``,
else ``structures``) that the hardware profile also runs fast (``fast_structures``; ``none``
needs no kernel). Other combinations are never part of a distribution, so no agent can
propose them.

Droppable blocks (depth pruning, unit ``block``) are offered where the space allows ``drop`` on
the block's type (``layer_structures: {BertLayer: [drop]}``) or, for types it does not list, in
``structures``; ``drop`` needs no kernel. A block is then the choice ``drop``/``none``
(``structure/<block>``, no ratio). Baselines that sweep one ratio (uniform, RL) keep blocks.

A plan's precision is one more categorical, ``precision``, over the space's ``precisions`` that
the profile's backend runs (``config.runnable_precisions``; the config rejects a space listing
one it cannot run); a space with a single precision adds no parameter, so fp32-only studies keep
the parameters they always had. The space's ``keep_fp32`` globs are the layers a quantized plan
keeps in fp32: all of them in every quantized plan, or, with ``search_keep_fp32``, a searched
yes/no per glob (``keep_fp32/<glob>``, ignored by fp32 plans).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from autoprune.config import SearchSpace
from autoprune.plan import DEFAULT_PRECISION, GroupPlan, PrunerSettings, PruningPlan
from autoprune.pruning.graph import PrunableGroup
from autoprune.pruning.structured import kept_channels

RATIO = "ratio/"
STRUCTURE = "structure/"
PRECISION = "precision"
KEEP_FP32 = "keep_fp32/"


def allowed_structures(group: PrunableGroup, space: SearchSpace, fast_structures: tuple[str, ...]) -> tuple[str, ...]:
    """Structures a group may take: allowed on its layer type and fast on the target (a block: ``drop`` and
    ``none`` where ``drop`` is allowed, else only ``none``)."""
    listed = space.layer_structures.get(group.root_type, space.structures)
    if group.unit == "block":
        return ("drop", "none") if "drop" in listed else ("none",)
    allowed = tuple(s for s in listed if s != "drop" and (s in fast_structures or s == "none"))
    return allowed or ("none",)


def droppable(blocks: list[PrunableGroup], space: SearchSpace) -> list[PrunableGroup]:
    """The blocks the space lets a plan drop."""
    return [b for b in blocks if "drop" in space.layer_structures.get(b.root_type, space.structures)]


def layer_macs(model, example_input) -> dict[str, float]:
    """Multiply-accumulates of every Conv/Linear layer in one forward pass, by module name."""
    import torch
    from torch import nn

    from autoprune.inputs import call

    macs: dict[str, float] = {}

    def hook(name: str):
        def record(module, _inputs, output) -> None:
            per_output = module.weight[0].numel()  # in_channels/groups x kernel (conv) or in_features (linear)
            macs[name] = macs.get(name, 0.0) + float(output.numel() // output.shape[0] * per_output)
        return record


    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    try:
        with torch.no_grad():
            call(model, example_input)  # a dict of inputs goes by name (a tensor is never unpacked)
    finally:
        for h in handles:
            h.remove()
    return macs


@dataclass(frozen=True, kw_only=True)
class PlanSpace:
    """The set of plans an agent may propose for one model, space and profile.

    Attributes:
        groups: prunable groups in graph order (the order the RL agent walks them).
        space: the search space settings (ratio grid, minimum widths).
        group_structures: the allowed structures of each group, by group name.
        macs: MACs of each Conv/Linear layer by name (empty: unknown; estimates then use channels).
        settings: the pruner's settings (its channel rounding decides which plans build the same candidate).
        unit_scores: per group, the dense model's mean-normalised importance of each unit the pruner
            removes (channel positions, or heads), as :func:`autoprune.pruning.ranking.unit_scores`
            gives them; empty unless an agent ranks channels (``global``).
        precisions: the precisions a plan may take (the first is the default of baselines that do not choose).
    """

    groups: tuple[PrunableGroup, ...]
    space: SearchSpace
    group_structures: Mapping[str, tuple[str, ...]]
    settings: PrunerSettings
    macs: Mapping[str, float] = field(default_factory=dict)
    unit_scores: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    precisions: tuple[str, ...] = (DEFAULT_PRECISION,)

    @classmethod
    def build(cls, groups: list[PrunableGroup], space: SearchSpace, settings: PrunerSettings,
              fast_structures: tuple[str, ...], *, macs: Mapping[str, float] | None = None,
              unit_scores: Mapping[str, tuple[float, ...]] | None = None,
              runnable_precisions: tuple[str, ...] | None = None) -> PlanSpace:
        """Only structures both the space allows (per layer type) and the profile runs fast are proposed, and
        only the space's precisions the profile runs (``runnable_precisions``; None: all the space lists)."""
        precisions = tuple(p for p in space.precisions if runnable_precisions is None or p in runnable_precisions)
        return cls(groups=tuple(groups), space=space, settings=settings,
                   group_structures={g.name: allowed_structures(g, space, fast_structures) for g in groups},
                   macs=dict(macs or {}), unit_scores=dict(unit_scores or {}),
                   precisions=precisions or (DEFAULT_PRECISION,))

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def is_block(self, name: str) -> bool:
        return next(g for g in self.groups if g.name == name).unit == "block"

    @property
    def ratio_grid(self) -> list[float]:
        """Every ratio on the space's grid, ascending."""
        step = self.space.ratio_step
        count = round((self.space.ratio_max - self.space.ratio_min) / step)
        return [round(self.space.ratio_min + i * step, 6) for i in range(count + 1)]

    def distributions(self) -> dict[str, BaseDistribution]:
        grid = self.ratio_grid
        dists: dict[str, BaseDistribution] = {}
        for name in self.names:
            if not self.is_block(name):
                dists[RATIO + name] = FloatDistribution(grid[0], grid[-1], step=self.space.ratio_step)
            if len(self.group_structures[name]) > 1:
                dists[STRUCTURE + name] = CategoricalDistribution(self.group_structures[name])
        if len(self.precisions) > 1:
            dists[PRECISION] = CategoricalDistribution(self.precisions)
        for glob in self.searched_keep_fp32:
            dists[KEEP_FP32 + glob] = CategoricalDistribution((False, True))
        return dists

    @property
    def searched_keep_fp32(self) -> tuple[str, ...]:
        """The globs whose fp32-or-not is a searched parameter (none unless the space searches it and a plan can
        be quantized)."""
        quantized = any(p != DEFAULT_PRECISION for p in self.precisions)
        return self.space.keep_fp32 if self.space.search_keep_fp32 and quantized else ()

    def keep_fp32(self, precision: str, params: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        """The layers a plan in ``precision`` keeps in fp32: none in fp32; the space's globs, or those whose
        searched parameter in ``params`` says yes."""
        if precision == DEFAULT_PRECISION:
            return ()
        if not self.space.search_keep_fp32:
            return self.space.keep_fp32
        return tuple(g for g in self.space.keep_fp32 if (params or {}).get(KEEP_FP32 + g, False))

    def plan_from_params(self, params: Mapping[str, Any]) -> PruningPlan:
        precision = str(params.get(PRECISION, self.precisions[0]))
        return PruningPlan.of({
            name: GroupPlan(ratio=round(float(params.get(RATIO + name, 0.0)), 6),
                            structure=str(params.get(STRUCTURE + name, self.group_structures[name][0])))
            for name in self.names
        }, precision, self.keep_fp32(precision, params))

    def params_from_plan(self, plan: PruningPlan) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, group in plan.groups:
            if not self.is_block(name):
                params[RATIO + name] = group.ratio
            if len(self.group_structures[name]) > 1:
                params[STRUCTURE + name] = group.structure
        if len(self.precisions) > 1:
            params[PRECISION] = plan.precision
        for glob in self.searched_keep_fp32:
            params[KEEP_FP32 + glob] = glob in plan.keep_fp32
        return params

    def snap_ratio(self, ratio: float) -> float:
        """The nearest ratio on the space's grid."""
        step = self.space.ratio_step
        snapped = self.space.ratio_min + round((ratio - self.space.ratio_min) / step) * step
        return round(min(max(snapped, self.space.ratio_min), self.ratio_grid[-1]), 6)

    def default_structure(self, name: str) -> str:
        """The structure a single-structure baseline uses on a group: channel when allowed."""
        allowed = self.group_structures[name]
        if self.is_block(name):
            return "none"  # a one-ratio baseline keeps the depth
        return "channel" if "channel" in allowed else next((s for s in allowed if s != "none"), allowed[0])

    def uniform_plan(self, ratio: float, precision: str | None = None) -> PruningPlan:
        """The same ratio on every group, each with its default structure, in ``precision`` (default: the first)."""
        precision = precision or self.precisions[0]
        return PruningPlan.of({n: GroupPlan(ratio=0.0 if self.is_block(n) else self.snap_ratio(ratio),
                                            structure=self.default_structure(n)) for n in self.names},
                              precision, self.keep_fp32(precision))

    def kept_fraction(self, name: str, plan_group: GroupPlan) -> float:
        """Share of a group's channels (or weights) a plan keeps, after the pruner's rounding."""
        if plan_group.is_noop:
            return 1.0
        if plan_group.structure == "drop":
            return 0.0
        if plan_group.structure == "channel":
            channels = next(g.channels for g in self.groups if g.name == name)
            return kept_channels(channels, plan_group.ratio, self.settings.round_to,
                                 self.settings.min_channels) / channels
        return 1.0 - plan_group.ratio

    def canonical(self, plan: PruningPlan) -> str:
        """A key equal for plans that build the same candidate (identical after channel rounding)."""
        parts = []
        for name, group in plan.groups:
            if group.is_noop:
                parts.append(f"{name}=dense")
            elif group.structure == "drop":
                parts.append(f"{name}=drop")
            elif group.structure == "channel":
                channels = next(g.channels for g in self.groups if g.name == name)
                kept = kept_channels(channels, group.ratio, self.settings.round_to, self.settings.min_channels)
                parts.append(f"{name}=channel:{kept}")
            else:
                parts.append(f"{name}={group.structure}:{group.ratio:.6f}")
        if plan.precision != DEFAULT_PRECISION:
            parts.append(f"{PRECISION}={plan.precision}")
        if plan.keep_fp32:
            parts.append(f"keep_fp32={','.join(plan.keep_fp32)}")
        return ";".join(parts)

    def layer_groups(self) -> dict[str, list[str]]:
        """For each Conv/Linear layer with known MACs, the groups whose pruning shrinks it."""
        out: dict[str, list[str]] = {layer: [] for layer in self.macs}
        for g in self.groups:
            for layer in g.layers:
                if layer in out:
                    out[layer].append(g.name)
        return out

    def mac_shares(self) -> dict[str, float]:
        """Each group's share of the model's MACs (layers it shrinks; shares may overlap)."""
        total = sum(self.macs.values())
        if not total:
            channels = sum(g.channels for g in self.groups) or 1
            return {g.name: g.channels / channels for g in self.groups}
        shares = {n: 0.0 for n in self.names}
        for layer, names in self.layer_groups().items():
            for n in names:
                shares[n] += self.macs[layer] / total
        return shares

    def mac_fraction(self, keep: Mapping[str, float]) -> float:
        """Estimated MACs of a candidate as a share of dense, from each group's kept fraction.

        A layer's MACs scale with the kept share of every group it belongs to (its output
        channels and its input channels); groups missing from ``keep`` count as dense.
        """
        total = sum(self.macs.values())
        if not total:
            return sum(keep.get(n, 1.0) * s for n, s in self.mac_shares().items())
        kept = 0.0
        for layer, names in self.layer_groups().items():
            kept += self.macs[layer] * math.prod(keep.get(n, 1.0) for n in names)
        return kept / total
