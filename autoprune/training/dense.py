"""Train a task's dense model once and cache it: ``build_model`` must return a *trained* model.

A pruning search compresses a model that already works; it never trains the dense model. A task
whose model is not trained yet (random init, or a library's weights with a new classifier head)
calls :func:`train_once` in its ``build_model``: the first call trains the model on the training
split and saves its weights under the cache folder (``$AUTOPRUNE_CACHE_DIR``, default
``results/.cache``); every later call (another command, a resumed search, a Ray worker sharing the
folder) loads them. The file name carries a hash of everything that shapes the result (the model's
parameter shapes, the recipe, the seed, torch's version and the caller's ``key``, e.g. the data),
so a change of any of them trains again instead of loading stale weights.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from autoprune.task import FineTuneRecipe, cross_entropy

#: weights loaded in this process, by cache file (a task's build_model is called many times)
_LOADED: dict[Path, dict[str, torch.Tensor]] = {}


def cache_dir() -> Path:
    """Where dense models (and other per-machine results) are cached."""
    return Path(os.environ.get("AUTOPRUNE_CACHE_DIR", "results/.cache"))


def dense_cache_path(name: str, model: nn.Module, recipe: FineTuneRecipe, *, seed: int = 0, key: Any = None) -> Path:
    """The cache file of ``model`` trained by ``recipe`` (see the module docstring for what the hash covers)."""
    shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    blob = json.dumps({"shapes": shapes, "recipe": repr(recipe), "seed": seed, "key": key,
                       "torch": torch.__version__.split("+")[0]}, sort_keys=True, default=str)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"
    return cache_dir() / f"{slug}-dense-{hashlib.sha256(blob.encode()).hexdigest()[:12]}.pt"


def train_once(
    name: str,
    build: Callable[[], nn.Module],
    train_set: Dataset,
    recipe: FineTuneRecipe,
    *,
    seed: int = 0,
    key: Any = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    val_set: Dataset | None = None,
    metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
) -> nn.Module:
    """``build()`` trained on ``train_set`` by ``recipe``: trained on the first call, loaded from the cache after.

    Args:
        name: names the cache file and the progress message (e.g. the task's name).
        build: returns the untrained model (the same architecture and initial weights every call).
        key: JSON-able data that also decides the result (e.g. the data's path and file list).
        loss_fn: the training loss of the model's primary output against the targets.
        val_set, metric: when given, the trained model's validation score is printed once.

    Returns:
        The trained model, in eval mode.
    """
    from autoprune.files import atomic_torch_save
    from autoprune.training.finetune import evaluate, fine_tune

    torch.manual_seed(seed)
    model = build()
    path = dense_cache_path(name, model, recipe, seed=seed, key=key)
    if path not in _LOADED and path.is_file():
        _LOADED[path] = torch.load(path, weights_only=True)
    if path not in _LOADED:
        print(f"Training the dense {name} model once ({recipe.epochs} epochs); cached at {path}", flush=True)
        fine_tune(model, train_set, recipe, seed=seed, loss_fn=loss_fn)
        if val_set is not None:
            score = evaluate(model, val_set, metric) if metric is not None else evaluate(model, val_set)
            print(f"Dense {name} model: validation score {score:.4f}", flush=True)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        atomic_torch_save(state, path)
        _LOADED[path] = state
    model.load_state_dict(_LOADED[path])
    return model.eval()
