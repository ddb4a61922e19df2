"""`curate probe` end to end with the real MiniLM model: outputs, resume, bad input."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import write_jsonl
from small_corpus import write_small_corpus

from curate.cli import main
from probes.sidefile import read_meta

NEURONS = "[[2, 10], [5, 300], [5, 1000]]"


def probe(*args: str):
    return CliRunner().invoke(main, ["probe", *map(str, args), "--neurons", NEURONS])


def docs(n: int, prefix: str = "doc") -> list[dict]:
    topics = ["rivers and lakes", "tax law", "the python interpreter", "baking bread"]
    return [
        {"id": f"{prefix}{i}", "text": f"A note on {topics[i % 4]}, number {i}."} for i in range(n)
    ]


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and not p.name.endswith(".scores.parquet")]


def test_side_files_are_row_aligned_at_the_same_relative_paths(demo_shards, tmp_path):
    shards, out = write_small_corpus(demo_shards, tmp_path / "in"), tmp_path / "scores"
    result = probe(shards, "--out", out)
    assert result.exit_code == 0, result.output
    assert "documents:" in result.output and "tok/s" in result.output
    for rel in ["modules/part-000.jsonl", "modules/part-001.parquet", "topics/part-000.jsonl.gz"]:
        table = pq.read_table(out / f"{rel}.scores.parquet")
        assert table.column("row").to_pylist() == list(range(table.num_rows))
        assert {"row", "id", "n_tokens", "score", "L2N10", "L5N300", "L5N1000"} <= set(
            table.column_names
        )
        assert table.column("score").null_count == 0 and min(table["n_tokens"].to_pylist()) > 0
        assert read_meta(out / f"{rel}.scores.parquet")["shard"] == rel
    jsonl = (shards / "modules/part-000.jsonl").read_text().splitlines()
    table = pq.read_table(out / "modules/part-000.jsonl.scores.parquet")
    assert table.column("id").to_pylist() == [json.loads(line)["id"] for line in jsonl]


def test_rerun_skips_finished_shards_and_redoes_changed_ones(tmp_path):
    shards, out = tmp_path / "in", tmp_path / "out"
    write_jsonl(shards / "a.jsonl", docs(5))
    write_jsonl(shards / "b.jsonl", docs(5, "b"))
    assert probe(shards, "--out", out).exit_code == 0
    before = (out / "a.jsonl.scores.parquet").stat().st_mtime_ns
    write_jsonl(shards / "b.jsonl", docs(7, "b"))  # changed shard: its scores are stale
    result = probe(shards, "--out", out)
    assert "1 scored, 1 already done" in result.output
    assert (out / "a.jsonl.scores.parquet").stat().st_mtime_ns == before
    assert pq.read_table(out / "b.jsonl.scores.parquet").num_rows == 7


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"id": "x", "text": ', "invalid JSON"),
        ('{"id": "x", "body": "no text key"}', "missing text key 'text'"),
        ('{"id": "x", "text": "   "}', "empty text"),
    ],
)
def test_bad_line_fails_with_file_and_line_and_writes_nothing(tmp_path, line, reason):
    shards, out = tmp_path / "in", tmp_path / "out"
    write_jsonl(shards / "bad.jsonl", [*map(json.dumps, docs(3)), line, *map(json.dumps, docs(2))])
    result = probe(shards, "--out", out)
    assert result.exit_code == 2
    assert f"bad.jsonl:4: {reason}" in result.output
    assert not (out / "bad.jsonl.scores.parquet").exists() and not leftovers(out)


def test_skip_mode_keeps_rows_aligned_and_counts_what_it_skipped(tmp_path):
    shards, out = tmp_path / "in", tmp_path / "out"
    good = [json.dumps(d) for d in docs(4)]
    path = shards / "mixed.jsonl"
    path.parent.mkdir()
    path.write_bytes(
        "\n".join([good[0], "{oops", good[1], '{"text": ""}', good[2]]).encode()
        + b'\n{"text": "caf\xe9"}\n'
        + good[3].encode()
        + b"\n"
    )
    result = probe(shards, "--out", out, "--on-error", "skip")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "mixed.jsonl.scores.parquet").to_pylist()
    assert [r["row"] for r in table] == list(range(7))
    assert [r["score"] is None for r in table] == [False, True, False, True, False, True, False]
    assert "not valid UTF-8" in table[5]["error"]
    assert "3 skipped" in result.output


def test_truncated_gzip_is_reported_not_silently_shortened(tmp_path):
    shards, out = tmp_path / "in", tmp_path / "out"
    shards.mkdir()
    blob = gzip.compress("".join(json.dumps(d) + "\n" for d in docs(3000)).encode())
    (shards / "cut.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    result = probe(shards, "--out", out)
    assert result.exit_code == 2 and "cut.jsonl.gz:" in result.output
    assert "truncated or corrupt gzip" in result.output
    assert not leftovers(out) and not list(out.rglob("*.parquet"))


def test_huge_document_is_truncated_and_counted(tmp_path):
    shards, out = tmp_path / "in", tmp_path / "out"
    big = {"id": "big", "text": "river " * 900_000}  # ~5 MB on one line
    write_jsonl(shards / "big.jsonl", [big, *docs(2)])
    result = probe(shards, "--out", out)
    assert result.exit_code == 0, result.output
    assert "1 truncated" in result.output
    row = pq.read_table(out / "big.jsonl.scores.parquet").to_pylist()[0]
    assert row["truncated"] and row["n_tokens"] == 900_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "minilm"], "did you mean: minilm-l6"),
        (["--neurons", "[[9, 1]]"], "does not exist in minilm-l6"),
    ],
)
def test_bad_model_or_neurons_exit_2_with_a_hint(tmp_path, args, message):
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(2))
    result = CliRunner().invoke(
        main,
        ["probe", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--neurons", NEURONS] + args,
    )
    assert result.exit_code == 2 and message in result.output


def test_empty_directory_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = probe(tmp_path / "empty", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "no shards under" in result.output


def test_a_killed_run_resumes_and_leaves_no_partial_side_file(tmp_path):
    shards, out = tmp_path / "in", tmp_path / "out"
    for i in range(6):
        write_jsonl(shards / f"s{i}.jsonl", docs(300, f"s{i}-"))
    cmd = [sys.executable, "-m", "curate.cli", "probe", str(shards), "--out", str(out)]
    proc = subprocess.Popen([*cmd, "--neurons", NEURONS], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.rglob("*.scores.parquet")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(out.glob("*.scores.parquet"))
    assert 1 <= len(finished) < 6
    for path in finished:  # whatever exists is whole
        assert pq.read_table(path).num_rows == 300
    result = subprocess.run([*cmd, "--neurons", NEURONS], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} already done" in result.stdout
    assert len(list(out.glob("*.scores.parquet"))) == 6 and not leftovers(out)
    clean = tmp_path / "clean"  # an uninterrupted run writes the same side files
    assert subprocess.run([*cmd[:-1], str(clean), "--neurons", NEURONS]).returncode == 0
    for path in sorted(clean.glob("*.scores.parquet")):
        resumed = pq.read_table(out / path.name)
        assert resumed.equals(pq.read_table(path))
        assert read_meta(out / path.name) == read_meta(path)
