"""A tiny text task with dict inputs, for fast tests: a random-init 2-layer BERT with the MiniLM task's pooling,
random token sequences, judged (like ``minilm``) by search agreement with the dense model's embeddings.

Resolved as ``tests.tiny_text_task:tiny_text_task``.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from autoprune.task import FineTuneRecipe, Task

SEQ = 16
_DENSE: dict[str, nn.Module] = {}


def _dense() -> nn.Module:
    if "model" not in _DENSE:
        from autoprune.tasks.minilm import SentenceEncoder, _transformers

        transformers = _transformers()
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=SEQ, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0)
        _DENSE["model"] = SentenceEncoder(transformers.BertModel(config, add_pooling_layer=False)).eval()
    return _DENSE["model"]


def _sentences(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.randint(4, SEQ + 1, (n,), generator=gen)
    mask = (torch.arange(SEQ).unsqueeze(0) < lengths.unsqueeze(1)).long()
    ids = torch.randint(1, 100, (n, SEQ), generator=gen) * mask
    return ids, mask


def tiny_text_task() -> Task:
    from autoprune.tasks.minilm import EmbeddingDataset, cosine_distillation, embed, mean_cosine, search_agreement

    dense = _dense()
    gen = torch.Generator().manual_seed(0)
    sets = []
    for n in (64, 40, 40):
        ids, mask = _sentences(n, gen)
        sets.append(EmbeddingDataset([str(i) for i in range(n)], ids, mask, embed(dense, ids, mask)))
    example = {"input_ids": torch.randint(1, 100, (1, SEQ), generator=gen), "attention_mask": torch.ones(1, SEQ).long()}
    return Task(name="tiny-text", build_model=lambda: copy.deepcopy(dense).eval(), example_input=example,
                train_set=sets[0], val_set=sets[1], test_set=sets[2], metric=search_agreement,
                metric_name="agreement@10", loss=cosine_distillation, extra_metrics={"mean cosine": mean_cosine},
                recipe=FineTuneRecipe(epochs=1, lr=1e-3, batch_size=16, threads=1))
