"""Pure-torch test models with the shapes that break pruning tools (no torchvision needed).

Each family is built by a small function taking widths, so tests use tiny widths and the
coverage benchmark uses realistic ones (ResNet-50, MobileNetV2, EfficientNet-B0 sized).
``TINY`` maps a name to ``(factory, example input)`` for the test suite.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from autoprune.task import Task


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Head(nn.Module):
    """Global average pooling + linear classifier."""

    def __init__(self, cin: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- ResNet (basic and bottleneck)
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, act=None)
        self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.down(x))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int, expansion: int = 4) -> None:
        super().__init__()
        cout = mid * expansion
        self.conv1 = conv_bn(cin, mid, 1)
        self.conv2 = conv_bn(mid, mid, 3, stride)
        self.conv3 = conv_bn(mid, cout, 1, act=None)
        self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + self.down(x))


class ResNet(nn.Module):
    """ResNet with basic or bottleneck blocks; ``depths=(3, 4, 6, 3)``, bottleneck, width 64 is ResNet-50."""

    def __init__(self, depths: tuple[int, ...] = (1, 1), width: int = 8, bottleneck: bool = False,
                 classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, width, 3, 2), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], width
        for i, depth in enumerate(depths):
            mid = width * 2 ** i
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                if bottleneck:
                    blocks.append(Bottleneck(cin, mid, stride))
                    cin = mid * 4
                else:
                    blocks.append(BasicBlock(cin, mid, stride))
                    cin = mid
        self.blocks = nn.Sequential(*blocks)
        self.head = Head(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# ---------------------------------------------------------------- MobileNetV2 / EfficientNet (depthwise, SE)
class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block (ReLU6, no SE) or EfficientNet MBConv (SiLU + squeeze-excite)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, kernel: int = 3, se: bool = False) -> None:
        super().__init__()
        hidden = cin * expand
        act = nn.SiLU if se else nn.ReLU6
        layers: list[nn.Module] = [conv_bn(cin, hidden, 1, act=act)] if expand != 1 else []
        layers.append(conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden, max(1, cin // 4)))
        layers.append(conv_bn(hidden, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


#: (expansion, channels, repeats, stride) per stage, from the papers
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))
#: (expansion, channels, repeats, stride, kernel)
EFFICIENTNET_B0_STAGES = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
                          (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))


class MobileNet(nn.Module):
    """MobileNetV2 (``se=False``) or EfficientNet-B0 (``se=True``) from a stage table."""

    def __init__(self, stages: tuple[tuple[int, ...], ...], stem: int = 32, last: int = 1280, se: bool = False,
                 classes: int = 10) -> None:
        super().__init__()
        act = nn.SiLU if se else nn.ReLU6
        blocks: list[nn.Module] = [conv_bn(3, stem, 3, 2, act=act)]
        cin = stem
        for expand, cout, repeats, stride, *kernel in stages:
            for i in range(repeats):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand, *kernel, se=se))
                cin = cout
        blocks.append(conv_bn(cin, last, 1, act=act))
        self.features = nn.Sequential(*blocks)
        self.head = Head(last, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def mobilenet_v2(scale: float = 1.0, classes: int = 1000) -> MobileNet:
    stages = tuple((e, max(8, int(c * scale)), r, s) for e, c, r, s in MOBILENETV2_STAGES)
    return MobileNet(stages, stem=max(8, int(32 * scale)), last=max(16, int(1280 * scale)), classes=classes)


def efficientnet_b0(scale: float = 1.0, classes: int = 1000) -> MobileNet:
    stages = tuple((e, max(8, int(c * scale)), r, s, k) for e, c, r, s, k in EFFICIENTNET_B0_STAGES)
    return MobileNet(stages, stem=max(8, int(32 * scale)), last=max(16, int(1280 * scale)), se=True, classes=classes)


# ---------------------------------------------------------------- DenseNet (concatenation)
class DenseBlock(nn.Module):
    def __init__(self, cin: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(conv_bn(cin + i * growth, growth, 3) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class DenseNet(nn.Module):
    def __init__(self, stem: int = 16, growth: int = 8, layers: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, stem, 3, 2)
        self.block1 = DenseBlock(stem, growth, layers)
        cin = stem + layers * growth
        self.transition = nn.Sequential(conv_bn(cin, cin // 2, 1), nn.AvgPool2d(2))
        self.block2 = DenseBlock(cin // 2, growth, layers)
        self.head = Head(cin // 2 + layers * growth, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.transition(self.block1(self.stem(x)))))


# ---------------------------------------------------------------- ShuffleNet (channel shuffle)
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleBlock(nn.Module):
    """ShuffleNetV2 unit: split, transform one half (1x1, depthwise 3x3, 1x1), concat, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(conv_bn(half, half, 1), conv_bn(half, half, 3, groups=half, act=None),
                                    conv_bn(half, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([a, self.branch(b)], dim=1), 2)


class ShuffleNet(nn.Module):
    def __init__(self, width: int = 16, blocks: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, width, 3, 2)
        self.blocks = nn.Sequential(*(ShuffleBlock(width) for _ in range(blocks)))
        self.last = conv_bn(width, 2 * width, 1)
        self.head = Head(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.blocks(self.stem(x))))


class GroupShuffle(nn.Module):
    """ShuffleNet v1 style: grouped 1x1 conv -> ``view``/``transpose`` channel shuffle -> grouped 3x3 conv.

    torch-pruning maps the shuffle as the identity, so pruning the first conv's channels would
    cut the wrong inputs of the second: the engine must leave that coupling out.
    """

    def __init__(self, width: int = 16, groups: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.groups = groups
        self.stem = conv_bn(3, width, 3, 2)
        self.conv1 = conv_bn(width, width, 1, groups=groups)
        self.conv2 = conv_bn(width, width, 3, groups=groups)
        self.head = Head(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.stem(x))
        b, c, h, w = x.shape
        x = x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        return self.head(self.conv2(x))


# ---------------------------------------------------------------- RegNet (grouped convolutions)
class RegNetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, group_width: int) -> None:
        super().__init__()
        self.a = conv_bn(cin, cout, 1)
        self.b = conv_bn(cout, cout, 3, stride, groups=cout // group_width)
        self.c = conv_bn(cout, cout, 1, act=None)
        self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.c(self.b(self.a(x))) + self.down(x))


class RegNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32), group_width: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, widths[0], 3, 2)
        blocks, cin = [], widths[0]
        for w in widths:
            blocks.append(RegNetBlock(cin, w, 2, group_width))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.head = Head(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# ---------------------------------------------------------------- transformers
class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SelfAttention(nn.Module):
    """BERT-style attention: separate query/key/value Linear layers; stores ``num_heads`` and ``head_dim``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (p(x).reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2)
                   for p in (self.query, self.key, self.value))
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim ** -0.5, dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class FusedAttention(nn.Module):
    """timm-style attention: one ``qkv`` Linear split into heads; stores ``num_heads``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, -1))


class TorchMHA(nn.Module):
    """nn.MultiheadAttention (batch first) as a self-attention module."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int, attention: type[nn.Module]) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Bert(nn.Module):
    """BERT-style encoder over a (batch, tokens, features) input; separate q/k/v; mean-pooled classifier."""

    def __init__(self, features: int = 12, dim: int = 32, heads: int = 4, mlp: int = 64, layers: int = 2,
                 classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Linear(features, dim)
        self.layers = nn.Sequential(*(EncoderLayer(dim, heads, mlp, SelfAttention) for _ in range(layers)))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(self.layers(self.embed(x))).mean(1))


class ViT(nn.Module):
    """A torchvision-style ViT: patch conv, class token, position embedding, ``hidden_dim`` stored and used."""

    def __init__(self, image: int = 16, patch: int = 4, hidden_dim: int = 32, heads: int = 4, mlp: int = 64,
                 layers: int = 2, classes: int = 10, attention: type[nn.Module] = FusedAttention) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_heads = heads
        self.patch = nn.Conv2d(3, hidden_dim, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, hidden_dim) * 0.02)
        self.layers = nn.Sequential(*(EncoderLayer(hidden_dim, heads, mlp, attention) for _ in range(layers)))
        self.norm = nn.LayerNorm(hidden_dim)
        self.classifier = nn.Linear(hidden_dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.patch(x).reshape(n, self.hidden_dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.pos_embedding
        return self.classifier(self.norm(self.layers(x))[:, 0])


class WindowAttention(nn.Module):
    """Swin-style: attention inside non-overlapping windows, with a learned relative bias per head."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.window
        win = x.reshape(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        n = win.shape[0]
        qkv = self.qkv(win).reshape(n, s * s, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(n, s * s, -1))
        return out.reshape(b, h // s, w // s, s, s, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Swin(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, window: int = 2, patch: int = 4, mlp: int = 64,
                 layers: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.layers = nn.Sequential(*(SwinBlock(dim, heads, window, mlp) for _ in range(layers)))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.patch(x).permute(0, 2, 3, 1))
        return self.classifier(self.norm(x).mean((1, 2)))


def _image(size: int = 16) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


#: name -> (factory of a tiny model, example input)
TINY: dict[str, tuple[Callable[[], nn.Module], torch.Tensor]] = {
    "resnet_basic": (lambda: ResNet((1, 1), width=8), _image()),
    "resnet_bottleneck": (lambda: ResNet((1, 1), width=8, bottleneck=True), _image()),
    "mobilenetv2": (lambda: MobileNet(((1, 8, 1, 1), (6, 16, 2, 2)), stem=8, last=32), _image()),
    "efficientnet": (lambda: MobileNet(((1, 8, 1, 1, 3), (6, 16, 2, 2, 5)), stem=8, last=32, se=True), _image()),
    "densenet": (lambda: DenseNet(), _image()),
    "shufflenet": (lambda: ShuffleNet(), _image()),
    "group_shuffle": (lambda: GroupShuffle(), _image()),
    "regnet": (lambda: RegNet(), _image()),
    "vit_mha": (lambda: ViT(attention=TorchMHA), _image()),
    "vit_attrs": (lambda: ViT(), _image()),
    "bert": (lambda: Bert(), torch.randn(1, 6, 12, generator=torch.Generator().manual_seed(0))),
    "swin": (lambda: Swin(), _image()),
}


def model_task(build: Callable[[], nn.Module], example_input: torch.Tensor, name: str = "model") -> Task:
    """A Task around a model factory for pruning-only tests (rebuild, reload): no data, so only data-free
    importance criteria apply."""
    from torch.utils.data import TensorDataset

    from autoprune.task import Task

    empty = TensorDataset(torch.empty(0))
    return Task(name=name, build_model=build, example_input=example_input, train_set=empty, val_set=empty)
