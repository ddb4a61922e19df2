"""Discovery across vision models: feature maps resampled to one grid, the text pipeline's
statistics, matching and controls, the same artifact; the shipped vision set probes images."""

import json

import pytest
import torch
from click.testing import CliRunner
from image_corpus import image_folder, photo

from curate.discover_cli import discover as discover_cmd
from probes.discovery import Corpus
from probes.discovery.run import full_capture, on_common_grid
from probes.errors import CurateError
from probes.hooks import layer_widths
from probes.models import load_model
from probes.neuronset import load_neuron_set


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet-lite0")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision") / "pool"
    classes = {
        c: [photo(7 * k + i, (48 + 8 * i, 64)) for i in range(8)] for k, c in enumerate("ab")
    }
    return image_folder(root, classes)


def test_maps_are_area_means_on_the_common_grid():
    acts = torch.arange(2 * 16 * 3, dtype=torch.float32).reshape(2, 16, 3)  # 4 x 4 maps
    cells = on_common_grid(acts, 2)
    maps = acts.reshape(2, 4, 4, 3)
    assert cells.shape == (2, 4, 3)
    torch.testing.assert_close(cells[:, 0], maps[:, :2, :2].mean((1, 2)))  # top-left cell
    torch.testing.assert_close(cells[:, 3], maps[:, 2:, 2:].mean((1, 2)))
    with pytest.raises(CurateError, match="not square"):
        on_common_grid(torch.zeros(1, 12, 3), 2)


def test_a_conv_net_is_captured_at_its_widest_blocks_unless_told(lite0):
    widths = layer_widths(lite0.model, lite0.model_type)
    capture = full_capture(lite0, None)
    assert (
        list(capture.requests) == [i for i, w in enumerate(widths) if w == 1152] == [12, 13, 14, 15]
    )
    with pytest.raises(CurateError, match=r"differ in width \(3: 144, 12: 1152\)"):
        full_capture(lite0, [3, 12])


def test_an_image_corpus_counts_grid_cells_and_labels_by_class_folder(lite0, pool):
    corpus = Corpus(pool, lite0, max_tokens=9 * 10, heldout=0.25, grid=3)
    docs = list(corpus)
    assert len(docs) == 10 and all(d.n_tokens == 9 and d.image is not None for d in docs)
    assert {d.label for d in docs} == {"a", "b"} and corpus.label_key == "label"
    assert sum(corpus.tokens.values()) == 90


def test_discover_across_two_lite_models_writes_a_set_that_probes_images(pool, tmp_path):
    out = tmp_path / "set"
    args = ["--model", "efficientnet-lite0", "--model", "efficientnet-lite1", "--data", pool]
    args += ["--out", out, "--max-tokens", 16 * 49, "--grid", 7, "--min-corr", 0.5]
    result = CliRunner().invoke(discover_cmd, list(map(str, args)))
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["corpus"]["grid"] == 7 and meta["corpus"]["documents"]
    assert [m["width"] for m in meta["models"]] == [1152, 1152]
    assert meta["models"][0]["layers"] == [12, 13, 14, 15]
    assert meta["null_rate"]["partner"].startswith("efficientnet-lite1 (random init")
    neurons = load_neuron_set(str(out))
    assert len(neurons.neurons) == meta["counts"]["rosetta"] > 0
    assert all(12 <= n.layer <= 15 for n in neurons.ordered())


def test_models_of_two_modalities_are_refused(pool, tmp_path):
    args = ["--model", "efficientnet-lite0", "--model", "minilm-l6", "--data", str(pool)]
    result = CliRunner().invoke(discover_cmd, [*args, "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "one modality" in str(result.exception or result.output)


def test_the_shipped_vision_set_was_made_on_lite0_and_names_its_command(lite0):
    from probes.models import weights_hash

    folder = files_data("default-vision-neurons")
    neurons = load_neuron_set(str(folder))
    neurons.check_model("efficientnet-lite0", weights_hash("efficientnet-lite0"))
    meta = json.loads((folder / "meta.json").read_text())
    assert len(neurons.neurons) == meta["counts"]["rosetta"] >= 100
    assert "--model efficientnet-lite0 --model efficientnet-lite1" in meta["command"]


def test_the_atlas_of_a_vision_set_shows_each_neurons_top_image_crops(pool, tmp_path):
    import re

    from curate.discover_cli import neurons

    out = tmp_path / "atlas.html"
    args = ["atlas", str(files_data("default-vision-neurons")), "--data", str(pool)]
    result = CliRunner().invoke(neurons, [*args, "--out", str(out), "--limit", 2, "--snippets", 3])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    cards = page.split('<section class="card"')[1:]
    assert len(cards) == 2 and 'id="L15N541"' in cards[0]  # the set's best neuron first
    for card in cards:
        assert card.count('<img src="data:image/png;base64,') == 3
        peaks = [float(p) for p in re.findall(r"peak ([0-9.]+)</figcaption>", card)]
        assert peaks == sorted(peaks, reverse=True)


def files_data(name: str):
    from importlib.resources import files

    return files("probes") / "data" / name
