"""torch-pruning's DependencyGraph with the guards real models need.

torch-pruning traces a model and maps channel indices across reshapes, concatenations and
splits with heuristics that assume channel-first 2D/4D tensors. On real models those
heuristics can fail or run away:

* an index mapping can raise (ShuffleNetV2's reshape mapping divides by zero), which made the
  whole model untraceable;
* flatten mappings chained through channel-last reshapes (Swin) multiply index lists past a
  million entries, and the group search never finishes.

:class:`GuardedGraph` keeps every torch-pruning rule but isolates those failures: an index
mapping that raises marks only its node as unmappable; index lists longer than any tensor in
the model can hold, or a group search that does not settle, stop with :class:`Unmappable`.
:meth:`GuardedGraph.groups` then yields every root with either its group or the reason it has
none, so one bad coupling leaves out one group and the rest of the model stays prunable.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from autoprune.inputs import Inputs, call, flatten_outputs


class Unmappable(Exception):
    """A group whose channel mapping torch-pruning cannot compute (the message says where and why)."""


def _tp():
    import torch_pruning as tp

    return tp


def _updaters() -> dict[Any, Callable]:
    from torch_pruning.dependency import index_mapping as im

    ops = _tp().ops.OPTYPE
    return {ops.CONCAT: im.update_concat_index_mapping, ops.SPLIT: im.update_split_index_mapping,
            ops.RESHAPE: im.update_reshape_index_mapping, ops.UNBIND: im.update_unbind_index_mapping,
            ops.EXPAND: im.update_expand_index_mapping, ops.SLICE: im.update_slice_index_mapping}


class _BoundedMapping:
    """An index mapping that refuses to produce more indices than any tensor of the model has channels."""

    def __init__(self, mapping: Callable, limit: int, where: str) -> None:
        self.mapping, self.limit, self.where = mapping, limit, where

    def __call__(self, idxs: list) -> list:
        stride = getattr(self.mapping, "_stride", 1)
        if not getattr(self.mapping, "reverse", True) and len(idxs) * stride > self.limit:
            raise Unmappable(self._message(len(idxs) * stride))
        try:
            out = self.mapping(idxs)
        except Exception as err:  # noqa: BLE001 - a heuristic mapping given offsets that do not fit
            raise Unmappable(f"torch-pruning's index mapping failed at {self.where} ({_err(err)})") from None
        if len(out) > self.limit:
            raise Unmappable(self._message(len(out)))
        return out

    def _message(self, n: int) -> str:
        return (f"torch-pruning's index mapping at {self.where} grows to {n} indices, more than any layer of the "
                f"model has ({self.limit}): a view/reshape of the channel axis it cannot map (a channel shuffle, "
                "or a channel-last tensor read as channel-first)")


class GuardedGraph:
    """A torch-pruning DependencyGraph (``.graph``) built with failure isolation and bounded group search."""

    def __init__(self, model: nn.Module, inputs: Inputs) -> None:
        """Trace ``model`` on ``inputs`` (called as :func:`autoprune.inputs.call` does: a tensor is never unpacked).

        Raises:
            Exception: whatever the model's forward or torch-pruning's tracer raises.
        """
        tp = _tp()
        self.model = model
        self.unmappable: dict[Any, str] = {}
        self.names = {m: n for n, m in model.named_modules()}
        self._stale = True
        outs: list[Any] = []

        def forward(m: nn.Module, x: Inputs) -> Any:
            outs.append(call(m, x))
            return outs[-1]

        graph = tp.DependencyGraph()
        graph.get_pruner_of_module = _memoized(graph.get_pruner_of_module)  # 100k+ type lookups per model otherwise
        graph.verbose = False
        graph.model = model
        graph._module2name = dict(self.names)
        graph.ignored_params = []
        graph._param_to_name, graph.unwrapped_parameters = graph._detect_unwrapped_parameters(None)
        graph.module2node = graph._trace(model, inputs, forward, output_transform=_traceable_outputs)
        graph._build_dependency(graph.module2node)
        self.graph = graph
        self.output = outs[-1]
        self.limit = 4 * _widest(model)
        self.max_steps = 50 * len(graph.module2node) + 1000
        try:
            from torch_pruning.dependency import shape_infer

            shape_infer.init_shape_information(graph)
        except Exception as err:  # noqa: BLE001 - torch-pruning's shape heuristics on a real model
            for node in graph.module2node.values():
                if node.type == tp.ops.OPTYPE.SPLIT:
                    self.unmappable[node] = f"torch-pruning's split shape inference failed ({_err(err)})"
        self.refresh()

    # ------------------------------------------------------------------ index mapping
    def refresh(self) -> None:
        """Recompute every index mapping (after pruning, concat/split offsets change); failures mark their node."""
        updaters = _updaters()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Maximum recursive depth reached!": a mapping it gives up on, handled
            for node in self.graph.module2node.values():
                update = updaters.get(node.type)
                if update is None or node in self.unmappable:
                    continue
                try:
                    update(self.graph, node)
                except Exception as err:  # noqa: BLE001 - one bad heuristic must not sink the model
                    self.unmappable[node] = (f"torch-pruning's index mapping failed at {self.describe(node)} "
                                             f"({_err(err)})")
        for node in self.graph.module2node.values():
            for dep in node.dependencies:
                for i, mapping in enumerate(dep.index_mapping):
                    if mapping is not None and not isinstance(mapping, _BoundedMapping):
                        dep.index_mapping[i] = _BoundedMapping(mapping, self.limit, self.describe(dep.target))
        self._stale = False

    def mark_pruned(self) -> None:
        """Note that layers changed width: mappings are recomputed before the next group is built."""
        self._stale = True

    def describe(self, node) -> str:
        """A node as a user reads it: the module name, or the op (``reshape``, ``cat``...) and what feeds it."""
        name = self.names.get(node.module) or self.graph._module2name.get(node.module)
        if name:
            return name
        grad_fn = getattr(node, "grad_fn", None)
        op = grad_fn.name() if grad_fn is not None and hasattr(grad_fn, "name") else type(node.module).__name__
        feeders = [self.names.get(n.module) for n in node.inputs if self.names.get(n.module)]
        return f"{op} after {feeders[0]}" if feeders else op

    # ------------------------------------------------------------------ groups
    def get_pruning_group(self, module: nn.Module, pruning_fn: Callable, idxs: list[int]):
        """torch-pruning's ``get_pruning_group`` with three guards (unmappable nodes, bounded indices and steps).

        Raises:
            Unmappable: the group passes through a node whose mapping failed, or its search runs away.
        """
        from torch_pruning import _helpers
        from torch_pruning.dependency.dependency import Dependency

        tp, graph = _tp(), self.graph
        if self._stale:
            self.refresh()
        if isinstance(module, tp.ops.TORCH_CONV) and module.groups == module.out_channels and module.out_channels > 1:
            pruning_fn = tp.prune_depthwise_conv_out_channels
        root = graph.module2node[module]
        first = Dependency(pruning_fn, pruning_fn, source=root, target=root)
        items = [(first, [_helpers._HybridIndex(idx=i, root_idx=i) for i in idxs])]
        ops = {(id(root), pruning_fn, tuple(items[0][1]))}
        visited, stack, steps = set(), [items[0]], 0
        while stack:
            steps += 1
            if steps > self.max_steps:
                raise Unmappable(f"torch-pruning's dependency search from {self.describe(root)} does not settle "
                                 f"after {self.max_steps} steps")
            dep, dep_idxs = stack.pop()
            node, fn = dep.target, dep.handler
            visited.add(node)
            for new_dep in node.dependencies:
                if not new_dep.is_triggered_by(fn):
                    continue
                for end in (new_dep.source, new_dep.target):
                    if end in self.unmappable:
                        raise Unmappable(self.unmappable[end])
                new_idxs = dep_idxs
                for mapping in new_dep.index_mapping:
                    if mapping is not None:
                        new_idxs = mapping(new_idxs)
                key = (id(new_dep.target), new_dep.handler, tuple(new_idxs))
                if not new_idxs or (new_dep.target in visited and key in ops):
                    continue
                ops.add(key)
                items.append((new_dep, new_idxs))
                stack.append((new_dep, new_idxs))
        return self._merged(items)

    def _merged(self, items: list[tuple[Any, list]]):
        """One group item per (layer, handler), indices merged by position (torch-pruning's ``add_and_merge``)."""
        from torch_pruning import _helpers
        from torch_pruning.dependency.group import Group

        by_op: dict[tuple[int, Any], tuple[Any, list, set[int]]] = {}
        for dep, dep_idxs in items:
            _, kept, seen = by_op.setdefault((id(dep.target), dep.handler), (dep, [], set()))
            for index in dep_idxs:
                if index.idx not in seen:
                    seen.add(index.idx)
                    kept.append(index)
        merged = Group()
        merged._DG = self.graph
        for dep, kept, _ in by_op.values():
            merged.add_dep(dep, _helpers.to_plain_idxs(kept))
            merged[len(merged) - 1].root_idxs = _helpers.to_root_idxs(kept)
        return merged

    def groups(self, root_types: tuple[type, ...], ignored: set[nn.Module]) -> Iterator[tuple[nn.Module, Any, str]]:
        """Every root layer with its full-index group, or None and why none could be built.

        A root whose group contains a layer of ``ignored`` is yielded with that reason (every layer
        of such a group stays as it is). Layers already covered by an earlier group are not roots.
        """
        graph, covered = self.graph, set()
        for module in list(graph.module2node):
            if not isinstance(module, root_types) or module in covered:
                continue
            pruner = graph.get_pruner_of_module(module)
            if pruner is None or pruner.get_out_channels(module) is None:
                continue
            covered.add(module)
            if module in ignored:
                continue
            try:
                group = self.get_pruning_group(module, pruner.prune_out_channels,
                                               list(range(pruner.get_out_channels(module))))
            except Unmappable as err:
                yield module, None, str(err)
                continue
            outs = [dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)]
            covered.update(o for o in outs if isinstance(o, nn.Module))
            blocked = [o for o in outs if isinstance(o, nn.Module) and o in ignored]
            if blocked:
                yield module, None, f"coupled with the user-ignored layer {self.names.get(blocked[0], '?')}"
                continue
            yield module, group, ""


def _memoized(lookup: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``get_pruner_of_module`` remembered per module: a module's pruner never changes while it is pruned."""
    cache: dict[int, tuple[Any, Any]] = {}

    def pruner_of(module: Any) -> Any:
        hit = cache.get(id(module))
        if hit is None or hit[0] is not module:
            hit = (module, lookup(module))
            cache[id(module)] = hit
        return hit[1]

    return pruner_of


def _traceable_outputs(out: Any) -> list[torch.Tensor]:
    """The output tensors torch-pruning can trace back (ModelOutput, dicts, tuples with None all flattened)."""
    return [t for _, t in flatten_outputs(out) if t.grad_fn is not None]


def _widest(model: nn.Module) -> int:
    """The largest dimension of any parameter: no channel set can be wider than a tensor the model has."""
    return max((max(p.shape) for p in model.parameters() if p.dim()), default=1)


def _err(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
