"""Importance criteria: which channels (structured) or weights (masks) to keep.

Call order: ``imp = make_importance(name)``; ``imp.calibrate(model, batches)`` once before
pruning (a no-op unless the criterion needs data); then ``imp(group)`` for each torch-pruning
group (one score per channel of the group's root, higher = keep) and ``imp.weight_scores(module)``
for each masked layer (one score per weight). The search space's ``importance`` field names one.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoprune.registry import IMPORTANCES

WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
#: a calibration batch: (inputs, targets), (inputs, None), or bare inputs (a tensor or a dict of tensors);
#: inputs may be a tensor, a tuple or a dict of tensors (see :mod:`autoprune.inputs`)
Batch = Any


class Importance(ABC):
    """Scores the channels of a prunable group; ``calibrate`` first when ``needs_data``."""

    #: whether ``calibrate`` must see real batches (otherwise the example input is enough)
    needs_data: bool = False

    def calibrate(self, model: nn.Module, batches: Iterable[Batch]) -> None:  # noqa: B027 - optional: data-free criteria need nothing
        """Collect what the criterion needs from a few batches (inputs, or (inputs, targets))."""

    @abstractmethod
    def __call__(self, group) -> torch.Tensor | None:
        """One score per channel of the group's root layer; None when the group has no weights to judge."""

    def weight_scores(self, module: nn.Module) -> torch.Tensor:
        """One score per element of ``module.weight`` (magnitude unless the criterion knows better)."""
        return module.weight.detach().abs()


def _magnitude(p: int, **kwargs):
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=p, **kwargs)


class _MagnitudeImportance(Importance):
    """Group Lp norm of every weight that touches the channel (``p`` set by the subclass)."""

    p: int

    def __init__(self) -> None:
        self._imp = _magnitude(self.p)

    def __call__(self, group) -> torch.Tensor | None:
        return self._imp(group)


class L1Importance(_MagnitudeImportance):
    """Group L1 norm of every weight that touches the channel."""

    p = 1


class L2Importance(_MagnitudeImportance):
    """Group L2 norm (squared) of every weight that touches the channel."""

    p = 2


class BNScaleImportance(Importance):
    """|gamma| of the group's BatchNorm layers (network slimming); L1 for groups without BatchNorm."""

    def __init__(self) -> None:
        import torch_pruning as tp

        self._bn = tp.importance.BNScaleImportance()
        self._fallback = _magnitude(1)

    def __call__(self, group) -> torch.Tensor | None:
        scores = self._bn(group)
        return scores if scores is not None else self._fallback(group)


def _forward_batches(model: nn.Module, batches: Iterable[Batch]):
    """(output, targets) per batch; a 2-tuple or list is (inputs, targets), anything else is inputs alone."""
    from autoprune.inputs import call

    for batch in batches:
        inputs, targets = batch if isinstance(batch, (tuple, list)) and len(batch) == 2 else (batch, None)
        yield call(model, inputs), targets


class TaylorImportance(Importance):
    """First-order Taylor: |w * dL/dw| summed per channel, gradients from a few calibration batches.

    The loss is cross-entropy when batches carry class targets, else the mean squared output
    (a label-free proxy that still ranks weights by their effect on the output).
    """

    needs_data = True

    def __init__(self) -> None:
        import torch_pruning as tp

        self._imp = tp.importance.GroupTaylorImportance()

    def calibrate(self, model: nn.Module, batches: Iterable[Batch]) -> None:
        from autoprune.inputs import primary_output

        model.zero_grad(set_to_none=True)
        was_training = model.training
        model.eval()  # keep BatchNorm statistics untouched
        with torch.enable_grad():
            for out, targets in _forward_batches(model, batches):
                out = primary_output(out)
                loss = F.cross_entropy(out, targets) if targets is not None and out.dim() == 2 else out.pow(2).mean()
                loss.backward()
        model.train(was_training)

    def __call__(self, group) -> torch.Tensor | None:
        return self._imp(group)

    def weight_scores(self, module: nn.Module) -> torch.Tensor:
        grad = module.weight.grad
        if grad is None:
            return super().weight_scores(module)
        return (module.weight.detach() * grad).abs()


class WandaImportance(Importance):
    """Activation-aware (Wanda): |W_ij| * ||X_j||, the input channel's L2 norm over calibration batches.

    A channel's score sums the element scores of every Linear/Conv weight row or column in
    its group, so a channel fed by large activations is kept even when its weights are small.
    """

    needs_data = True

    def __init__(self) -> None:
        self._tp = _magnitude(1)  # reuses torch-pruning's per-root-index reduction and normalisation
        self.norms: dict[nn.Module, torch.Tensor] = {}

    def calibrate(self, model: nn.Module, batches: Iterable[Batch]) -> None:
        sums: dict[nn.Module, torch.Tensor] = {}

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], _out) -> None:
            if not inputs or not isinstance(inputs[0], torch.Tensor):
                return
            x = inputs[0].detach()
            dims = [d for d in range(x.dim()) if d != (1 if isinstance(module,
                                                                       nn.modules.conv._ConvNd) else x.dim() - 1)]
            sq = x.pow(2).sum(dim=dims)
            sums[module] = sums.get(module, 0) + sq

        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, WEIGHTED)]
        try:
            with torch.no_grad():
                for _ in _forward_batches(model, batches):
                    pass
        finally:
            for h in handles:
                h.remove()
        self.norms = {m: s.sqrt() for m, s in sums.items()}

    def _element_scores(self, module: nn.Module) -> torch.Tensor:
        w = module.weight.detach().abs()
        norm = self.norms.get(module)
        if norm is None or norm.numel() != module.weight.shape[1] * getattr(module, "groups", 1):
            return w  # not seen in calibration (or pruned since): magnitude
        if isinstance(module, nn.Linear):
            return w * norm
        groups = module.groups
        per_out = norm.view(groups, -1).repeat_interleave(module.out_channels // groups, dim=0)
        return w * per_out.view(*per_out.shape, *([1] * (w.dim() - 2)))

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        import torch_pruning as tp

        out_fns = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
        in_fns = (tp.prune_conv_in_channels, tp.prune_linear_in_channels)
        scores, root_idxs = [], []
        for i, (dep, idxs) in enumerate(group):
            layer, fn = dep.target.module, dep.handler
            if not isinstance(layer, WEIGHTED) or getattr(layer, "transposed", False):
                continue
            if fn in out_fns:
                scores.append(self._element_scores(layer)[idxs].flatten(1).sum(1))
            elif fn in in_fns:
                local = self._element_scores(layer).transpose(0, 1).flatten(1).sum(1)
                if isinstance(layer, nn.modules.conv._ConvNd) and 1 < layer.groups != layer.in_channels:
                    local = local.repeat(layer.groups)
                scores.append(local[idxs])
            else:
                continue
            root_idxs.append(group[i].root_idxs)
        if not scores:
            return None
        return self._tp._normalize(self._tp._reduce(scores, root_idxs), "mean")

    def weight_scores(self, module: nn.Module) -> torch.Tensor:
        return self._element_scores(module)


class RandomImportance(Importance):
    """Uniform random scores from a fixed seed: the baseline every criterion must beat."""

    def __init__(self, seed: int = 0) -> None:
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, group) -> torch.Tensor | None:
        n = len(group[0][1])
        return torch.rand(n, generator=self._gen)

    def weight_scores(self, module: nn.Module) -> torch.Tensor:
        return torch.rand(module.weight.shape, generator=self._gen)


def make_importance(name: str, *, where: str = "importance") -> Importance:
    """A fresh criterion by registry name (ConfigError listing the valid names otherwise)."""
    importance: Importance = IMPORTANCES.get(name, where=where)()
    return importance


def calibration_batches(dataset, batches: int = 4, batch_size: int = 32) -> list[Batch]:
    """The first ``batches`` (inputs, targets) batches of ``dataset`` (fixed order, for reproducible scores)."""
    from torch.utils.data import DataLoader

    out = []
    for i, batch in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False)):
        if i >= batches:
            break
        out.append(tuple(batch) if isinstance(batch, (tuple, list)) else batch)
    return out
