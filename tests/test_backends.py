"""Activation backends: settings, the ONNX Runtime export and cache, and the contract that every
shipped variant ranks documents as the torch fp32 backend does."""

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from curate.cli import main
from curate.demo_shards import build_demo_shards
from probes import cpu
from probes.backends import (
    backend_settings,
    load_for,
    onnx_export,
    open_backend,
    rank_agreement,
    tokens_per_batch,
)
from probes.engine import ImageProbeEngine, ProbeEngine
from probes.errors import CurateError
from probes.neuronset import load_neuron_set
from probes.shards import list_shards, read_documents
from probes.sidefile import path_for, read_meta

DEFAULT_NEURONS = str(files("probes") / "data" / "default-neurons")


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path_factory, monkeypatch) -> Path:
    """One export cache for this module's tests, never the user's (models stay where they are)."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setattr(onnx_export, "cache_dir", lambda: cache)
    return cache


@pytest.fixture(scope="module")
def torch_scores(minilm, demo_texts) -> np.ndarray:
    engine = ProbeEngine(minilm, load_neuron_set(DEFAULT_NEURONS))
    return engine.probe(demo_texts[:150]).score


def test_settings_resolve_auto_by_cpu_and_refuse_what_a_backend_cannot_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    assert backend_settings("torch", "auto") == {"name": "torch", "dtype": "fp32"}
    assert backend_settings("onnx", "auto")["weight_bits"] == 7  # no VNNI: 7-bit weights
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512_bf16", "avx512_vnni"}))
    assert backend_settings("torch", "auto") == {"name": "torch", "dtype": "bf16"}
    assert backend_settings("onnx", "auto") == {"name": "onnx", "dtype": "int8", "weight_bits": 8}
    assert backend_settings("onnx", "auto", "image") == {"name": "onnx", "dtype": "fp32"}
    with pytest.raises(CurateError, match="backend 'onnx' runs dtype auto, fp32, int8, not 'bf16'"):
        backend_settings("onnx", "bf16")
    with pytest.raises(CurateError, match="backend 'tensorrt' is not one of onnx, torch"):
        backend_settings("tensorrt")
    with pytest.raises(CurateError, match="int8 for text models only"):
        backend_settings("onnx", "int8", "image")


def test_onnx_capture_matches_torch_at_every_shape(minilm):
    requests = {1: [7, 300], 3: None, 4: [5, 1200, 1535]}
    settings = backend_settings("onnx", "fp32")
    onnx_backend = open_backend(settings, minilm, requests)
    torch_backend = open_backend(backend_settings("torch", "fp32"), minilm, requests)
    for texts in (["tea"], ["a longer sentence about rivers and tea", "tea", "rivers " * 40]):
        tok = minilm.tokenizer(texts, padding=True, return_tensors="pt")
        inputs = {"input_ids": tok.input_ids, "attention_mask": tok.attention_mask}
        got, want = onnx_backend.capture(**inputs), torch_backend.capture(**inputs)
        assert list(got) == [1, 3, 4] and got[3].shape[-1] == 1536 and got[4].shape[-1] == 3
        real = tok.attention_mask.bool()
        for layer in requests:
            torch.testing.assert_close(got[layer][real], want[layer][real], atol=2e-4, rtol=1e-3)


def test_export_is_cached_per_model_neurons_and_settings(minilm, onnx_cache):
    settings = backend_settings("onnx", "fp32")
    open_backend(settings, minilm, {2: [3, 4]})
    exports = sorted((onnx_cache / "onnx").glob("*.onnx"))
    before = [p.stat().st_mtime_ns for p in exports]
    open_backend(settings, minilm, {2: [3, 4]})  # the same: reused, not exported again
    assert [p.stat().st_mtime_ns for p in exports] == before
    assert sorted((onnx_cache / "onnx").glob("*.onnx")) == exports
    open_backend(settings, minilm, {2: [3, 5]})  # other neurons: another export
    assert len(list((onnx_cache / "onnx").glob("*.onnx"))) == len(exports) + 1


def test_a_failed_export_is_one_clear_error_and_leaves_nothing(minilm, onnx_cache, monkeypatch):
    def broken(*args):
        raise RuntimeError("Exporting the operator 'aten::frobnicate' is not supported")

    monkeypatch.setattr(onnx_export, "_convert", broken)
    folder = onnx_cache / "onnx"
    before = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
    with pytest.raises(CurateError, match="ONNX export failed .*frobnicate.*torch backend"):
        open_backend(backend_settings("onnx", "fp32"), minilm, {0: [1]})
    assert sorted(folder.glob("*.onnx")) == before, "a failed export must not be cached"
    assert not list(folder.glob(".export-*")), "nor leave its temporary folder"


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [
        {"name": "onnx", "dtype": "fp32"},
        {"name": "onnx", "dtype": "int8", "weight_bits": 8},  # CPUs with VNNI
        {"name": "onnx", "dtype": "int8", "weight_bits": 7},  # CPUs without
    ],
    ids=["fp32", "int8", "int8-7bit"],
)
def test_onnx_variant_ranks_documents_like_torch_fp32(settings, demo_texts, torch_scores):
    """The contract for every shipped variant: Spearman >= 0.99 and the same top-10 documents
    as torch fp32, with the shipped neuron set on real text (the demo shards)."""
    engine = ProbeEngine(
        load_for(settings, "minilm-l6"), load_neuron_set(DEFAULT_NEURONS), backend=settings
    )
    scores = engine.probe(demo_texts[:150]).score
    corr, shared = rank_agreement(torch_scores, scores)
    assert corr >= 0.99 and shared == 10, (corr, shared)
    if settings["dtype"] == "fp32":
        np.testing.assert_allclose(scores, torch_scores, atol=1e-4)


@pytest.mark.slow
def test_probe_cli_records_the_backend_and_rescores_side_files_of_another(tmp_path):
    shards = build_demo_shards(tmp_path / "shards", docs_per_shard=8)
    out = tmp_path / "scores"
    base = ["probe", str(shards), "--neurons", DEFAULT_NEURONS, "--out", str(out)]
    runner = CliRunner()
    first = runner.invoke(main, [*base, "--backend", "torch", "--dtype", "fp32"])
    assert first.exit_code == 0, first.output
    side = sorted(out.rglob("*.scores.parquet"))
    assert read_meta(side[0])["backend"] == {"name": "torch", "dtype": "fp32"}
    second = runner.invoke(main, [*base, "--backend", "onnx", "--dtype", "fp32"])
    assert second.exit_code == 0, second.output
    assert f"shards: {len(side)} scored, 0 already done" in second.output
    assert read_meta(side[0])["backend"] == {"name": "onnx", "dtype": "fp32"}
    third = runner.invoke(main, [*base, "--backend", "onnx", "--dtype", "fp32"])
    assert f"shards: 0 scored, {len(side)} already done" in third.output


@pytest.mark.parametrize(
    ("probe", "field"),
    [('backend = "onnxx"', "probe.backend"), ('backend = "onnx"\ndtype = "bf16"', "probe.dtype")],
)
def test_recipe_with_a_bad_backend_or_dtype_names_the_field(probe, field, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f"version = 1\n[probe]\n{probe}\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["recipes", "validate", str(bad)])
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert field in line, line


def test_onnx_runs_an_image_model_like_torch(tmp_path):
    from image_corpus import photo

    settings = backend_settings("onnx", "auto", "image")
    lite0 = load_for(settings, "efficientnet-lite0")
    neurons = load_neuron_set(str(files("probes") / "data" / "default-vision-neurons"))
    images = [photo(seed, size=(64, 80)) for seed in range(3)]
    want = ImageProbeEngine(lite0, neurons).probe(images)
    got = ImageProbeEngine(lite0, neurons, backend=settings).probe(images)
    np.testing.assert_allclose(got.neurons, want.neurons, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_datatrove_scorer_and_filter_run_the_backend_they_are_given(tmp_path):
    from datatrove.data import Document

    from curate.datatrove_steps import RosettaScorer
    from filters.recipe import load_recipe

    shards = build_demo_shards(tmp_path / "shards", docs_per_shard=4)
    out, scores = tmp_path / "kept", tmp_path / "scores"
    args = ["filter", str(shards), "--out", str(out), "--scores", str(scores), "--budget", "50%"]
    result = CliRunner().invoke(main, [*args, "--backend", "onnx", "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == {"name": "onnx", "dtype": "fp32"}
    assert manifest["recipe"]["probe"]["backend"] == "onnx"

    scorer = RosettaScorer(load_recipe("rosetta-default"), backend="onnx", dtype="fp32")
    assert scorer.settings == {"name": "onnx", "dtype": "fp32"}
    shard = list_shards(shards)[0]
    rows = [d for d in read_documents(shard) if d.error is None]
    docs = [Document(text=d.text, id=d.id, metadata={"file_path": "a"}) for d in rows]
    scored = {d.id: d.metadata["rosetta_score"] for d in scorer.run(docs)}
    table = pq.read_table(path_for(scores, shards, shard)).to_pylist()
    assert scored == pytest.approx({r["id"]: r["score"] for r in table if r["id"] in scored})
    assert len(scored) == len(rows) > 0


def test_the_default_batch_is_smaller_for_torch_fp32_text_and_a_given_one_wins():
    """fp32 intermediates of 8,192-token batches spill out of cache (issue 13, RESULTS.md)."""
    assert tokens_per_batch({"name": "torch", "dtype": "fp32"}, "text") == 2048
    assert tokens_per_batch({"name": "torch", "dtype": "bf16"}, "text") == 8192
    assert tokens_per_batch({"name": "torch", "dtype": "fp32"}, "image") == 8192
    assert tokens_per_batch({"name": "onnx", "dtype": "int8", "weight_bits": 8}, "text") == 8192


def test_an_engine_takes_the_backend_default_unless_told(minilm):
    neurons = load_neuron_set("[[1, 7], [3, 300]]")
    fp32 = {"name": "torch", "dtype": "fp32"}
    assert ProbeEngine(minilm, neurons, backend=fp32).tokens_per_batch == 2048
    assert ProbeEngine(minilm, neurons, tokens_per_batch=600, backend=fp32).tokens_per_batch == 600
