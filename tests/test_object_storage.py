"""Shards, side files, kept shards and manifest in an S3 bucket (a real S3-protocol server,
tests/s3_server.py): the same selection as on local disk, reruns that rewrite nothing, and a
missing bucket or wrong credentials refused in one line with nothing written."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from image_corpus import image_folder, photo
from s3_server import fresh_clients
from small_corpus import scored_small_corpus

from curate.cli import main
from curate.demo_shards import SHARDS
from probes.atomic import atomic_path, complete
from probes.storage import COMPLETE, as_path

BUDGET = ["--recipe", "rosetta-default", "--budget", "40%"]


def _curate(*args: str):
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.fixture(scope="module")
def remote_run(s3, tmp_path_factory):
    """The small corpus uploaded, then `curate filter` with shards, side files and output all in
    the bucket; the same filter on local disk beside it."""
    shards, scores = scored_small_corpus()
    corpus = s3.upload(shards, "corpus")
    result = _curate(
        "filter", corpus, "--scores", f"{corpus}-scores", "--out", f"{corpus}-kept", *BUDGET
    )
    assert result.exit_code == 0, result.output
    local = tmp_path_factory.mktemp("local") / "kept"
    reference = _curate("filter", shards, "--scores", scores, "--out", local, *BUDGET)
    assert reference.exit_code == 0, reference.output
    return corpus, local, result


def test_filter_in_a_bucket_keeps_what_it_keeps_on_local_disk(s3, remote_run):
    corpus, local, result = remote_run
    assert f"shards: {len(SHARDS)} scored, 0 already done" in result.output
    kept = s3.objects("corpus-kept/")
    written = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {k.removeprefix("corpus-kept/") for k in kept} == written
    for rel in written:  # kept shards, manifest and report: byte for byte
        remote = s3.client().get_object(Bucket=s3.bucket, Key=f"corpus-kept/{rel}")["Body"].read()
        assert remote == (local / rel).read_bytes(), rel
    manifest = json.loads((local / "manifest.json").read_text())
    assert 0 < manifest["kept_docs"] < manifest["input_docs"]
    side = s3.objects("corpus-scores/")
    assert len(side) == len(SHARDS) and all(k.endswith(".scores.parquet") for k in side)


def test_side_files_in_the_bucket_match_those_scored_locally(s3, remote_run):
    shards, scores = scored_small_corpus()
    corpus, _, _ = remote_run
    for path in sorted(scores.rglob("*.scores.parquet")):
        rel = path.relative_to(scores).as_posix()
        with as_path(f"{corpus}-scores/{rel}").open("rb") as f:
            remote = pq.read_table(f)
        assert remote.drop(["score"]).equals(pq.read_table(path).drop(["score"])), rel
        assert remote["score"].to_pylist() == pytest.approx(
            pq.read_table(path)["score"].to_pylist()
        )


def test_probe_reads_a_neuron_set_folder_from_the_bucket(s3, remote_run):
    """`curate probe` with the shipped neuron set uploaded: the same rows as the local probe."""
    from importlib.resources import files

    _, scores = scored_small_corpus()
    corpus, _, _ = remote_run
    neurons = s3.upload(Path(str(files("probes") / "data" / "default-neurons")), "sets/default")
    out = f"{corpus}-probed"
    result = _curate("probe", corpus, "--neurons", neurons, "--out", out)
    assert result.exit_code == 0, result.output
    for path in sorted(scores.rglob("*.scores.parquet")):
        with as_path(f"{out}/{path.relative_to(scores).as_posix()}").open("rb") as f:
            remote = pq.read_table(f)
        assert remote.drop(["score"]).equals(pq.read_table(path).drop(["score"]))


def test_a_rerun_rewrites_nothing(s3, remote_run):
    corpus, _, _ = remote_run
    before = s3.objects()
    again = _curate(
        "filter", corpus, "--scores", f"{corpus}-scores", "--out", f"{corpus}-kept", *BUDGET
    )
    assert again.exit_code == 0, again.output
    assert "shards:" not in again.output  # every side file reused: nothing probed
    assert s3.objects() == before


def test_a_remote_corpus_may_keep_its_side_files_locally(s3, remote_run, tmp_path):
    corpus, local, _ = remote_run
    scores = tmp_path / "scores"
    result = _curate("filter", corpus, "--scores", scores, "--out", f"{corpus}-kept-2", *BUDGET)
    assert result.exit_code == 0, result.output
    assert len(list(scores.rglob("*.scores.parquet"))) == len(SHARDS)
    manifest = s3.client().get_object(Bucket=s3.bucket, Key="corpus-kept-2/manifest.json")
    assert manifest["Body"].read() == (local / "manifest.json").read_bytes()


def test_a_missing_bucket_is_one_line_and_writes_nothing(s3, remote_run):
    corpus, _, _ = remote_run
    before = s3.objects()
    result = _curate(
        "filter",
        corpus,
        "--scores",
        f"{corpus}-scores",
        "--out",
        "s3://no-such-bucket/kept",
        *BUDGET,
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --out s3://no-such-bucket/kept: bucket s3://no-such-bucket does not exist"
    ]
    assert s3.objects() == before
    buckets = [b["Name"] for b in s3.client().list_buckets()["Buckets"]]
    assert buckets == [s3.bucket]


def test_wrong_credentials_are_one_line_and_write_nothing(s3, remote_run, monkeypatch):
    corpus, _, _ = remote_run
    before = s3.objects()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    fresh_clients()
    try:
        result = _curate(
            "filter", corpus, "--scores", f"{corpus}-scores", "--out", f"{corpus}-kept-3", *BUDGET
        )
    finally:
        monkeypatch.undo()
        fresh_clients()
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {corpus}: access to s3://{s3.bucket} denied"
    )
    assert "credentials" in lines[0]
    assert s3.objects() == before


def test_an_upload_is_whole_or_absent(s3):
    """A file reaches the bucket only when its block succeeds; a folder is complete only once
    its marker, written after its files, is there."""
    target = as_path(f"s3://{s3.bucket}/atomic/half.jsonl")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b'{"text": "half"}\n')
            raise RuntimeError("killed")
    assert not s3.objects("atomic/")
    folder = as_path(f"s3://{s3.bucket}/atomic/class-a")
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / "1.png").write_bytes(b"png")
    assert set(s3.objects("atomic/")) == {"atomic/class-a/1.png", f"atomic/class-a/{COMPLETE}"}
    assert complete(folder)
    s3.client().delete_object(Bucket=s3.bucket, Key=f"atomic/class-a/{COMPLETE}")
    assert not complete(folder)


def test_an_image_folder_in_a_bucket_is_cut_into_class_folders_with_markers(s3, tmp_path):
    """A folder format remotely: class folders listed and read in the bucket, each kept class
    folder uploaded with its completion marker, the same images kept as on local disk, and a
    rerun that rewrites nothing."""
    pool = image_folder(
        tmp_path / "pool", {c: [photo(10 * k + i) for i in range(3)] for k, c in enumerate("ab")}
    )
    recipe = tmp_path / "vision.toml"
    recipe.write_text(
        'version = 1\ninclude = "rosetta-image"\n[probe]\nneurons = "[[12, 7], [15, 100]]"\n'
        '[select]\nbudget = "50%"\n'
    )
    url = s3.upload(pool, "images")
    remote = [
        "filter",
        url,
        "--recipe",
        recipe,
        "--scores",
        f"{url}-scores",
        "--out",
        f"{url}-kept",
    ]
    result = _curate(*remote)
    assert result.exit_code == 0, result.output
    local = tmp_path / "kept"
    reference = _curate(
        "filter", pool, "--recipe", recipe, "--scores", tmp_path / "s", "--out", local
    )
    assert reference.exit_code == 0, reference.output
    images = {p.relative_to(local).as_posix() for p in local.glob("*/*.png")}
    kept = s3.objects("images-kept/")
    pngs = {k.removeprefix("images-kept/") for k in kept if k.endswith(".png")}
    assert images and pngs - {"report.png"} == images
    markers = {k for k in kept if k.endswith(COMPLETE)}
    assert markers == {f"images-kept/{c}/{COMPLETE}" for c in {i.split("/")[0] for i in images}}
    before = s3.objects()
    assert _curate(*remote).exit_code == 0
    assert s3.objects() == before


def test_a_dsir_target_in_the_bucket_selects_as_a_local_one(s3, remote_run, tmp_path):
    shards, scores = scored_small_corpus()
    target = s3.upload(shards / "topics", "dsir-target")
    runs = {}
    for name, where in [("remote", target), ("local", shards / "topics")]:
        out = tmp_path / name
        args = ["--recipe", "dsir", "--budget", "5k", "--dsir-target", where, "--out", out]
        result = _curate("filter", shards, "--scores", scores, *args)
        assert result.exit_code == 0, result.output
        runs[name] = json.loads((out / "manifest.json").read_text())
    assert runs["remote"]["kept_docs"] > 0
    assert runs["remote"]["recipe"]["dsir"]["target"] == target
    for key in ("kept_docs", "kept_tokens", "threshold", "tokens_by_source"):
        assert runs["remote"][key] == runs["local"][key], key


def test_a_neuron_set_written_to_the_bucket_is_read_back_by_probe(s3, remote_run, tmp_path):
    """`curate neurons top --out s3://...` (the same writer as `curate discover`): the folder
    with its marker, the same set as written locally, usable by `curate probe` from there."""
    from probes.neuronset import load_neuron_set

    shards, _ = scored_small_corpus()
    corpus, _, _ = remote_run
    sides = ["--target", shards / "topics", "--background", shards / "modules"]
    args = [*sides, "-k", "4", "--max-tokens", "1500", "--dtype", "fp32"]
    url = f"s3://{s3.bucket}/sets/top4"
    for out in (url, tmp_path / "top4"):
        result = _curate("neurons", "top", "probes/data/default-neurons", *args, "--out", out)
        assert result.exit_code == 0, result.output
    assert f"sets/top4/{COMPLETE}" in s3.objects("sets/top4/")
    assert load_neuron_set(url).ordered() == load_neuron_set(str(tmp_path / "top4")).ordered()
    probed = _curate("probe", corpus, "--neurons", url, "--out", tmp_path / "scores")
    assert probed.exit_code == 0, probed.output
