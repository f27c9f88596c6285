"""Real model families from torchvision, timm and Hugging Face transformers, random init, no downloads.

CNNs are the libraries' own architectures at full width (cheap at 32-64 px); transformers use
the libraries' own classes at small widths and depths, so a test runs in seconds. ``REAL`` maps a
name to ``(factory, example input)``; a factory raises ``pytest.skip`` when its library is missing.
Import through :func:`autoprune.compat.import_torchvision` first: torchvision's PyPI wheel is a
CUDA build that does not import beside a CPU torch without it (timm and transformers import it).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from autoprune.compat import import_torchvision


def _image(size: int = 32) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def _tv():
    import pytest

    tv = import_torchvision()
    if tv is None:
        pytest.skip("torchvision is not installed (pip install 'autoprune[models]')")
    return tv


def _timm():
    import pytest

    _tv()
    return pytest.importorskip("timm")


def _transformers():
    import pytest

    _tv()
    return pytest.importorskip("transformers")


def torchvision_model(name: str, **kwargs: Any) -> nn.Module:
    """A random-init torchvision classifier by its builder name (``resnet18``...)."""
    return getattr(_tv().models, name)(weights=None, **kwargs)


def tv_vit() -> nn.Module:
    """torchvision's VisionTransformer (nn.MultiheadAttention, class token, position embedding), small."""
    return _tv().models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                                          mlp_dim=64, num_classes=10)


def tv_swin() -> nn.Module:
    """torchvision's SwinTransformer (shifted windows, patch merging, functional attention), small."""
    return _tv().models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                        window_size=[4, 4], num_classes=10)


def tv_convnext() -> nn.Module:
    """torchvision's ConvNeXt (depthwise conv, channel-last LayerNorm, layer scale, LayerNorm2d), small."""
    from torchvision.models.convnext import CNBlockConfig

    _tv()
    return _tv().models.ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 1)], num_classes=10)


def timm_vit() -> nn.Module:
    """timm's VisionTransformer (fused qkv, scaled_dot_product_attention, ``attn_dim``), small."""
    return _timm().create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                                depth=2, num_heads=4, num_classes=10)


def timm_mobilenetv3() -> nn.Module:
    return _timm().create_model("mobilenetv3_small_050", pretrained=False, num_classes=10)


def hf_bert() -> nn.Module:
    """A random-init Hugging Face BertModel from a config (q/k/v and the output projection in sibling modules)."""
    transformers = _transformers()
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32)
    return transformers.BertModel(config)


def hf_distilbert() -> nn.Module:
    """A random-init Hugging Face DistilBertModel (q_lin/k_lin/v_lin/out_lin in one module, ``n_heads``)."""
    transformers = _transformers()
    config = transformers.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                           max_position_embeddings=32)
    return transformers.DistilBertModel(config)


def hf_bert_inputs(seq: int = 16) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, 100, (1, seq), generator=gen),
            "attention_mask": torch.ones(1, seq, dtype=torch.long)}


#: name -> (factory of a random-init real model, example input)
REAL: dict[str, tuple[Callable[[], nn.Module], Any]] = {
    "tv_resnet18": (lambda: torchvision_model("resnet18"), _image()),
    "tv_mobilenet_v2": (lambda: torchvision_model("mobilenet_v2"), _image()),
    "tv_efficientnet_b0": (lambda: torchvision_model("efficientnet_b0"), _image()),
    "tv_shufflenet_v2": (lambda: torchvision_model("shufflenet_v2_x0_5"), _image()),
    "tv_regnet_y_400mf": (lambda: torchvision_model("regnet_y_400mf"), _image()),
    "tv_convnext": (tv_convnext, _image()),
    "tv_vit": (tv_vit, _image()),
    "tv_swin": (tv_swin, _image()),
    "timm_vit": (timm_vit, _image()),
    "timm_mobilenetv3": (timm_mobilenetv3, _image()),
    "hf_bert": (hf_bert, hf_bert_inputs()),
    "hf_distilbert": (hf_distilbert, hf_bert_inputs()),
}
