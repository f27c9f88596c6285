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
        return sorted({p for p, r in zip(self.positions, self.roots, strict=False) if r in roots})


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
            for p, r in zip(member.positions, member.roots, strict=False):
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


    @contextlib.contextmanager
    def _gradient_pass(self, groups: Iterable[list[Member]], observe: Iterable[nn.Module]):
        """A teacher-forced forward pass in which gradients flow only from the groups' producers to the observed inputs.

        Every producer output gets a zero offset that requires grad; parameters the groups prune
        require grad; nothing else does. Yields (sources: module or parameter -> tensor whose grad
        is wanted, seen: observed module -> its incoming input tensors), inside ``enable_grad``.
        """
        members = [m for g in groups for m in g]
        producers = {m.target for m in members if m.produces and isinstance(m.target, nn.Module)}
        params = list({id(m.target): m.target for m in members if isinstance(m.target, nn.Parameter)}.values())
        observe = set(observe)
        sources: dict[Any, torch.Tensor] = {p: p for p in params}
        seen: dict[nn.Module, list[torch.Tensor]] = defaultdict(list)
        calls: dict[nn.Module, int] = defaultdict(int)

        def pre(module: nn.Module, args: tuple, kwargs: dict):
            i = calls[module]
            calls[module] += 1
            if module in observe:
                seen[module].extend(t for t in _float_tensors((args, kwargs)) if t.requires_grad)
            return _detach(self.recorded[module][i]) if i < len(self.recorded[module]) else None

        def post(module: nn.Module, _args: tuple, out: Any):
            main = out[0] if isinstance(out, tuple) else out
            if not isinstance(main, torch.Tensor) or not main.is_floating_point():
                return None
            sources[module] = torch.zeros_like(main, requires_grad=True)
            main = main + sources[module]
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
                yield sources, seen
        finally:
            for h in hooks:
                h.remove()
            for p, state in grad_state.items():
                p.requires_grad_(state)

    def _hits(self, member: Member, grads: dict[Any, torch.Tensor | None]) -> set[int]:
        """The member's positions whose gradient is not zero (they reach what the loss reads)."""
        grad = grads.get(member.target) if member.produces else None
        if grad is None:
            return set()
        axis = member.param_dim if isinstance(member.target, nn.Parameter) else self.axis(member.target, grad.shape, 1)
        hit = grad.abs().movedim(axis, 0).reshape(grad.shape[axis], -1).amax(dim=1) > 0
        return set(torch.nonzero(hit).flatten().tolist()) & set(member.positions)

    def _grads(self, loss: torch.Tensor, sources: dict[Any, torch.Tensor]) -> dict[Any, torch.Tensor | None]:
        keys = list(sources)
        grads = torch.autograd.grad(loss, [sources[k] for k in keys], retain_graph=True, allow_unused=True)
        return dict(zip(keys, grads, strict=False))

    def _read(self, module: nn.Module, seen: dict, positions: list[int], gen: torch.Generator) -> torch.Tensor:
        """A random weighting of the observed input positions: its gradient reaches whatever feeds them."""
        loss = torch.zeros(())
        for x in seen.get(module, []):
            axis = self.axis(module, x.shape, 0)
            picked = x.index_select(axis % x.dim(), torch.tensor(sorted(positions)))
            loss = loss + (picked * torch.rand(picked.shape, generator=gen)).sum()
        return loss

    def influence(self, groups: dict[str, list[Member]], blocks: dict[str, tuple[nn.Module, list[list[int]]]]
                  ) -> dict[str, list[set[int]]]:
        """Per group, per block of positions at its consumer, the root channels that reach the block.

        One gradient pass (:meth:`_gradient_pass`); one backward pass per block index serves every
        group at once (teacher forcing keeps groups apart).

        Args:
            groups: the members of each group.
            blocks: per group, the consumer observed and its blocks of input positions.
        """
        gen = torch.Generator().manual_seed(self.seed)
        result: dict[str, list[set[int]]] = {name: [] for name in blocks}
        with self._gradient_pass(groups.values(), [c for c, _ in blocks.values()]) as (sources, seen):
            for k in range(max(len(b) for _, b in blocks.values())):
                active = {n: b for n, b in blocks.items() if k < len(b[1])}
                loss = sum((self._read(c, seen, parts[k], gen) for c, parts in active.values()), torch.zeros(()))
                grads = self._grads(loss, sources) if loss.requires_grad else {}
                for name in active:
                    roots: set[int] = set()
                    for m in groups[name]:
                        hits = self._hits(m, grads)
                        roots |= {r for p, r in zip(m.positions, m.roots, strict=False) if p in hits}
                    result[name].append(roots)
        return result

    def reaching(self, groups: dict[str, list[Member]], marked: dict[str, set[int]],
                 sites: dict[nn.Module, set[int]]) -> dict[str, nn.Module]:
        """Per group whose marked root channels reach some of the given input positions, the first layer reached.

        This attributes a leak seen with every group marked at once to the groups that cause it.
        """
        gen = torch.Generator().manual_seed(self.seed)
        found: dict[str, nn.Module] = {}
        with self._gradient_pass(groups.values(), sites) as (sources, seen):
            for layer, positions in sites.items():
                loss = self._read(layer, seen, sorted(positions), gen)
                if not loss.requires_grad:
                    continue
                grads = self._grads(loss, sources)
                for name, group in groups.items():
                    if name not in found and any(self._hits(m, grads) & set(m.at(marked[name])) for m in group):
                        found[name] = layer
        return found


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
    for now, ref in zip(_float_tensors(seen), _float_tensors(dense), strict=False):
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
        Per failing group, why: its dropped channels reach an input position the plan keeps (a leak),
        or its kept channels reach a position the plan removes (an over-claim). A failure is seen
        with all groups marked at once and attributed by gradients to the groups whose marks cause
        it; the groups left are checked again until a run is clean.
    """
    failures: dict[str, str] = {}
    remaining = dict(groups)
    while remaining:
        found = _check_together(probe, remaining, {n: drops[n] for n in remaining})
        if not found:
            break
        failures.update(found)
        remaining = {n: g for n, g in remaining.items() if n not in found}
    return failures


def _check_together(probe: Probe, groups: dict[str, list[Member]], drops: dict[str, set[int]]) -> dict[str, str]:
    """The groups that fail one marked run pair (dropped channels marked, then kept ones), with the reason."""
    claimed: dict[nn.Module, set[int]] = defaultdict(set)
    dropped, kept = Marks(), Marks()
    kept_roots = {}
    for name, group in groups.items():
        roots = drops[name]
        kept_roots[name] = {r for m in group for r in m.roots} - roots
        for m in group:
            if m.consumes and isinstance(m.target, nn.Module):
                claimed[m.target].update(m.at(roots))
            dropped.add(m, m.at(roots))
            kept.add(m, m.at(kept_roots[name]))
    names = probe.model_names
    failures: dict[str, str] = {}
    changed = probe.run(dropped, probe.layers)
    leaks = {layer: changed_positions(changed, layer) - claimed.get(layer, set()) for layer in changed}
    leaks = {layer: p for layer, p in leaks.items() if p}
    if leaks:
        for name, layer in probe.reaching(groups, drops, leaks).items():
            failures[name] = (f"dropping its channels does not remove what reaches input channel {min(leaks[layer])} "
                              f"of {names.get(layer, '?')}: an op between its layers moves channels in a way "
                              "torch-pruning's index mapping does not follow (e.g. a channel shuffle or a "
                              "channel-last reshape)")
    changed = probe.run(kept, claimed.keys())
    over = {layer: changed_positions(changed, layer) & positions for layer, positions in claimed.items()}
    over = {layer: p for layer, p in over.items() if p}
    if over:
        for name, layer in probe.reaching(groups, kept_roots, over).items():
            failures.setdefault(name, f"input channel {min(over[layer])} of {names.get(layer, '?')} would be removed "
                                      "but carries channels the plan keeps (torch-pruning maps the group onto the "
                                      "wrong positions)")
    if (leaks or over) and not failures:  # seen but not attributable (no gradient path): refuse them all
        where = next(iter(leaks or over))
        failures = dict.fromkeys(groups, f"marks of its channels reach {names.get(where, '?')} in a way the numeric "
                                         "check cannot attribute to one group")
    return failures


def find_units(probe: Probe, groups: dict[str, list[Member]],
               channels: dict[str, int]) -> dict[str, list[list[int]] | str]:
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
            if len(parts) == 1:
                result[name] = "every channel mixes with every other (an op between its layers combines channels)"
            else:
                blocks[name] = (m.target, parts)
            break
    if blocks:
        roots = probe.influence({n: groups[n] for n in blocks}, blocks)
        for name, units in roots.items():
            result[name] = _as_units(units, channels[name], probe.model_names.get(blocks[name][0], "?"))
    return result


def _blocks(reached: list[int], positions: list[int]) -> list[list[int]]:
    """The consumer's positions split into aligned blocks: the smallest block size dividing the width whose
    block holds every position root channel 0 reached.

    A head's output positions need not all show a mark (a value channel that is constant over tokens does not
    change when the attention weights do), so the reached set may have gaps at either end; the blocks are
    then checked by the unit partition and by dropping whole heads.
    """
    width = len(positions)
    lo, hi = positions.index(reached[0]), positions.index(reached[-1])
    size = next(b for b in range(hi - lo + 1, width + 1) if width % b == 0 and lo // b == hi // b)
    return [positions[i:i + size] for i in range(0, width, size)]


def _as_units(units: list[set[int]], channels: int, consumer: str) -> list[list[int]] | str:
    """Head units if they partition the root channels into equal disjoint sets, else why not."""
    sizes = {len(u) for u in units}
    covered = set().union(*units) if units else set()
    if len(sizes) != 1 or sum(map(len, units)) != len(covered) or len(covered) != channels:
        return (f"its channels mix in blocks at {consumer} that do not split them into equal disjoint heads "
                "(an op between its layers mixes heads)")
    return [sorted(u) for u in units]
