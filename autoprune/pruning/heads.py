"""What a model records about its attention heads, kept true after heads or head widths change.

Removing whole heads shrinks the q/k/v projections and the output projection's input; the
module that runs the attention usually stores the head count (``num_heads``,
``num_attention_heads``) and sometimes the total width (``all_head_size``, ``attn_dim``), which
its forward uses to reshape. Those attributes are updated in the smallest module holding all
the group's layers. A Hugging Face ``config`` shared by the layers gets ``pruned_heads`` (per
layer index) and a new ``num_attention_heads`` only when every layer it describes agrees.

``nn.MultiheadAttention`` cannot lose whole heads (its q/k/v width is tied to ``embed_dim``):
pruning the residual stream shrinks every head alike, which changes the softmax scale
``1/sqrt(head_dim)``. :func:`keep_attention_scale` folds the old scale into the query weights, so
the pruned layer computes what the dense one computed without the removed channels.
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

#: attribute names under which attention modules store their head count
HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_heads", "n_head", "heads")
#: attribute names under which attention modules store the total width of their heads
HEAD_WIDTH_ATTRS = ("all_head_size", "attn_dim", "inner_dim", "inner_size")


def owner(model: nn.Module, names: dict[nn.Module, str], layers: list[nn.Module]) -> nn.Module:
    """The smallest module that holds every one of ``layers``."""
    parts = [names[m].split(".") for m in layers if m in names]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    # the common prefix may be a layer itself (one fused projection): its parent owns the attention
    path = ".".join(common)
    if path and any(names.get(m) == path for m in layers):
        path = path.rsplit(".", 1)[0] if "." in path else ""
    return model.get_submodule(path) if path else model


def update_head_attrs(root: nn.Module, heads: tuple[int, int], width: tuple[int, int]) -> list[str]:
    """Set head-count and head-width attributes inside ``root`` from (old, new) values; returns what changed."""
    changed = []
    for name, module in root.named_modules():
        for attr, (old, new) in [*((a, heads) for a in HEAD_ATTRS), *((a, width) for a in HEAD_WIDTH_ATTRS)]:
            value = getattr(module, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value == old and old != new:
                setattr(module, attr, new)
                changed.append(f"{name + '.' if name else ''}{attr}")
    return changed


def record_in_configs(model: nn.Module, pruned: dict[nn.Module, list[int]]) -> None:
    """Record removed heads in Hugging Face-style configs (``pruned_heads``; ``num_attention_heads`` when uniform).

    Args:
        pruned: per attention owner module, the original indices of the heads it lost.
    """
    by_config: dict[int, list[tuple[nn.Module, list[int]]]] = defaultdict(list)
    configs = {}
    for module, dropped in pruned.items():
        for sub in module.modules():
            config = getattr(sub, "config", None)
            if config is not None and isinstance(getattr(config, "num_attention_heads", None), int):
                by_config[id(config)].append((sub, dropped))
                configs[id(config)] = config
                break
    for key, entries in by_config.items():
        config = configs[key]
        record = dict(getattr(config, "pruned_heads", None) or {})
        for sub, dropped in entries:
            index = getattr(sub, "layer_idx", None)
            if isinstance(index, int):
                record[index] = sorted(set(record.get(index, [])) | set(dropped))
        try:
            config.pruned_heads = record
        except (AttributeError, TypeError):
            pass
        users = [m for m in model.modules() if getattr(m, "config", None) is config
                 and isinstance(getattr(m, "num_attention_heads", None), int)]
        counts = {m.num_attention_heads for m in users}
        if len(counts) == 1:
            config.num_attention_heads = counts.pop()


def head_widths(model: nn.Module) -> dict[nn.MultiheadAttention, int]:
    """The current head width of every ``nn.MultiheadAttention``.

    Call before pruning and pass the result to :func:`keep_attention_scale`.
    """
    return {m: m.head_dim for m in model.modules() if isinstance(m, nn.MultiheadAttention)}


@torch.no_grad()
def keep_attention_scale(before: dict[nn.MultiheadAttention, int]) -> None:
    """Fold the dense softmax scale into the query projection of every MultiheadAttention whose heads narrowed."""
    for mha, old in before.items():
        new = mha.head_dim
        if new == old:
            continue
        factor = math.sqrt(new / old)  # (factor * q') . k' / sqrt(new) == q' . k' / sqrt(old)
        e = mha.embed_dim
        if mha.in_proj_weight is not None:
            mha.in_proj_weight[:e].mul_(factor)
        else:
            mha.q_proj_weight.mul_(factor)
        if mha.in_proj_bias is not None:
            mha.in_proj_bias[:e].mul_(factor)
