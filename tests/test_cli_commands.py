"""The user-facing commands through the real `curate` click group: demo, models, neurons show,
probe refusal, recipes validate, and the shipped default neuron set they all rely on."""

import csv
import json
import re
from importlib.resources import files
from pathlib import Path

import pytest
from click.testing import CliRunner

from curate.cli import main
from probes.models import ALIASES, load_model, weights_hash
from probes.neuronset import load_neuron_set
from probes.shards import list_shards, read_documents

DEFAULT_NEURONS = Path(str(files("probes") / "data" / "default-neurons"))
SELECTIONS = ("rosetta-default", "random")
DOCS_PER_SHARD = 20
ROW = re.compile(r"^\s*(\d+)\s+(L\d+N\d+)\s")  # a neuron row of the `neurons show` table


def curate(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def kept_files(folder: Path) -> dict[str, bytes]:
    """The kept shards of a filter output folder, by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in list_shards(folder)}


def documents(folder: Path) -> list:
    return [d for shard in list_shards(folder) for d in read_documents(shard, root=folder)]


# --- curate demo -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    result = curate("demo", "--out", out, "--docs-per-shard", DOCS_PER_SHARD)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_small_demo_cuts_both_selections_to_the_budget(small_demo):
    out, output = small_demo
    docs = documents(out / "shards")
    assert len(docs) == 4 * DOCS_PER_SHARD, "--docs-per-shard caps every shard"
    tokenizer = load_model("minilm-l6").tokenizer
    tokens = {
        d.id: len(tokenizer(d.text, add_special_tokens=False, verbose=False).input_ids)
        for d in docs
    }
    budget = 0.3 * sum(tokens.values())
    largest = max(tokens.values())
    kept_ids = {}
    for name in SELECTIONS:
        folder = out / name
        assert f"wrote {folder}" in output
        assert (folder / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        manifest = json.loads((folder / "manifest.json").read_text())
        kept = documents(folder)
        kept_ids[name] = {d.id for d in kept}
        assert len(kept_ids[name]) == len(kept) == manifest["kept_docs"]
        kept_tokens = sum(tokens[d.id] for d in kept)
        assert manifest["input_tokens"] == sum(tokens.values())
        assert manifest["kept_tokens"] == kept_tokens
        # within the budget plus at most one document, from either side
        assert budget - largest <= kept_tokens <= budget + largest, (name, kept_tokens, budget)
    rosetta, random = kept_ids["rosetta-default"], kept_ids["random"]
    assert rosetta != random
    assert len(rosetta ^ random) >= 0.3 * len(rosetta | random), "the selections barely differ"


def test_small_demo_ends_with_a_tiny_bench_report(small_demo):
    """The tiny bench configuration, end to end: every arm, every token count, every seed."""
    out, output = small_demo
    report = json.loads((out / "bench" / "report.json").read_text())
    arms = report["config"]["arms"]["names"]
    grid = {
        round(m * report["config"]["grid"]["budget"]) for m in report["config"]["grid"]["multiples"]
    }
    runs = {(r["arm"], r["tokens_requested"], r["seed"]) for r in report["runs"]}
    seeds = range(report["config"]["grid"]["seeds"])
    assert runs == {(a, t, s) for a in arms for t in grid for s in seeds}
    assert all(
        r["tokens"] >= r["tokens_requested"] * 0.5 and r["steps"] >= 1 for r in report["runs"]
    )
    assert set(report["summary"]) == set(arms) and "target" in report["sensitivity"]
    assert report["data"]["pool"]["contaminated"] > 0  # the task's validation documents
    text = (out / "bench" / "report.md").read_text()
    assert all(f"### {arm}" in text for arm in arms) and "sensitivity gate" in text
    assert (out / "bench" / "parity.png").read_bytes()[:4] == b"\x89PNG"
    assert "report.json, report.md, parity.png" in output


def test_small_demo_rerun_changes_nothing(small_demo):
    out, _ = small_demo
    before = {name: kept_files(out / name) for name in SELECTIONS}
    removed = sorted(before["random"])[0]
    (out / "random" / removed).unlink()  # as if the first run had been killed there
    result = curate("demo", "--out", out, "--docs-per-shard", DOCS_PER_SHARD)
    assert result.exit_code == 0, result.output
    assert "shards: 0 scored, 4 already done" in result.output, "a rerun must not probe again"
    for name in SELECTIONS:
        assert kept_files(out / name) == before[name], name


def test_demo_refuses_a_folder_built_with_another_size(small_demo):
    out, _ = small_demo
    result = curate("demo", "--out", out)
    assert result.exit_code == 2
    assert f"{DOCS_PER_SHARD} documents per shard, not all documents" in result.output
    assert curate("demo", "--out", out, "--docs-per-shard", 0).exit_code == 2


# --- curate models ---------------------------------------------------------------------------


def test_models_lists_every_alias_with_its_family():
    result = curate("models")
    assert result.exit_code == 0, result.output
    listed = {
        line.split()[0]: tuple(line.split()[1:3]) for line in result.output.splitlines() if line
    }
    lite = ("efficientnet-lite", "image")
    assert listed == {
        "minilm-l6": ("bert", "text"),
        "mpnet-base": ("mpnet", "text"),
        "smollm2-135m": ("llama", "text"),
        "efficientnet-lite0": lite,
        "efficientnet-lite1": lite,
        "efficientnet-lite2": lite,
    }
    assert set(listed) == set(ALIASES)


# --- curate neurons show ---------------------------------------------------------------------


def test_neurons_show_prints_provenance_and_one_row_per_neuron():
    meta = json.loads((DEFAULT_NEURONS / "meta.json").read_text())
    result = curate("neurons", "show", DEFAULT_NEURONS)
    assert result.exit_code == 0, result.output
    assert re.search(r"^\s*anchor\s+minilm-l6\b", result.output, re.M)
    assert re.search(r"^\s*partner\s+mpnet-base\b", result.output, re.M)
    rows = [m.groups() for line in result.output.splitlines() if (m := ROW.match(line))]
    assert len(rows) == meta["neurons"]
    loaded = load_neuron_set(str(DEFAULT_NEURONS)).neurons
    assert rows == [(str(i + 1), n.column) for i, n in enumerate(loaded)]

    limited = curate("neurons", "show", DEFAULT_NEURONS, "--limit", 5)
    assert limited.exit_code == 0, limited.output
    assert [line for line in limited.output.splitlines() if ROW.match(line)] == [
        line for line in result.output.splitlines() if ROW.match(line)
    ][:5]


# --- curate probe: a neuron set made for another model -----------------------------------------


def test_probe_refuses_a_neuron_set_made_for_another_model(tmp_path):
    shards = tmp_path / "shards" / "a.jsonl"
    shards.parent.mkdir()
    shards.write_text(json.dumps({"id": "a", "text": "Rivers carry silt to the sea."}) + "\n")
    out = tmp_path / "scores"
    result = curate(
        "probe", shards.parent, "--neurons", DEFAULT_NEURONS, "--model", "mpnet-base", "--out", out
    )
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "was made for minilm-l6" in lines[0] and "mpnet-base" in lines[0]
    assert not out.exists() or not any(out.rglob("*"))


# --- curate recipes validate ---------------------------------------------------------------


def test_recipes_validate_names_a_misspelt_key_and_its_fix(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\ninclude = "base"\n[select]\nbugdet = "1M"\n', encoding="utf-8")
    result = curate("recipes", "validate", bad)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "unknown key 'bugdet'; did you mean 'budget'?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- the shipped default neuron set ----------------------------------------------------------


def test_default_neuron_set_loads_and_agrees_with_its_meta_and_table():
    meta = json.loads((DEFAULT_NEURONS / "meta.json").read_text())
    neuron_set = load_neuron_set(str(DEFAULT_NEURONS))
    with open(DEFAULT_NEURONS / "neurons.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == meta["neurons"] == meta["counts"]["rosetta"] == len(neuron_set.neurons)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    for row, neuron in zip(rows, neuron_set.neurons, strict=True):
        assert (int(row["layer"]), int(row["index"])) == (neuron.layer, neuron.index)
        assert float(row["weight"]) == pytest.approx(neuron.weight, abs=5e-5)
    assert len({(n.layer, n.index) for n in neuron_set.neurons}) == len(neuron_set.neurons)
    null = meta["null_rate"]
    assert null["rate"] == pytest.approx(null["rosetta"] / meta["neurons"])
    # it is usable with the default model, as make demo and the bundled recipes need
    anchor = meta["models"][0]
    assert anchor["name"] == "minilm-l6" and anchor["role"] == "anchor"
    assert neuron_set.model_hash == anchor["content_hash"] == weights_hash("minilm-l6")


def test_probe_refuses_the_wrong_model_before_loading_it(tmp_path, monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("the wrong model was loaded before the refusal")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)
    shards = tmp_path / "shards" / "a.jsonl"
    shards.parent.mkdir()
    shards.write_text(json.dumps({"id": "a", "text": "Rivers carry silt to the sea."}) + "\n")
    result = curate(
        "probe",
        shards.parent,
        "--neurons",
        DEFAULT_NEURONS,
        "--model",
        "mpnet-base",
        "--out",
        tmp_path / "o",
    )
    assert result.exit_code == 2 and "was made for minilm-l6" in result.output
