"""`curate filter` end to end on real MiniLM scores: outputs, manifest, determinism, resume."""

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import datasets
import pytest
from click.testing import CliRunner
from independent import kept_mask, read_side_files
from small_corpus import read_jsonl_ids, scored_small_corpus

from curate.cli import main
from probes.shards import iter_raw_rows

REPO = Path(__file__).resolve().parents[1]


def _filter(*args: str) -> click.testing.Result:
    shards, scores = scored_small_corpus()
    return CliRunner().invoke(main, ["filter", str(shards), "--scores", str(scores), *args])


def longest_kept(out: Path) -> int:
    """Tokens of the longest document written to `out`: the most a cut may overshoot by."""
    corpus = read_side_files(scored_small_corpus()[1])
    return int(corpus.tokens[kept_mask(corpus, out)].max())


def longest_dropped(out: Path) -> int:
    """Tokens of the longest usable document not written to `out`."""
    corpus = read_side_files(scored_small_corpus()[1])
    return int(corpus.tokens[corpus.usable & ~kept_mask(corpus, out)].max())


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("filter") / "out"
    result = _filter(
        "--recipe",
        "rosetta-default",
        "--out",
        str(out),
        "--budget",
        "40%",
        "--dropped",
        str(out.parent / "dropped"),
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_filter_writes_kept_docs_in_input_format_and_layout(default_run):
    out, output = default_run
    shards, _ = scored_small_corpus()
    manifest = json.loads((out / "manifest.json").read_text())
    for key in (
        "input_docs",
        "input_tokens",
        "kept_docs",
        "kept_tokens",
        "budget_tokens",
        "threshold",
        "recipe",
        "neuron_set",
        "model",
        "tool_version",
    ):
        assert manifest[key] is not None, key
    assert manifest["budget_tokens"] == round(0.4 * manifest["input_tokens"])
    assert manifest["kept_tokens"] <= manifest["budget_tokens"] + longest_kept(out)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("part-*"))
    assert written == sorted(p.relative_to(shards).as_posix() for p in shards.rglob("part-*"))
    kept_rows = 0
    for rel in written:  # every kept row is a byte-identical copy of an input row
        source = {
            raw if isinstance(raw, bytes) else json.dumps(raw, sort_keys=True)
            for _, raw in iter_raw_rows(shards / rel)
        }
        for _, raw in iter_raw_rows(out / rel):
            assert (raw if isinstance(raw, bytes) else json.dumps(raw, sort_keys=True)) in source
            kept_rows += 1
    assert kept_rows == manifest["kept_docs"]
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "kept:" in output and f"{manifest['kept_tokens']:,}" in output
    dropped = sum(1 for rel in written for _ in iter_raw_rows(out.parent / "dropped" / rel))
    assert dropped + kept_rows == manifest["input_docs"]


def test_outputs_load_with_datasets(default_run):
    out, _ = default_run
    manifest = json.loads((out / "manifest.json").read_text())
    jsonl = [str(p) for p in out.rglob("*.jsonl*")]
    parquet = [str(p) for p in out.rglob("*.parquet")]
    cache = str(out.parent / "hf-cache")
    as_json = datasets.load_dataset("json", data_files=jsonl, split="train", cache_dir=cache)
    as_parquet = datasets.load_dataset(
        "parquet", data_files=parquet, split="train", cache_dir=cache
    )
    assert len(as_json) + len(as_parquet) == manifest["kept_docs"]
    assert set(as_json.column_names) >= {"id", "text"}


def test_budget_larger_than_corpus_keeps_everything_and_says_so(tmp_path):
    result = _filter("--out", str(tmp_path / "o"), "--budget", "10B")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    eligible = manifest["input_docs"] - manifest["dropped"].get("too_short", 0)
    assert manifest["budget_exceeds_corpus"] and manifest["kept_docs"] == eligible
    assert "every eligible document was kept" in result.output


def test_dry_run_writes_nothing(tmp_path):
    result = _filter("--out", str(tmp_path / "o"), "--dry-run", "--budget", "5k")
    assert result.exit_code == 0 and "dry run" in result.output
    assert not (tmp_path / "o").exists()


def test_user_errors_exit_2_with_one_line(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    for args, message in [
        (["--out", str(tmp_path / "busy")], "holds no curate output"),
        (["--out", str(tmp_path / "o"), "--recipe", "nope"], "bundled recipe"),
        (["--out", str(tmp_path / "o"), "--budget", "12Q"], "budget"),
    ]:
        result = _filter(*args)
        assert result.exit_code == 2 and message in result.output, result.output
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_random_and_dsir_baselines_share_the_budget_code(tmp_path):
    shards, _ = scored_small_corpus()
    random = _filter("--recipe", "random", "--out", str(tmp_path / "r"), "--budget", "5k")
    dsir = _filter(
        "--recipe",
        "dsir",
        "--out",
        str(tmp_path / "d"),
        "--budget",
        "5k",
        "--dsir-target",
        str(shards / "topics"),
    )
    assert random.exit_code == 0 and dsir.exit_code == 0, random.output + dsir.output
    by_source = json.loads((tmp_path / "d" / "manifest.json").read_text())["tokens_by_source"]
    assert by_source["topics"]["kept"] > 3 * by_source["modules"]["kept"]  # resembles the target
    kept = json.loads((tmp_path / "r" / "manifest.json").read_text())["kept_tokens"]
    assert kept <= 5000 + longest_kept(tmp_path / "r")
    assert kept > 5000 - longest_dropped(tmp_path / "r")


def test_bad_rows_are_counted_and_skipped_never_written(tmp_path):
    from conftest import write_jsonl

    good = [
        {"id": f"g{i}", "text": f"a perfectly ordinary sentence number {i} " * 8} for i in range(12)
    ]
    write_jsonl(tmp_path / "in" / "a.jsonl", [*good[:6], "{broken", {"id": "x"}, *good[6:]])
    result = CliRunner().invoke(
        main,
        [
            "filter",
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "o"),
            "--budget",
            "100%",
            "--scores",
            str(tmp_path / "s"),
            "--on-error",
            "skip",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["skipped_rows"] == 2 and manifest["kept_docs"] == 12
    assert read_jsonl_ids(tmp_path / "o" / "a.jsonl") == [d["id"] for d in good]
    strict = CliRunner().invoke(
        main,
        [
            "filter",
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "p"),
            "--scores",
            str(tmp_path / "s2"),
        ],
    )
    assert strict.exit_code == 2 and "a.jsonl:7" in strict.output


KILL_SCRIPT = """
import sys
from pathlib import Path
from curate.pipeline import FilterJob, filter
filter(FilterJob(Path(sys.argv[1]), "rosetta-diverse", Path(sys.argv[3]), budget="60%",
                 scores=Path(sys.argv[2]), dropped=Path(sys.argv[3] + "-dropped"), progress=False))
"""


@pytest.mark.slow
def test_killed_runs_resume_to_byte_identical_output(tmp_path):
    shards, scores = scored_small_corpus()
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(out: Path, kill_after: float | None = None) -> int:
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(shards), str(scores), str(out)], env=env
        )
        if kill_after is None:
            return proc.wait(timeout=300)
        deadline = time.monotonic() + kill_after
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and any(out.rglob("*.tmp")):  # mid-write: the worst moment
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        return proc.wait()

    assert run(tmp_path / "clean") == 0
    interrupted = 0
    for attempt, delay in enumerate((6.0, 9.0, 12.0)):
        out = tmp_path / f"killed{attempt}"
        run(out, kill_after=delay)
        interrupted += not (out / "manifest.json").exists()
        assert run(out) == 0  # resume
        assert _same_tree(out, tmp_path / "clean")
        assert _same_tree(Path(f"{out}-dropped"), Path(f"{tmp_path / 'clean'}-dropped"))
    assert interrupted > 0  # at least one kill landed before the run finished


@pytest.mark.parametrize("extra", [[], ["--recipe", "rosetta-sample"]])
def test_sketch_path_streams_side_files_to_the_exact_cut(tmp_path, extra):
    exact, sketch = tmp_path / "exact", tmp_path / "sketch"
    common = ["--budget", "40%", *extra]
    for folder, forced in ((exact, []), (sketch, ["--max-exact-rows", "10"])):
        out = ["--out", str(folder / "out"), "--dropped", str(folder / "dropped")]
        result = _filter(*out, *common, *forced)
        assert result.exit_code == 0, result.output
    a, b = (json.loads((d / "out" / "manifest.json").read_text()) for d in (exact, sketch))
    assert (a["selection"], b["selection"]) == ("exact", "sketch")
    assert b["kept_tokens"] <= b["budget_tokens"] + longest_kept(sketch / "out")
    for key in ("kept_docs", "kept_tokens", "budget_tokens", "dropped"):
        assert a[key] == b[key], key
    # z-score statistics are chunk sums combined by fsum: equal to the last few ulps
    assert b["threshold"] == pytest.approx(a["threshold"], rel=1e-12)
    (cut_a,), (cut_b,) = a["cut"]["cuts"], b["cut"]["cuts"]
    assert cut_a["tie"] == cut_b["tie"] and cut_b["key"] == pytest.approx(cut_a["key"], rel=1e-12)
    assert a["tokens_by_source"] == b["tokens_by_source"]
    data = [
        p.relative_to(exact)
        for p in exact.rglob("*")
        if p.is_file() and p.name not in ("manifest.json", "report.png", ".curate-selection.json")
    ]
    assert any(rel.parts[0] == "dropped" for rel in data) and len(data) == 8
    for rel in data:  # same kept and dropped rows, byte for byte
        assert filecmp.cmp(exact / rel, sketch / rel, shallow=False), rel
    report = (sketch / "out" / "report.png").read_bytes()  # the same picture as the exact path
    assert report[:4] == b"\x89PNG" and report == (exact / "out" / "report.png").read_bytes()


def test_sketch_path_names_the_recipe_feature_that_needs_exact_selection(tmp_path):
    result = _filter(
        "--recipe", "rosetta-diverse", "--out", str(tmp_path / "o"), "--max-exact-rows", "10"
    )
    assert result.exit_code == 2, result.output
    assert "diversity.clusters" in result.output and "--max-exact-rows" in result.output
