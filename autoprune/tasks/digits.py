"""The default task: scikit-learn's bundled digits, upsampled to 32x32, on a small ResNet.

The data ships inside scikit-learn (no download). The dense model is trained once on first
use and cached under ``results/.cache`` (or ``$AUTOPRUNE_CACHE_DIR``) by
:func:`autoprune.training.train_once`; later calls load it.
The widths are chosen so that convolution compute, not framework overhead, dominates latency.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from autoprune.task import FineTuneRecipe, Task
from autoprune.training.dense import train_once

log = logging.getLogger(__name__)

IMAGE_SIZE = 32
WIDTHS = (32, 64, 128)
DENSE_RECIPE = FineTuneRecipe(epochs=8, lr=4e-3, batch_size=64, optimizer="adam", schedule="onecycle")
FINETUNE_RECIPE = FineTuneRecipe(epochs=2, lr=2e-3, batch_size=64, optimizer="adam", schedule="onecycle")
SEED = 0


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class DigitsResNet(nn.Module):
    """Stem + three stages of basic blocks + global pooling + classifier."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def load_digits_tensors(size: int = IMAGE_SIZE) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """Train/validation/test split (1437/180/180, stratified) of the digits, upsampled and standardised.

    The dense model trains on the train split only; the 360 held-out images are halved into the
    validation split the search selects on and the test split it never sees.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_held = train_test_split(range(len(labels)), test_size=0.2, random_state=0, stratify=digits.target)
    idx_val, idx_test = train_test_split(idx_held, test_size=0.5, random_state=0, stratify=digits.target[idx_held])
    return tuple(TensorDataset(images[i], labels[i]) for i in (idx_train, idx_val, idx_test))  # type: ignore[return-value]


def digits_task() -> Task:
    """The embedded default task (10 classes, 1x32x32 grey images)."""
    train_set, val_set, test_set = load_digits_tensors()

    def build_model() -> nn.Module:
        return train_once("digits", DigitsResNet, train_set, DENSE_RECIPE, seed=SEED,
                          key={"widths": WIDTHS, "size": IMAGE_SIZE}, val_set=val_set)

    return Task(name="digits", build_model=build_model, example_input=val_set.tensors[0][:1],
                train_set=train_set, val_set=val_set, test_set=test_set, recipe=FINETUNE_RECIPE)
