"""`curate bench --modality image`: the image harness end to end on a tiny pool (real
EfficientNet-Lite0, real training and evaluation), its resume, and its refusals."""

import json

import pytest
from click.testing import CliRunner
from image_corpus import image_folder, image_parquet, photo

from curate.cli import main

ARMS = ["unfiltered", "random", "rosetta-image", "prototypes"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-bench")
    pool = root / "pool"
    image_parquet(
        pool / "train-00.parquet",
        [photo(i, (32, 32)) for i in range(40)],
        label=[i % 2 for i in range(40)],
    )
    image_parquet(
        pool / "test-00.parquet",
        [photo(100 + i, (32, 32)) for i in range(20)],
        label=[i % 2 for i in range(20)],
    )
    imagenet = image_folder(
        root / "imagenet",
        {
            "n07920052": [photo(200 + i) for i in range(3)],
            "n03773504": [photo(300 + i) for i in range(3)],
        },
    )
    (imagenet / "classes.tsv").write_text(
        "index\twnid\tname\n967\tn07920052\tespresso\n657\tn03773504\tmissile\n"
    )
    config = root / "tiny.toml"
    config.write_text(
        'version = 1\ninclude = "image-quick"\n[pool]\nmax_images = 0\n[grid]\nbudget = 8\n'
        "multiples = [0.5, 1.0]\nseeds = 1\n[train]\nbatch = 4\n[eval]\nimagenet_max = 0\n"
        "downstream_train = 20\ndownstream_test = 20\nreplicates = 100\n"
    )
    return pool, imagenet, config


def _bench(data, out, *extra):
    pool, imagenet, config = data
    args = ["bench", "--modality", "image", "--pool", pool, "--imagenet-dir", imagenet]
    args += ["--downstream", pool, "--config", config, "--out", out, *extra]
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.slow
def test_the_image_bench_runs_every_arm_and_reports_parity_in_images(data, tmp_path):
    out = tmp_path / "bench"
    result = _bench(data, out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["unit"] == "images" and report["data"]["pool_images"] == 40  # no test image
    assert report["data"]["imagenet_images"] == 6
    assert report["data"]["downstream"] == {"train": 20, "test": 20}
    assert set(report["summary"]) == set(ARMS)
    for arm in ARMS:
        row = report["summary"][arm]
        assert 0 <= row["imagenet_top1"] <= 1 and 0 <= row["downstream"] <= 1
        for key in ("tokens_to_parity", "token_savings", "token_savings_ci", "savings_resolved"):
            assert key in row
    runs = {(r["arm"], r["tokens_requested"]): r for r in report["runs"]}
    assert set(runs) == {(a, t) for a in ARMS for t in (4, 8)}
    assert all(r["steps"] == t // 4 and r["selected_tokens"] == t for (_, t), r in runs.items())
    assert (out / "parity.png").stat().st_size > 0 and "## Verdicts" in (
        out / "report.md"
    ).read_text()
    # the unfiltered order depends on the seed, the Rosetta selection on the scores: they differ
    records = {
        a: json.loads((out / "runs" / a / "T8" / "seed0" / "run.json").read_text()) for a in ARMS
    }
    assert all(r["train"]["losses"] for r in records.values())

    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("run.json")}
    again = _bench(data, out)  # a rerun trains nothing and reports the same
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("run.json")} == stamps
    assert json.loads((out / "report.json").read_text())["summary"] == report["summary"]


def test_the_image_bench_refuses_missing_folders_and_config_typos(data, tmp_path):
    pool, imagenet, config = data
    result = CliRunner().invoke(
        main, ["bench", "--modality", "image", "--pool", str(pool), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "needs --imagenet-dir and --downstream" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\ninclude = "image-quick"\n[grid]\nbugdet = 3\n')
    result = _bench((pool, imagenet, bad), tmp_path / "o")
    assert result.exit_code == 2 and "bugdet" in result.output and "budget" in result.output
    assert not (tmp_path / "o").exists()
    early = _bench(data, tmp_path / "early", "--report-only")  # before the base has run
    assert early.exit_code == 2 and "nothing to report yet" in early.output


def test_evaluation_images_never_join_the_pool_and_a_resumed_folder_keeps_its_pool(data, tmp_path):
    from curate.cpt.image_bench import ImageBench, load_image_config
    from probes.errors import CurateError

    pool, imagenet, config = data
    cfg = load_image_config(str(config))
    with pytest.raises(CurateError, match="every shard is an evaluation shard"):
        ImageBench(cfg, imagenet, imagenet, pool, tmp_path / "a")
    with pytest.raises(CurateError, match="lies inside --pool"):
        ImageBench(cfg, pool, imagenet, pool, pool / "out")
    bench = ImageBench(cfg, pool, imagenet, pool, tmp_path / "b")
    assert len(bench.pool.pixels) == 40 and sorted(set(bench.imagenet_truth)) == [657, 967]
    smaller = tmp_path / "smaller"
    image_parquet(
        smaller / "train-00.parquet", [photo(i, (32, 32)) for i in range(30)], label=[0] * 30
    )
    image_parquet(
        smaller / "test-00.parquet", [photo(i, (32, 32)) for i in range(12)], label=[0] * 12
    )
    with pytest.raises(CurateError, match="was started on another pool"):
        ImageBench(cfg, smaller, imagenet, smaller, tmp_path / "b")
    with pytest.raises(CurateError, match="selected no images"):
        bench.run(tmp_path / "b" / "runs" / "x", [], 8, 0, "empty arm")
