"""Filtering image corpora with the same commands: modality from the shards, budgets in pixels
or images, kept images written byte for byte in the input's layout, the datatrove steps on image
documents."""

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from image_corpus import image_folder, photo, webdataset_tar

from curate.cli import main
from probes.shards import list_shards, read_documents

NEURONS = "[[12, 7], [15, 100], [14, 3]]"  # lite0 channels of its 1152-wide blocks


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("images") / "pool"
    sizes = [(40, 30), (64, 64), (20, 50), (90, 70)]
    return image_folder(
        root,
        {c: [photo(10 * k + i, sizes[i]) for i in range(4)] for k, c in enumerate("abc")},
    )


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "vision.toml"
    path.write_text(
        f'version = 1\ninclude = "rosetta-image"\n[probe]\nneurons = "{NEURONS}"\n'
        '[select]\nbudget = "50%"\n'
    )
    return path


def _filter(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["filter", *map(str, args)])
    return result.exit_code, result.output


def test_rosetta_filter_cuts_an_image_folder_by_pixels_and_copies_images(corpus, recipe, tmp_path):
    out = tmp_path / "kept"
    code, output = _filter(corpus, "--recipe", recipe, "--out", out, "--scores", tmp_path / "s")
    assert code == 0, output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["budget_unit"] == "pixels" and manifest["model"] == "efficientnet-lite0"
    pixels = {n: h * w for n, (h, w) in enumerate([(40, 30), (64, 64), (20, 50), (90, 70)])}
    assert manifest["input_tokens"] == 3 * sum(pixels.values())
    assert abs(manifest["kept_tokens"] - manifest["budget_tokens"]) <= max(pixels.values())
    assert "pixels" in output
    kept = [p for shard in list_shards(out) for p in shard.iterdir()]
    assert len(kept) == manifest["kept_docs"] > 0
    for path in kept:  # byte for byte, in the same class folder
        assert path.read_bytes() == (corpus / path.parent.name / path.name).read_bytes()


def test_a_budget_in_images_and_the_random_baseline_need_no_text(corpus, recipe, tmp_path):
    code, output = _filter(
        corpus, "--recipe", recipe, "--unit", "images", "--budget", "5", "--out", tmp_path / "r",
        "--scores", tmp_path / "s",
    )  # fmt: skip
    assert code == 0, output
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["budget_unit"] == "images" and manifest["kept_docs"] == 5
    code, output = _filter(
        corpus, "--recipe", "random", "--unit", "images", "--budget", "6", "--out", tmp_path / "u"
    )
    assert code == 0, output
    manifest = json.loads((tmp_path / "u" / "manifest.json").read_text())
    assert manifest["kept_docs"] == 6 and manifest["input_docs"] == 12


def test_units_of_the_other_modality_and_text_recipes_on_images_are_refused(corpus, tmp_path):
    code, output = _filter(corpus, "--unit", "tokens", "--out", tmp_path / "x")
    assert code == 2 and "does not count image documents" in output
    code, output = _filter(corpus, "--recipe", "rosetta-default", "--out", tmp_path / "y")
    assert code == 2 and "reads texts, but the shards under" in output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_webdataset_pool_is_filtered_into_tars_of_the_same_samples(recipe, tmp_path):
    samples = [{"png": photo(i, (32, 32)), "cls": b"1"} for i in range(6)]
    tar = webdataset_tar(tmp_path / "wds" / "part-0.tar", samples)
    out = tmp_path / "kept"
    code, output = _filter(tar.parent, "--recipe", recipe, "--out", out)
    assert code == 0, output
    kept = list(read_documents(out / "part-0.tar", image_key="image"))
    source = {d.id: d.media for d in read_documents(tar, image_key="image")}
    assert len(kept) == 3 and all(source[d.id] == d.media for d in kept)


def test_datatrove_steps_score_image_documents_like_the_probe(corpus, recipe, tmp_path):
    from datatrove.executor import LocalPipelineExecutor

    from curate.datatrove_steps import RosettaScorer, ScoreStats, ShardReader
    from filters.recipe import load_recipe
    from probes import sidefile

    loaded = load_recipe(str(recipe))
    LocalPipelineExecutor(
        [
            ShardReader(str(corpus), image_key="image"),
            RosettaScorer(loaded),
            ScoreStats(str(tmp_path / "stats"), loaded),
        ],
        tasks=1,
        logging_dir=str(tmp_path / "logs"),
    ).run()
    stats = pq.read_table(tmp_path / "stats" / "00000.parquet").to_pylist()
    assert len(stats) == 12 and stats[0]["n_tokens"] == 40 * 30
    scores = tmp_path / "s"
    code, output = _filter(
        corpus, "--recipe", recipe, "--dry-run", "--out", tmp_path / "o", "--scores", scores
    )
    assert code == 0, output
    side = pq.read_table(sidefile.path_for(tmp_path / "s", corpus, corpus / "a")).to_pylist()
    by_id = {row["id"]: row for row in stats}
    for row in side:
        assert by_id[row["id"]]["score"] == pytest.approx(row["score"], rel=1e-5)
