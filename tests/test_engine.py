"""The probe engine on the real MiniLM model: capture, batching, precision."""

from importlib.resources import files

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from probes.batching import length_sorted_batches, tokenize
from probes.capture import ActivationCapture
from probes.engine import ProbeEngine
from probes.hooks import register_mlp_hook
from probes.models import load_model
from probes.neuronset import Neuron, NeuronSet, load_neuron_set

DEFAULT_NEURONS = str(files("probes") / "data" / "default-neurons")
NEURONS = NeuronSet(tuple(Neuron(layer, i) for layer in (1, 3) for i in (7, 300, 1200)), "test")


def test_capture_returns_only_requested_neurons_and_stops_after_deepest_layer(minilm):
    tok = minilm.tokenizer(
        ["a short sentence about rivers", "tea"], padding=True, return_tensors="pt"
    )
    whole = ActivationCapture(minilm, {1: None, 3: None}).capture(
        input_ids=tok.input_ids, attention_mask=tok.attention_mask
    )
    some = ActivationCapture(minilm, {1: [7, 300], 3: [1200]})
    later_layer_ran = []
    handle = register_mlp_hook(minilm.model, "bert", 4, lambda a: later_layer_ran.append(1))
    try:
        part = some.capture(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
    finally:
        handle.remove()
    assert not later_layer_ran, "layers after the deepest requested one must not run"
    assert whole[1].shape[-1] == 1536 and part[1].shape[-1] == 2 and part[3].shape[-1] == 1
    torch.testing.assert_close(part[1], whole[1][..., [7, 300]])
    torch.testing.assert_close(part[3], whole[3][..., [1200]])
    assert some.hook_names == ["blocks.1.mlp.hook_post", "blocks.3.mlp.hook_post"]


def test_batches_respect_token_budget_and_waste_little_padding(minilm, demo_texts):
    docs = tokenize(minilm.tokenizer, demo_texts, minilm.max_length)
    batches = list(length_sorted_batches(docs, tokens_per_batch=4096))
    assert sorted(d.pos for b in batches for d in b) == list(range(len(docs)))
    padded = sum(len(b) * max(len(d.ids) for d in b) for b in batches)
    real = sum(len(d.ids) for d in docs)
    assert all(len(b) * max(len(d.ids) for d in b) <= 4096 for b in batches)
    assert padded / real < 1.05, f"{padded / real:.3f}x padding"


def test_long_documents_are_truncated_keeping_the_final_special_token(minilm):
    (doc,) = tokenize(minilm.tokenizer, ["word " * 2000], minilm.max_length)
    assert doc.truncated and doc.n_tokens == 2000
    assert len(doc.ids) == minilm.max_length
    assert doc.ids[-1] == minilm.tokenizer.sep_token_id and doc.special[-1] == 1


def test_scores_do_not_depend_on_batching(minilm, demo_texts):
    texts = demo_texts[:40]
    small = ProbeEngine(minilm, NEURONS, agg="topk", tokens_per_batch=600).probe(texts)
    large = ProbeEngine(minilm, NEURONS, agg="topk", tokens_per_batch=20000).probe(texts)
    np.testing.assert_allclose(small.neurons, large.neurons, rtol=1e-4, atol=1e-4)
    alone = ProbeEngine(minilm, NEURONS, agg="topk").probe([texts[5]])
    np.testing.assert_allclose(alone.neurons[0], large.neurons[5], rtol=1e-4, atol=1e-4)


def test_bf16_ranks_documents_like_fp32(minilm, demo_texts):
    """bf16 is the default on capable CPUs only because it keeps the document ranking.

    Runs on every CPU: without AMX/AVX512-BF16, torch emulates bf16 (slower: about a minute
    here instead of seconds), with the same bf16 inputs and fp32 accumulation."""
    bf16 = load_model("minilm-l6", dtype=torch.bfloat16)
    shipped = load_neuron_set(DEFAULT_NEURONS)
    texts = demo_texts[::16]  # 48 documents, from every shard
    for agg in ("max_norm", "frac_above"):
        exact = ProbeEngine(minilm, shipped, agg=agg).probe(texts)
        fast = ProbeEngine(bf16, shipped, agg=agg).probe(texts)
        rho = spearmanr(exact.score, fast.score).statistic
        assert rho >= 0.99, f"{agg}: rank correlation {rho:.4f}"


def test_documents_without_tokens_get_nan_and_zero_tokens(minilm):
    scores = ProbeEngine(minilm, NEURONS).probe(["\u200b", "real words here"])
    assert scores.n_tokens.tolist()[0] == 0 and np.isnan(scores.score[0])
    assert scores.n_tokens[1] == 3 and np.isfinite(scores.score[1])


@pytest.mark.parametrize("alias", ["mpnet-base", "smollm2-135m"])
def test_only_requested_neurons_are_computed_alike_in_every_family(alias):
    """The deepest layer computes just the requested rows of its up-projection."""
    loaded = load_model(alias)
    tok = loaded.tokenizer(["Rivers carry silt to the sea."], return_tensors="pt")
    whole = ActivationCapture(loaded, {1: None, 3: None}).capture(
        input_ids=tok.input_ids, attention_mask=tok.attention_mask
    )
    part = ActivationCapture(loaded, {1: [4], 3: [5, 900]}).capture(
        input_ids=tok.input_ids, attention_mask=tok.attention_mask
    )
    torch.testing.assert_close(part[1], whole[1][..., [4]])
    torch.testing.assert_close(part[3], whole[3][..., [5, 900]], rtol=1e-4, atol=1e-5)
