"""Side files are reused exactly when every input that shapes their rows is unchanged."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import transformers
from click.testing import CliRunner
from conftest import write_jsonl
from small_corpus import scored_small_corpus

from curate.cli import main

NEURONS = "[[1, 5], [2, 40]]"  # exist in minilm-l6 and mpnet-base alike


def records(n: int) -> list[dict]:
    topics = ["rivers and lakes", "tax law", "the python interpreter", "baking bread"]
    return [
        {
            "id": f"d{i}",
            "uid": f"u{i}",
            "text": f"A note on {topics[i % 4]}, number {i}.",
            "body": f"Another text entirely: {topics[(i + 1) % 4]} {i}.",
        }
        for i in range(n)
    ]


def probe(shards: Path, out: Path, *args: str):
    return CliRunner().invoke(
        main, ["probe", str(shards), "--out", str(out), "--neurons", NEURONS, *args]
    )


def side_meta(out: Path) -> dict:
    return json.loads(pq.read_schema(out / "a.jsonl.scores.parquet").metadata[b"rosetta_curate"])


@pytest.mark.parametrize(
    ("changed", "field", "value"),
    [
        (["--model", "mpnet-base"], "model", "mpnet-base"),
        (["--neurons", "[[1, 5], [2, 41]]"], "neurons", [[1, 5, 0.0, 1.0], [2, 41, 0.0, 1.0]]),
        (["--agg", "topk"], "agg", "topk"),
        (["--text-key", "body"], "text_key", "body"),
        (["--id-key", "uid"], "id_key", "uid"),
        (["--on-error", "skip"], "on_error", "skip"),
    ],
)
def test_a_changed_input_reprobes_and_an_unchanged_one_does_not(tmp_path, changed, field, value):
    shards, out = tmp_path / "in", tmp_path / "out"
    write_jsonl(shards / "a.jsonl", records(6))
    assert probe(shards, out).exit_code == 0
    again = probe(shards, out)
    assert "0 scored, 1 already done" in again.output, again.output
    before = pq.read_table(out / "a.jsonl.scores.parquet")
    redone = probe(shards, out, *changed)
    assert redone.exit_code == 0, redone.output
    assert "1 scored, 0 already done" in redone.output, redone.output
    assert side_meta(out)[field] == value
    after = pq.read_table(out / "a.jsonl.scores.parquet")
    if field == "id_key":
        assert after.column("id").to_pylist() == [f"u{i}" for i in range(6)]
    elif field in ("model", "neurons", "agg", "text_key"):
        assert after.column("score").to_pylist() != before.column("score").to_pylist()


def test_side_files_written_under_skip_do_not_satisfy_a_run_that_fails_on_bad_rows(tmp_path):
    shards, out = tmp_path / "in", tmp_path / "out"
    write_jsonl(shards / "a.jsonl", [*records(3), "{broken", *records(2)])
    skipped = probe(shards, out, "--on-error", "skip")
    assert skipped.exit_code == 0 and "1 skipped" in skipped.output
    strict = probe(shards, out)
    assert strict.exit_code == 2 and "a.jsonl:4: invalid JSON" in strict.output
    assert side_meta(out)["on_error"] == "skip"  # the old side file is left as it was


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any attempt to load model weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    for auto in (transformers.AutoModel, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(auto, "from_pretrained", refuse)


@pytest.fixture(scope="module")
def scored() -> tuple[Path, Path]:
    return scored_small_corpus()  # module scope: probed before the guard is in place


def test_reselecting_at_a_new_budget_never_loads_the_model(tmp_path, scored, no_model_loads):
    shards, scores = scored
    for budget in ("10%", "55%", "3k"):
        out = tmp_path / budget.replace("%", "pct")
        for recipe in ("rosetta-default", "rosetta-sample", "rosetta-diverse"):
            result = CliRunner().invoke(
                main,
                ["filter", str(shards), "--scores", str(scores), "--out", str(out / recipe)]
                + ["--recipe", recipe, "--budget", budget],
            )
            assert result.exit_code == 0, result.output
            assert (out / recipe / "manifest.json").is_file()


def test_the_model_guard_does_catch_a_probe(tmp_path, no_model_loads):
    """The guard above proves something only if a real probe trips it."""
    write_jsonl(tmp_path / "in" / "a.jsonl", records(3))
    result = probe(tmp_path / "in", tmp_path / "out")
    assert isinstance(result.exception, AssertionError) and "a model was loaded" in str(
        result.exception
    )
