"""Text classification with a Hugging Face model and a CSV/JSONL file: ``--task hf:PATH_OR_NAME``.

``PATH_OR_NAME`` is a local model folder (``save_pretrained``'s output: config, weights and the
tokenizer) or a Hub name (downloaded by transformers on first use). The model is loaded with
``AutoModelForSequenceClassification`` and the tokenizer with ``AutoTokenizer`` from the same
place; the model is wrapped so it returns its logits as a plain tensor (the pruner, the exporter
and the metric see one output).

``--data`` is either

- one ``.csv`` or ``.jsonl`` file, split deterministically (rows shuffled with seed 0) into
  train 80% / validation 10% / test 10% (at least one row each), or
- a folder holding ``train.csv`` (or ``.jsonl``), ``val.csv`` (or ``validation.csv``) and,
  optionally, ``test.csv``.

Each row has a ``text`` and a ``label`` column. Labels are class names or integers; the classes are
the distinct labels sorted (integers numerically, so labels 0..N-1 keep their numbers). Texts are
tokenized once, padded and truncated to ``--input-size`` tokens (default 128); inputs are dicts of
tensors (``input_ids``, ``attention_mask`` and ``token_type_ids`` when the tokenizer gives them).
The metric is top-1 accuracy over the logits.

The dense model is used as is when the checkpoint has a classifier for exactly these classes;
otherwise (a base encoder, or another number of labels) the classifier is new and the model is
fine-tuned once on the training split (:data:`DENSE_RECIPE`, cached by
:func:`autoprune.training.train_once`). Candidates are fine-tuned with :data:`FINETUNE_RECIPE`.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from autoprune.errors import ConfigError
from autoprune.task import FineTuneRecipe, Task

DEFAULT_LENGTH = 128
#: the shares of one data file that become the validation and the test split (the rest trains)
VAL_SHARE, TEST_SHARE = 0.1, 0.1
SPLIT_SEED = 0
FORMATS = (".csv", ".jsonl")
#: candidates: one epoch of Adam with warm-up and decay (the one-cycle schedule), a transformer's usual lr
FINETUNE_RECIPE = FineTuneRecipe(epochs=1, lr=3e-5, batch_size=16, weight_decay=0.01, optimizer="adam",
                                 schedule="onecycle")
#: the dense model when its classifier is new
DENSE_RECIPE = FineTuneRecipe(epochs=3, lr=5e-5, batch_size=16, weight_decay=0.01, optimizer="adam",
                              schedule="onecycle")


class LogitsOnly(nn.Module):
    """A sequence classifier that takes its inputs by name and returns the logits tensor (not a ModelOutput)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        named = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, **{k: v for k, v in named.items() if v is not None}).logits


class TokenizedText(Dataset):
    """(dict of token tensors, label) pairs, tokenized once."""

    def __init__(self, encoded: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        self.encoded = encoded
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {k: v[i] for k, v in self.encoded.items()}, self.labels[i]


def _rows(path: Path) -> list[tuple[str, str]]:
    """(text, label) of every row of a CSV or JSONL file; ConfigError naming the file and row."""
    rows: list[tuple[str, str]] = []
    try:
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if not {"text", "label"} <= set(reader.fieldnames or ()):
                    raise ConfigError(f"--data {path}: needs the columns `text` and `label`, has "
                                      f"{', '.join(reader.fieldnames or ()) or 'none'}")
                rows = [(r["text"], r["label"]) for r in reader]
        else:
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ConfigError(f"--data {path}: line {n} is not JSON ({err.msg})") from None
                if not isinstance(record, dict) or "text" not in record or "label" not in record:
                    raise ConfigError(f"--data {path}: line {n} needs the keys `text` and `label`")
                rows.append((record["text"], record["label"]))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--data {path}: cannot read it ({type(err).__name__}: {err})") from None
    bad = next((i for i, (text, label) in enumerate(rows) if not isinstance(text, str) or label in (None, "")), None)
    if bad is not None:
        raise ConfigError(f"--data {path}: row {bad + 1} has no text or no label")
    if not rows:
        raise ConfigError(f"--data {path}: no rows")
    return [(text, str(label)) for text, label in rows]


def _split_file(path: Path) -> dict[str, list[tuple[str, str]]]:
    """One file split deterministically into train/val/test (see the module docstring)."""
    rows = _rows(path)
    if len(rows) < 3:
        raise ConfigError(f"--data {path}: {len(rows)} rows; one file is split into train/val/test, so at least 3")
    order = list(range(len(rows)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_val = max(1, round(VAL_SHARE * len(rows)))
    n_test = max(1, round(TEST_SHARE * len(rows)))
    pick = [rows[i] for i in order]
    return {"val": pick[:n_val], "test": pick[n_val:n_val + n_test], "train": pick[n_val + n_test:]}


def _find(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        for suffix in FORMATS:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    return None


def load_text_splits(spec: str, data: str | None) -> dict[str, list[tuple[str, str]] | None]:
    """The train/val/test rows of ``--data`` (a file or a folder); ConfigError naming what is wrong."""
    if data is None:
        raise ConfigError(f"--task {spec}: needs --data, a CSV/JSONL file of `text` and `label` (split 80/10/10) or "
                          "a folder with train.csv and val.csv (optional test.csv; .jsonl too)")
    path = Path(data)
    if path.is_file():
        if path.suffix not in FORMATS:
            raise ConfigError(f"--data {data}: expected a .csv or .jsonl file (or a folder of them)")
        return dict(_split_file(path))
    if not path.is_dir():
        raise ConfigError(f"--data {data}: no such file or folder")
    train, val = _find(path, ("train",)), _find(path, ("val", "validation"))
    if train is None or val is None:
        raise ConfigError(f"--data {data}: needs train.csv and val.csv (or .jsonl; optional test.csv)")
    test = _find(path, ("test",))
    return {"train": _rows(train), "val": _rows(val), "test": None if test is None else _rows(test)}


def _classes(splits: dict[str, list[tuple[str, str]] | None]) -> list[str]:
    labels = {label for rows in splits.values() if rows for _, label in rows}
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' load reports and progress bars off while loading (its errors still raise)."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        logging.enable_progress_bar()


def hf_task(model: str, *, data: str | None = None, weights: str | None = None,
            input_size: int | None = None) -> Task:
    """``--task hf:PATH_OR_NAME``: sequence classification on a CSV/JSONL file (see the module docstring)."""
    from autoprune.compat import import_torchvision
    from autoprune.training.dense import train_once

    spec = f"hf:{model}"
    if weights is not None:
        raise ConfigError(f"--weights {weights}: {spec} loads its weights from the model folder or Hub name itself")
    import_torchvision()  # transformers imports torchvision when it is installed
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"--task {spec}: transformers is not installed (pip install 'autoprune[models]')") from None
    splits = load_text_splits(spec, data)
    classes = _classes(splits)
    if len(classes) < 2:
        raise ConfigError(f"--data {data}: {len(classes)} distinct label; a classifier needs at least 2")
    length = input_size or DEFAULT_LENGTH
    try:
        with _quiet_transformers():
            tokenizer = transformers.AutoTokenizer.from_pretrained(model)
            _, info = transformers.AutoModelForSequenceClassification.from_pretrained(
                model, num_labels=len(classes), ignore_mismatched_sizes=True, output_loading_info=True)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"--task {spec}: cannot load a sequence classifier and its tokenizer from {model!r}: "
                          f"{' '.join(str(err).split())[:300]}") from None
    trained = not info["missing_keys"] and not info["mismatched_keys"]
    index = {label: i for i, label in enumerate(classes)}

    def dataset(rows: list[tuple[str, str]]) -> TokenizedText:
        encoded = tokenizer([text for text, _ in rows], padding="max_length", truncation=True, max_length=length,
                            return_tensors="pt")
        keep = ("input_ids", "attention_mask", "token_type_ids")
        return TokenizedText({k: encoded[k] for k in keep if k in encoded},
                             torch.tensor([index[label] for _, label in rows], dtype=torch.long))

    train_set, val_set = dataset(splits["train"] or []), dataset(splits["val"] or [])
    test_set = dataset(splits["test"]) if splits["test"] else None

    def load() -> nn.Module:
        with _quiet_transformers():
            loaded = transformers.AutoModelForSequenceClassification.from_pretrained(
                model, num_labels=len(classes), ignore_mismatched_sizes=True)
        return LogitsOnly(loaded).eval()

    def build_model() -> nn.Module:
        if trained:
            return load()
        recipe = dataclasses.replace(DENSE_RECIPE, batch_size=max(1, min(DENSE_RECIPE.batch_size, len(train_set))))
        rows = hashlib.sha256(json.dumps([splits["train"], splits["val"]]).encode()).hexdigest()[:16]
        key = {"model": model, "data": data, "classes": classes, "length": length, "rows": rows}
        return train_once(spec, load, train_set, recipe, key=key, val_set=val_set)

    recipe = dataclasses.replace(FINETUNE_RECIPE, batch_size=max(1, min(FINETUNE_RECIPE.batch_size, len(train_set))))
    return Task(name=spec, build_model=build_model, example_input={k: v[:1] for k, v in val_set.encoded.items()},
                train_set=train_set, val_set=val_set, test_set=test_set, recipe=recipe)
