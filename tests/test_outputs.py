"""Every command refuses an output it cannot create in one line naming the path, and a refused
run leaves no empty output folders behind."""

import pytest
from click.testing import CliRunner
from conftest import write_jsonl

from curate.cli import main

NEURONS = "[[1, 5]]"


@pytest.fixture
def blocked(tmp_path):
    """A file standing where an output folder would go."""
    (tmp_path / "file").write_text("not a folder")
    return tmp_path / "file" / "out"


@pytest.fixture
def shards(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "a", "text": "a short document"}])
    return tmp_path / "in"


COMMANDS = {
    "probe": lambda s, o: ["probe", str(s), "--neurons", NEURONS, "--out", str(o)],
    "filter --out": lambda s, o: ["filter", str(s), "--out", str(o), "--recipe", "random"],
    "filter --scores": lambda s, o: [
        "filter",
        str(s),
        "--out",
        str(s.parent / "k"),
        "--scores",
        str(o),
    ],
    "filter --dropped": lambda s, o: [
        "filter",
        str(s),
        "--out",
        str(s.parent / "k"),
        "--dropped",
        str(o),
    ],
    "discover": lambda s, o: [
        "discover",
        "--model",
        "minilm-l6",
        "--model",
        "minilm-l6",
        "--data",
        str(s),
        "--out",
        str(o),
    ],
    "neurons top": lambda s, o: [
        "neurons",
        "top",
        "probes/data/default-neurons",
        "--target",
        str(s),
        "--background",
        str(s),
        "--out",
        str(o),
    ],
    "neurons atlas": lambda s, o: [
        "neurons",
        "atlas",
        "probes/data/default-neurons",
        "--data",
        str(s),
        "--out",
        str(o / "atlas.html"),
    ],
    "bench": lambda s, o: [
        "bench",
        "--pool",
        str(s),
        "--tasks",
        str(s),
        "--out",
        str(o),
        "--config",
        "tiny",
    ],
    "demo": lambda s, o: ["demo", "--out", str(o)],
    "explain": lambda s, o: [
        "explain",
        str(s),
        "--id",
        "a",
        "--neurons",
        NEURONS,
        "--html",
        str(o / "page.html"),
    ],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_output_under_a_file_is_refused_in_one_line(command, shards, blocked):
    result = CliRunner().invoke(main, COMMANDS[command](shards, blocked))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(blocked.parent) in lines[0] and "is a file" in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_refused_run_leaves_no_empty_output_folders(tmp_path):
    write_jsonl(tmp_path / "in" / "bad.jsonl", ["{broken"])
    out = tmp_path / "deep" / "er" / "out"
    result = CliRunner().invoke(
        main, ["probe", str(tmp_path / "in"), "--neurons", NEURONS, "--out", str(out)]
    )
    assert result.exit_code == 2 and "bad.jsonl:1: invalid JSON" in result.output
    assert not (tmp_path / "deep").exists()
