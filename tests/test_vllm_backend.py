"""The vLLM backend: rows split back per document (no vLLM needed), and the contract with the
torch backend on smollm2-135m where vLLM is installed (`make test-vllm`)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from probes.backends import backend_settings, rank_agreement
from probes.backends.vllm_engine import split_passes
from probes.errors import CurateError

HAS_VLLM = importlib.util.find_spec("vllm") is not None
REPO = Path(__file__).resolve().parents[1]


def _pass(docs, layer_width=3, padding=0):
    """A forward pass as vLLM records it: documents flattened, then padding rows."""
    ids = np.concatenate([np.array(d) for d in docs] + [np.zeros(padding, np.int64)])
    positions = np.concatenate([np.arange(len(d)) for d in docs] + [np.zeros(padding, np.int64)])
    acts = np.arange(len(ids) * layer_width, dtype=np.float32).reshape(len(ids), layer_width)
    return {"ids": ids, "positions": positions, "layers": {2: acts, 5: -acts}}


def test_rows_go_back_to_their_documents_whatever_the_pass_order_and_padding():
    docs = [[7, 8, 9], [7, 8], [4], [7, 8]]  # a prefix of another document, a duplicate
    first = _pass([docs[1], docs[0]], padding=4)
    second = _pass([docs[2]])
    found = split_passes([first, second], docs, [2, 5])
    np.testing.assert_array_equal(found[0][2], first["layers"][2][2:5])
    np.testing.assert_array_equal(found[1][2], first["layers"][2][0:2])
    np.testing.assert_array_equal(found[1][5], -first["layers"][2][0:2])
    np.testing.assert_array_equal(found[2][2], second["layers"][2])
    assert found[3] is found[1]


def test_a_document_split_over_two_passes_is_an_error():
    docs = [[1, 2, 3, 4]]
    head = {"ids": np.array([1, 2]), "positions": np.array([0, 1]), "layers": {0: np.ones((2, 1))}}
    tail = {"ids": np.array([3, 4]), "positions": np.array([2, 3]), "layers": {0: np.ones((2, 1))}}
    with pytest.raises(CurateError, match="0 of 1 documents whole"):
        split_passes([head, tail], docs, [0])


def test_vllm_settings_refuse_images():
    with pytest.raises(CurateError, match="not image models"):
        backend_settings("vllm", "auto", "image")


@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (make test-vllm installs it)")
@pytest.mark.vllm
def test_vllm_scores_rank_documents_as_torch_fp32_does_on_smollm2(tmp_path):
    """Contract: vLLM (fp32 and the machine's default precision) vs the torch backend in fp32,
    smollm2-135m, 4 layers x 8 neurons, 60 real documents: Spearman >= 0.99 and the same top
    10; fp32 also within 1e-3 of torch's activations."""
    from probes.backends import load_for
    from probes.engine import ProbeEngine
    from probes.neuronset import Neuron, NeuronSet

    texts = _documents(60)
    layers = {3: range(0, 64, 8), 9: range(8), 17: range(100, 108), 24: range(8)}
    neurons = NeuronSet(tuple(Neuron(la, i) for la, idx in layers.items() for i in idx), "test")
    torch_settings = backend_settings("torch", "fp32")
    loaded = load_for(torch_settings, "smollm2-135m")
    reference = ProbeEngine(loaded, neurons, agg="max", backend=torch_settings).probe(texts)
    for dtype in ("fp32", "auto"):
        settings = backend_settings("vllm", dtype)
        loaded = load_for(settings, "smollm2-135m")
        probed = ProbeEngine(loaded, neurons, agg="max", backend=settings).probe(texts)
        corr, shared = rank_agreement(reference.score, probed.score)
        assert corr >= 0.99 and shared == 10, (settings, corr, shared)
        if settings["dtype"] == "fp32":
            np.testing.assert_allclose(probed.neurons, reference.neurons, atol=1e-3, rtol=1e-3)


def _documents(n: int) -> list[str]:
    import tempfile

    from curate.demo_shards import build_demo_shards
    from probes.shards import list_shards, read_documents

    root = build_demo_shards(Path(tempfile.mkdtemp()) / "shards", docs_per_shard=20)
    texts = [d.text for s in list_shards(root) for d in read_documents(s)]
    return texts[:n]


@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (make test-vllm installs it)")
@pytest.mark.vllm
def test_the_datatrove_scorer_runs_on_vllm_with_the_torch_scores():
    """RosettaScorer(backend="vllm") tags documents with the scores the torch backend gives."""
    import json

    from datatrove.data import Document

    from curate.datatrove_steps import RosettaScorer
    from filters.recipe import load_recipe
    from probes.backends import load_for
    from probes.engine import ProbeEngine
    from probes.neuronset import load_neuron_set

    neurons = json.dumps([[layer, i] for layer in (2, 11) for i in range(0, 1536, 192)])
    recipe = load_recipe("rosetta-default").replace(
        probe={"model": "smollm2-135m", "neurons": neurons, "agg": "max"}
    )
    texts = _documents(20)
    docs = [Document(text=t, id=str(i), metadata={"file_path": "a"}) for i, t in enumerate(texts)]
    tagged = list(RosettaScorer(recipe, backend="vllm", dtype="fp32").run(iter(docs)))
    settings = backend_settings("torch", "fp32")
    engine = ProbeEngine(
        load_for(settings, "smollm2-135m"), load_neuron_set(neurons), "max", backend=settings
    )
    expected = engine.probe(texts).score
    got = np.array([d.metadata["rosetta_score"] for d in tagged])
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
