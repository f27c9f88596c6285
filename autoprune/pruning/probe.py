"""Numeric checks of channel couplings: teacher-forced runs of the dense model with marked channels.

torch-pruning decides which input positions of each consumer layer a group's channels reach from
op-by-op heuristics. Where those heuristics are wrong (a ``view``/``transpose`` channel shuffle, a
reshape of a channel-last tensor, an op it treats as element-wise although it mixes channels), the
model it prunes runs but computes something else. This module checks the claim numerically.

A *probe run* replays the dense model with every layer that belongs to a group *teacher-forced*:
each such layer receives exactly the input it received in a plain dense run, whatever its
producers computed. Marks (random offsets) added to chosen output channels of producer layers
(or to slices of parameters) therefore travel only through the parameter-free ops between a
producer and its consumers, and the input positions where a consumer sees a change are exactly
the positions those channels reach. Every group is checked at once in a few forward passes:

* marks on the channels a plan would drop must reach only the positions claimed for them
  (otherwise a kept position reads a dropped channel: *leak*);
* marks on the kept channels must never reach a claimed position (otherwise a dropped position
  still carries kept signal: *over-claim*).

The same runs find attention heads by dataflow: marking one channel of a q/k/v projection
changes a whole block of the output projection's input (the head it belongs to), while in a
plain channel group one channel reaches one position. See :func:`find_units`.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from autoprune.inputs import Inputs, call

#: modules whose channels sit on dimension 1 (N, C, ...); every other module's sit on the last dimension
CHANNEL_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                 nn.modules.instancenorm._InstanceNorm, nn.PReLU)


def channel_axis(module: nn.Module, shape: torch.Size | None = None, width: int | None = None) -> int:
    """The dimension of a module's input/output activations that holds its ``width`` channels.

    Conv/BatchNorm-like modules hold them on dimension 1, others on the last one; a module that
    permutes inside (a channel-first LayerNorm) is recognised by where ``width`` appears in ``shape``.
    """
    default = 1 if isinstance(module, CHANNEL_FIRST) else -1
    if shape is None or width is None or len(shape) < 2 or shape[default] == width:
        return default
    for dim in (-1, 1, *range(len(shape) - 2, 1, -1)):
        if shape[dim] == width:
            return dim
    return default


@dataclass
class Member:
    """One layer (or parameter) of a group with the positions of the group's channels in it.

    Attributes:
        target: the module, or an ``nn.Parameter`` torch-pruning prunes directly (position embeddings).
        produces: its output channels (or the parameter's slices) carry the group's channels.
        consumes: its input channels carry them.
        positions: the positions along its channel axis, one per entry of ``roots``.
        roots: for each position, the root channel it stems from.
        param_dim: for a parameter, the dimension torch-pruning prunes.
    """

    target: Any
    produces: bool
    consumes: bool
    positions: list[int]
    roots: list[int]
    param_dim: int = -1

    def at(self, roots: set[int]) -> list[int]:
        """The positions that stem from the given root channels."""
        return sorted({p for p, r in zip(self.positions, self.roots) if r in roots})


def members(graph, group, names: dict) -> list[Member]:
    """The layers of a torch-pruning group as the probe sees them (parameter-free ops are skipped)."""
    found: dict[tuple[int, bool, bool], Member] = {}
    for item in group:
        dep, idxs = item.dep, list(item.idxs)
        target = dep.target.module
        roots = list(item.root_idxs)
        if isinstance(target, nn.Parameter):
            key = (id(target), True, False)
            member = Member(target=target, produces=True, consumes=False, positions=idxs, roots=roots,
                            param_dim=dep.target.pruning_dim)
        elif isinstance(target, nn.Module) and target in names:
            out = graph.is_out_channel_pruning_fn(dep.handler)
            both = out and graph.is_in_channel_pruning_fn(dep.handler)
            key = (id(target), out, both or not out)
            member = Member(target=target, produces=out, consumes=both or not out, positions=idxs, roots=roots)
        else:
            continue
        if key in found:  # the same layer reached twice (merged by torch-pruning already, kept for safety)
            old = found[key]
            seen = set(old.positions)
            for p, r in zip(member.positions, member.roots):
                if p not in seen:
                    old.positions.append(p)
                    old.roots.append(r)
        else:
            found[key] = member
    return list(found.values())


@dataclass
class Marks:
    """What one probe run marks: channels of producer layers, slices of parameters."""

    outputs: dict[nn.Module, list[int]] = field(default_factory=lambda: defaultdict(list))
    params: dict[int, tuple[nn.Parameter, int, list[int]]] = field(default_factory=dict)

    def add(self, member: Member, positions: Iterable[int]) -> None:
        positions = list(positions)
        if not positions or not member.produces:
            return
        if isinstance(member.target, nn.Parameter):
            _, dim, old = self.params.get(id(member.target), (member.target, member.param_dim, []))
            self.params[id(member.target)] = (member.target, dim, old + positions)
        else:
            self.outputs[member.target].extend(positions)


class Probe:
    """Teacher-forced runs of a model (see the module docstring).

    Args:
        model: the dense model (left unchanged; its parameters are restored after each run).
        inputs: the example input.
        layers: the layers to teacher-force: every module that belongs to some group.
    """

    def __init__(self, model: nn.Module, inputs: Inputs, layers: Iterable[nn.Module],
                 widths: dict[nn.Module, tuple[int | None, int | None]] | None = None, seed: int = 0) -> None:
        self.model, self.inputs = model, inputs
        self.widths = widths or {}
        self.model_names = {m: n for n, m in model.named_modules()}
        self.layers = list(dict.fromkeys(layers))
        self.seed = seed
        self.recorded: dict[nn.Module, list[tuple[tuple, dict]]] = defaultdict(list)
        hooks = [m.register_forward_pre_hook(self._record, with_kwargs=True) for m in self.layers]
        try:
            with torch.no_grad():
                call(model, inputs)
        finally:
            for h in hooks:
                h.remove()

    def axis(self, module: nn.Module, shape: torch.Size, side: int) -> int:
        """The channel dimension of a tensor of ``shape`` entering (``side`` 0) or leaving (1) ``module``."""
        return channel_axis(module, shape, self.widths.get(module, (None, None))[side])

    def _record(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.recorded[module].append((_detach(args), _detach(kwargs)))

    def run(self, marks: Marks, observe: Iterable[nn.Module]) -> dict[nn.Module, torch.Tensor]:
        """One teacher-forced run with ``marks``; per observed layer, which input channels changed (bool per channel).

        A layer called several times reports a channel as changed when any call saw it change.
        """
        observe = set(observe)
        calls: dict[nn.Module, int] = defaultdict(int)
        changed: dict[nn.Module, torch.Tensor] = {}
        gen = torch.Generator().manual_seed(self.seed)

        def pre(module: nn.Module, args: tuple, kwargs: dict):
            i = calls[module]
            calls[module] += 1
            if i >= len(self.recorded[module]):
                return None
            dense_args, dense_kwargs = self.recorded[module][i]
            if module in observe:
                diff = _changed(self, module, (args, kwargs), (dense_args, dense_kwargs))
                if diff is not None:
                    changed[module] = diff if module not in changed else changed[module] | diff
            return _detach((dense_args, dense_kwargs))  # a copy: a layer may write to its input in place

        def post(module: nn.Module, _args: tuple, out: Any):
            positions = marks.outputs.get(module)
            if not positions:
                return None
            main = out[0] if isinstance(out, tuple) else out
            if not isinstance(main, torch.Tensor):
                return None
            return _mark_output(out, self.axis(module, main.shape, 1), positions, gen)

        hooks = [m.register_forward_pre_hook(pre, with_kwargs=True) for m in self.layers]
        hooks += [m.register_forward_hook(post) for m in marks.outputs]
        try:
            with torch.no_grad(), _marked_params(marks, gen):
                call(self.model, self.inputs)
        finally:
            for h in hooks:
                h.remove()
        return changed


    def influence(self, groups: dict[str, list[Member]], blocks: dict[str, tuple[nn.Module, list[list[int]]]]
                  ) -> dict[str, list[set[int]]]:
        """Per group, per block of positions at its consumer, the root channels that reach the block.

        One teacher-forced forward pass with gradients flowing only from producer outputs (a zero
        offset that requires grad) to consumer inputs; one backward pass per block index serves
        every group at once (teacher forcing keeps groups apart).

        Args:
            groups: the members of each group.
            blocks: per group, the consumer observed and its blocks of input positions.
        """
        offsets: dict[nn.Module, torch.Tensor] = {}
        seen: dict[nn.Module, list[torch.Tensor]] = defaultdict(list)
        producers = {m.target for g in groups.values() for m in g if m.produces and isinstance(m.target, nn.Module)}
        params = [m.target for g in groups.values() for m in g if isinstance(m.target, nn.Parameter)]
        consumers = {target for target, _ in blocks.values()}
        calls: dict[nn.Module, int] = defaultdict(int)

        def pre(module: nn.Module, args: tuple, kwargs: dict):
            i = calls[module]
            calls[module] += 1
            if module in consumers:
                seen[module].extend(list(_float_tensors((args, kwargs)))[:1])
            return _detach(self.recorded[module][i]) if i < len(self.recorded[module]) else None

        def post(module: nn.Module, _args: tuple, out: Any):
            main = out[0] if isinstance(out, tuple) else out
            if not isinstance(main, torch.Tensor) or not main.is_floating_point():
                return None
            offsets[module] = torch.zeros_like(main, requires_grad=True)
            main = main + offsets[module]
            return (main, *out[1:]) if isinstance(out, tuple) else main

        grad_state = {p: p.requires_grad for p in self.model.parameters()}
        hooks = [m.register_forward_pre_hook(pre, with_kwargs=True) for m in self.layers]
        hooks += [m.register_forward_hook(post) for m in producers]
        try:
            for p in self.model.parameters():
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            with torch.enable_grad():
                call(self.model, self.inputs)
                return self._block_roots(groups, blocks, offsets, params, seen)
        finally:
            for h in hooks:
                h.remove()
            for p, state in grad_state.items():
                p.requires_grad_(state)

    def _block_roots(self, groups, blocks, offsets, params, seen) -> dict[str, list[set[int]]]:
        sources = list(offsets.values()) + params
        keys = list(offsets) + params
        gen = torch.Generator().manual_seed(self.seed)
        result: dict[str, list[set[int]]] = {name: [] for name in blocks}
        for k in range(max(len(b) for _, b in blocks.values())):
            loss = torch.zeros(())
            for name, (consumer, parts) in blocks.items():
                if k >= len(parts):
                    continue
                for x in seen[consumer]:
                    if not x.requires_grad:
                        continue
                    axis = self.axis(consumer, x.shape, 0)
                    picked = x.index_select(axis % x.dim(), torch.tensor(parts[k]))
                    loss = loss + (picked * torch.rand(picked.shape, generator=gen)).sum()
            if not loss.requires_grad:
                continue
            grads = torch.autograd.grad(loss, sources, retain_graph=True, allow_unused=True)
            by_key = dict(zip(keys, grads))
            for name in blocks:
                if k >= len(blocks[name][1]):
                    continue
                roots: set[int] = set()
                for m in groups[name]:
                    grad = by_key.get(m.target) if m.produces else None
                    if grad is None:
                        continue
                    axis = m.param_dim if isinstance(m.target, nn.Parameter) else self.axis(m.target, grad.shape, 1)
                    hit = grad.abs().movedim(axis, 0).reshape(grad.shape[axis], -1).amax(dim=1) > 0
                    roots |= {r for p, r in zip(m.positions, m.roots) if bool(hit[p])}
                result[name].append(roots)
        return result


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_detach(v) for v in value)
    if isinstance(value, list):
        return [_detach(v) for v in value]
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


def _float_tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _float_tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _float_tensors(v)


def _changed(probe: Probe, module: nn.Module, seen: Any, dense: Any) -> torch.Tensor | None:
    """Per channel of the module's input, whether any input tensor differs from the dense run."""
    result = None
    for now, ref in zip(_float_tensors(seen), _float_tensors(dense)):
        if now.shape != ref.shape or now.dim() == 0:
            continue
        axis = probe.axis(module, now.shape, 0)
        diff = (now - ref).abs().movedim(axis, 0).reshape(now.shape[axis], -1).amax(dim=1)
        scale = ref.abs().max().clamp_min(1e-6)
        flag = diff > 1e-5 * scale
        if result is None:
            result = flag
        elif result.shape == flag.shape:
            result = result | flag
    return result


def _offsets(shape: torch.Size, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Random positive marks in [1, 2): scaled by the tensor's largest magnitude, a marked value stays positive,
    so a ReLU or a max-pool after the mark cannot hide it."""
    return (1.0 + torch.rand(shape, generator=gen)).to(dtype)


def _mark_output(out: Any, axis: int, positions: list[int], gen: torch.Generator) -> Any:
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        return (_mark_output(out[0], axis, positions, gen), *out[1:])
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        return None
    index = torch.tensor(sorted(set(positions)), dtype=torch.long)
    shape = list(out.shape)
    shape[axis] = len(index)
    scale = out.abs().amax().clamp_min(1.0)
    return out.index_add(axis % out.dim(), index, _offsets(torch.Size(shape), gen, out.dtype) * scale)


@contextlib.contextmanager
def _marked_params(marks: Marks, gen: torch.Generator):
    saved = []
    try:
        with torch.no_grad():
            for param, dim, positions in marks.params.values():
                saved.append((param, param.detach().clone()))
                index = torch.tensor(sorted(set(positions)), dtype=torch.long)
                shape = list(param.shape)
                shape[dim] = len(index)
                scale = param.abs().amax().clamp_min(1.0)
                param.index_add_(dim % param.dim(), index, _offsets(torch.Size(shape), gen, param.dtype) * scale)
        yield
    finally:
        with torch.no_grad():
            for param, value in saved:
                param.copy_(value)


# ---------------------------------------------------------------------- checks built on runs
def changed_positions(changed: dict[nn.Module, torch.Tensor], module: nn.Module) -> set[int]:
    flags = changed.get(module)
    return set() if flags is None else set(torch.nonzero(flags).flatten().tolist())


def check_drops(probe: Probe, groups: dict[str, list[Member]], drops: dict[str, set[int]]) -> dict[str, str]:
    """Check, for every group at once, that dropping the root channels ``drops[name]`` cuts exactly what it claims.

    Args:
        groups: per group name, its members (from :func:`members`).
        drops: per group name, the root channels a plan would drop.

    Returns:
        Per failing group, why (a leak into a kept position, or a dropped position that still
        carries kept signal). A failure seen with all groups marked together is confirmed on the
        suspect alone; one that no suspect shows alone is narrowed down by bisection.
    """
    if not groups:
        return {}
    failures = _check_together(probe, groups, drops)
    if not failures:
        return {}
    if len(groups) == 1:
        name = next(iter(groups))
        return {name: failures.get(name) or next(iter(failures.values()))}
    confirmed: dict[str, str] = {}
    for name in (n for n in failures if n in groups):
        confirmed.update(_check_together(probe, {name: groups[name]}, {name: drops[name]}) and
                         {name: failures[name]})
    if not confirmed:
        names = list(groups)
        half = len(names) // 2
        for part in (names[:half], names[half:]):
            confirmed.update(check_drops(probe, {n: groups[n] for n in part}, {n: drops[n] for n in part}))
        if not confirmed:  # only the combination fails: refuse every group involved rather than prune wrongly
            reason = next(iter(failures.values()))
            return dict.fromkeys(groups, f"{reason} (seen only with other groups pruned)")
    rest = {n: m for n, m in groups.items() if n not in confirmed}
    return {**confirmed, **check_drops(probe, rest, {n: drops[n] for n in rest})}


def _check_together(probe: Probe, groups: dict[str, list[Member]], drops: dict[str, set[int]]) -> dict[str, str]:
    """Failures of one marked run pair; keys are the group owning the position where it showed ('' if none)."""
    claimed: dict[nn.Module, dict[int, str]] = defaultdict(dict)
    region: dict[nn.Module, dict[int, str]] = defaultdict(dict)
    dropped, kept = Marks(), Marks()
    for name, group in groups.items():
        roots = drops[name]
        for m in group:
            if m.consumes and isinstance(m.target, nn.Module):
                for p, r in zip(m.positions, m.roots):
                    region[m.target][p] = name
                    if r in roots:
                        claimed[m.target][p] = name
            dropped.add(m, m.at(roots))
            kept.add(m, sorted(set(m.positions) - set(m.at(roots))))
    names = probe.model_names
    failures: dict[str, str] = {}
    changed = probe.run(dropped, probe.layers)
    for layer in changed:
        for p in sorted(changed_positions(changed, layer) - set(claimed.get(layer, {}))):
            owner = region.get(layer, {}).get(p, "")
            failures.setdefault(owner, f"input channel {p} of {names.get(layer, '?')} reads a channel the plan drops "
                                       "(an op between its layers moves channels in a way torch-pruning's index "
                                       "mapping does not follow, e.g. a channel shuffle or a channel-last reshape)")
    changed = probe.run(kept, claimed.keys())
    for layer, owners in claimed.items():
        for p in sorted(changed_positions(changed, layer) & set(owners)):
            failures.setdefault(owners[p], f"input channel {p} of {names.get(layer, '?')} would be removed but "
                                           "carries channels the plan keeps (torch-pruning maps the group onto the "
                                           "wrong positions)")
    return failures


def find_units(probe: Probe, groups: dict[str, list[Member]], channels: dict[str, int]) -> dict[str, list[list[int]] | str]:
    """Per group whose channels mix in blocks (attention heads), its units: lists of root channels removed together.

    One run marks root channel 0 of every group. Where that reaches more consumer positions than
    torch-pruning's mapping claims, the group's channels interact (q and k channels of one head
    meet in a dot product): the block of positions reached at the consumer is one head, and the
    consumer's input splits into aligned blocks of that size. Each head's unit is every root
    channel that reaches its block (found by gradients: q/k channels need not map to the consumer
    at all). A group whose channels reach every position, or whose blocks do not tile the width or
    do not partition its channels evenly, gets a reason instead.
    """
    first = Marks()
    for group in groups.values():
        for m in group:
            first.add(m, m.at({0}))
    consumers = {m.target for g in groups.values() for m in g if m.consumes and isinstance(m.target, nn.Module)}
    changed = probe.run(first, consumers)
    result: dict[str, list[list[int]] | str] = {}
    blocks: dict[str, tuple[nn.Module, list[list[int]]]] = {}
    for name, group in groups.items():
        for m in group:
            if not (m.consumes and isinstance(m.target, nn.Module)):
                continue
            reached = sorted(changed_positions(changed, m.target) & set(m.positions))
            if len(reached) <= len(m.at({0})):
                continue
            parts = _blocks(reached, sorted(set(m.positions)))
            if isinstance(parts, str):
                result[name] = parts
            elif len(parts) == 1:
                result[name] = "every channel mixes with every other (an op between its layers combines channels)"
            else:
                blocks[name] = (m.target, parts)
            break
    if blocks:
        roots = probe.influence({n: groups[n] for n in blocks}, blocks)
        for name, units in roots.items():
            result[name] = _as_units(units, channels[name], probe.model_names.get(blocks[name][0], "?"))
    return result


def _blocks(reached: list[int], positions: list[int]) -> list[list[int]] | str:
    """The consumer's positions split into aligned blocks the size of the one root channel 0 reached."""
    size = len(reached)
    if reached != list(range(reached[0], reached[0] + size)) or reached[0] % size or len(positions) % size:
        return f"its channels mix in blocks of {size} that do not tile its consumer's input (not whole heads)"
    return [positions[i:i + size] for i in range(0, len(positions), size)]


def _as_units(units: list[set[int]], channels: int, consumer: str) -> list[list[int]] | str:
    """Head units if they partition the root channels into equal disjoint sets, else why not."""
    sizes = {len(u) for u in units}
    covered = set().union(*units) if units else set()
    if len(sizes) != 1 or sum(map(len, units)) != len(covered) or len(covered) != channels:
        return (f"its channels mix in blocks at {consumer} that do not split them into equal disjoint heads "
                "(an op between its layers mixes heads)")
    return [sorted(u) for u in units]
