"""Image classification from a model library and an ImageFolder tree: ``--task torchvision:MODEL`` / ``timm:MODEL``.

``--data DIR`` holds ``train/`` and ``val/`` (and optionally ``test/``), each with one folder of
images per class (torchvision's ImageFolder layout); the classes are the folder names, the same in
every split. Images are read with PIL, converted to RGB, resized (shorter side) and center-cropped
to the input size, and normalised with ImageNet's mean and standard deviation; the training
split is also flipped left-right at random. The input size is ``--input-size``, else the shorter
side of the first training image, at most 224. The metric is top-1 accuracy over the logits.

``--weights`` decides the dense model (``build_model`` must return a *trained* model):

- a checkpoint file (a state_dict, or a dict holding one under ``state_dict`` or ``model``) of the
  model with as many classes as the data has: used as is (trained on this data);
- a library weights name (torchvision: ``DEFAULT``, ``IMAGENET1K_V1``...; timm: ``pretrained`` or a
  pretrained tag): downloaded by the library on first use; used as is when its classes are as many
  as the data's, else the classifier is replaced and the model is fine-tuned once on ``train/``
  (:data:`DENSE_RECIPE`, cached by :func:`autoprune.training.train_once`);
- ``none`` (the default): random init, trained once on ``train/`` the same way.

Candidates are fine-tuned with :data:`FINETUNE_RECIPE` (SGD with momentum, cosine schedule), the
usual recipe for recovering a pruned CNN; ``--epochs``/``--lr``... override it.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from autoprune.errors import ConfigError
from autoprune.task import FineTuneRecipe, Task

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the input size when neither --input-size nor a smaller first image says otherwise
MAX_DEFAULT_SIZE = 224
#: candidates: one epoch of SGD + cosine per trial (override with --epochs, --lr...)
FINETUNE_RECIPE = FineTuneRecipe(epochs=1, lr=1e-2, batch_size=32, weight_decay=1e-4, optimizer="sgd",
                                 schedule="cosine")
#: the dense model when it is not trained yet (random init, or a new classifier head)
DENSE_RECIPE = FineTuneRecipe(epochs=5, lr=1e-3, batch_size=32, weight_decay=1e-4, optimizer="adam",
                              schedule="onecycle")
SPLITS = ("train", "val", "test")
NO_WEIGHTS = "none"


def _tv(spec: str) -> Any:
    from autoprune.compat import import_torchvision

    tv = import_torchvision()
    if tv is None:
        raise ConfigError(f"--task {spec}: torchvision is not installed (pip install 'autoprune[models]')")
    return tv


def _fit(batch_size: int, n: int) -> int:
    """A batch size a split of ``n`` samples fills at least once (fine-tuning drops the last partial batch)."""
    return max(1, min(batch_size, n))


def _fingerprint(root: Path) -> str:
    """A hash of a split's files (relative path, size, modification time): the dense cache's key."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load_image_folder(spec: str, data: str | None, input_size: int | None) -> dict[str, Any]:
    """The splits, classes and input size of an ImageFolder tree; ConfigError naming what is wrong.

    Returns:
        ``{"train", "val", "test" (or None), "classes", "size", "key"}``.
    """
    tv = _tv(spec)
    if data is None:
        raise ConfigError(f"--task {spec}: needs --data DIR, an ImageFolder tree with train/ and val/ (optional "
                          "test/), one folder of images per class")
    root = Path(data)
    if not root.is_dir():
        raise ConfigError(f"--data {data}: not a folder; expected an ImageFolder tree with train/ and val/")
    for split in SPLITS[:2]:
        if not (root / split).is_dir():
            raise ConfigError(f"--data {data}: no {split}/ folder; expected train/ and val/ (optional test/), "
                              "each with one folder of images per class")
    folders: dict[str, Any] = {}
    for split in SPLITS:
        if (root / split).is_dir():
            try:
                folders[split] = tv.datasets.ImageFolder(str(root / split))
            except (FileNotFoundError, RuntimeError) as err:
                raise ConfigError(f"--data {data}: {split}/: {err}") from None
    classes = folders["train"].classes
    for split, folder in folders.items():
        if folder.classes != classes:
            raise ConfigError(f"--data {data}: {split}/ has classes {folder.classes}, train/ has {classes}; every "
                              "split needs the same class folders")
    if len(classes) < 2:
        raise ConfigError(f"--data {data}: train/ has {len(classes)} class folder; a classifier needs at least 2")
    if input_size is None:
        from PIL import Image

        with Image.open(folders["train"].samples[0][0]) as first:
            input_size = min(MAX_DEFAULT_SIZE, *first.size)
    transforms = tv.transforms
    tail = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    resize = [transforms.Resize(input_size), transforms.CenterCrop(input_size)]
    folders["train"].transform = transforms.Compose([*resize, transforms.RandomHorizontalFlip(), *tail])
    for split in SPLITS[1:]:
        if split in folders:
            folders[split].transform = transforms.Compose([*resize, *tail])
    key = {"data": str(root.resolve()), "size": input_size, "classes": classes,
           "train": _fingerprint(root / "train")}
    return {"train": folders["train"], "val": folders["val"], "test": folders.get("test"), "classes": classes,
            "size": input_size, "key": key}


def load_checkpoint(spec: str, weights: str) -> dict[str, Any]:
    """A state_dict from a checkpoint file (tensors only), unwrapped from ``state_dict``/``model`` when nested."""
    import torch

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's
        raise ConfigError(f"--weights {weights}: not a PyTorch checkpoint of tensors ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:200]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"--weights {weights}: holds a {type(state).__name__}, expected a state_dict")
    return state


def load_into(spec: str, model: Any, state: dict[str, Any], weights: str, classes: int) -> Any:
    """``model`` with ``state`` loaded strictly; ConfigError when the checkpoint is another model's."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = " ".join(str(err).split())[:300]
        raise ConfigError(f"--weights {weights}: does not fit {spec} with {classes} classes (the classes of --data): "
                          f"{first}") from None
    return model


def _copy_matching(model: Any, state: dict[str, Any]) -> Any:
    """``model`` with every tensor of ``state`` whose name and shape match (all but a replaced classifier)."""
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
    return model


def _image_task(spec: str, images: dict[str, Any], build: Any, *, trained: bool, key: Any) -> Task:
    """The Task: ``build()`` as the dense model, trained once unless ``trained``."""
    import torch

    from autoprune.training.dense import train_once

    train_set, val_set = images["train"], images["val"]
    dense_recipe = dataclasses.replace(DENSE_RECIPE, batch_size=_fit(DENSE_RECIPE.batch_size, len(train_set)))

    def build_model() -> torch.nn.Module:
        if trained:
            return build().eval()
        return train_once(spec, build, train_set, dense_recipe, key={**images["key"], "weights": key},
                          val_set=val_set)

    recipe = dataclasses.replace(FINETUNE_RECIPE, batch_size=_fit(FINETUNE_RECIPE.batch_size, len(train_set)))
    return Task(name=spec, build_model=build_model, example_input=val_set[0][0].unsqueeze(0), train_set=train_set,
                val_set=val_set, test_set=images["test"], recipe=recipe)


def torchvision_task(model: str, *, data: str | None = None, weights: str | None = None,
                     input_size: int | None = None) -> Task:
    """``--task torchvision:MODEL``: a torchvision classifier on an ImageFolder tree (see the module docstring)."""
    spec = f"torchvision:{model}"
    tv = _tv(spec)
    names = tv.models.list_models(module=tv.models)
    if model not in names:
        raise ConfigError(f"--task {spec}: unknown torchvision classifier {model!r}; valid: {', '.join(names)}")
    images = load_image_folder(spec, data, input_size)
    classes = len(images["classes"])

    def fresh() -> Any:
        return tv.models.get_model(model, weights=None, num_classes=classes)

    if weights is None or weights.lower() == NO_WEIGHTS:
        return _image_task(spec, images, fresh, trained=False, key=NO_WEIGHTS)
    if Path(weights).is_file():
        state = load_checkpoint(spec, weights)
        load_into(spec, fresh(), state, weights, classes)  # fails now, by name, not in a worker
        return _image_task(spec, images, lambda: load_into(spec, fresh(), state, weights, classes), trained=True,
                           key=weights)
    enum = tv.models.get_model_weights(model)
    valid = [w.name for w in enum] + ["DEFAULT"]
    name = weights.rpartition(".")[2]
    if name not in valid:
        raise ConfigError(f"--weights {weights}: no such file, and not a weights name of torchvision's {model}; "
                          f"valid: {', '.join(valid)}, {NO_WEIGHTS} or a checkpoint file")
    chosen = enum[name]
    if len(chosen.meta.get("categories") or ()) == classes:
        return _image_task(spec, images, lambda: tv.models.get_model(model, weights=chosen), trained=True,
                           key=chosen.name)

    def pretrained() -> Any:  # the library's weights, a new classifier for the data's classes
        return _copy_matching(fresh(), chosen.get_state_dict(progress=True))

    return _image_task(spec, images, pretrained, trained=False, key=f"{chosen.name}+new-head")


def timm_task(model: str, *, data: str | None = None, weights: str | None = None,
              input_size: int | None = None) -> Task:
    """``--task timm:MODEL``: a timm classifier on an ImageFolder tree (see the module docstring)."""
    spec = f"timm:{model}"
    _tv(spec)
    try:
        import timm
    except ImportError:
        raise ConfigError(f"--task {spec}: timm is not installed (pip install 'autoprune[models]')") from None
    if not timm.is_model(model):
        raise ConfigError(f"--task {spec}: unknown timm model {model!r} (timm.list_models() lists the valid names)")
    images = load_image_folder(spec, data, input_size)
    classes = len(images["classes"])

    def fresh() -> Any:
        return timm.create_model(model, pretrained=False, num_classes=classes)

    if weights is None or weights.lower() == NO_WEIGHTS:
        return _image_task(spec, images, fresh, trained=False, key=NO_WEIGHTS)
    if Path(weights).is_file():
        state = load_checkpoint(spec, weights)
        load_into(spec, fresh(), state, weights, classes)
        return _image_task(spec, images, lambda: load_into(spec, fresh(), state, weights, classes), trained=True,
                           key=weights)
    tags = sorted({n.partition(".")[2] for n in timm.list_pretrained(f"{model}.*")})
    if weights != "pretrained" and weights not in tags:
        raise ConfigError(f"--weights {weights}: no such file, and not pretrained weights of timm's {model}; valid: "
                          f"pretrained{', ' if tags else ''}{', '.join(tags)}, {NO_WEIGHTS} or a checkpoint file")
    name = model if weights == "pretrained" else f"{model}.{weights}"
    library_classes = timm.create_model(model, pretrained=False).num_classes
    if library_classes == classes:
        return _image_task(spec, images, lambda: timm.create_model(name, pretrained=True), trained=True, key=name)
    return _image_task(spec, images, lambda: timm.create_model(name, pretrained=True, num_classes=classes),
                       trained=False, key=f"{name}+new-head")
