"""The scaling study: the power-law fit and its bootstrap, the capacity-utility model, and a tiny
zoo trained and studied end to end."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from curate.cli import main
from curate.scaling.capacity import dedicated, fit_capacity
from curate.scaling.fit import SizeCounts, fit_power_law, ratio_of_means
from curate.scaling.zoo import load_zoo_config
from probes.errors import CurateError

SIZES = (1024, 2048, 4096, 8192)


def synthetic(rng, alpha: float, c: float = 2.0, seeds: int = 3, sigma: float = 0.1):
    """Counts drawn as the bootstrap assumes: a seed-level factor, then Binomial over neurons."""
    out = []
    for n in SIZES:
        p = c * n**alpha / n
        draws = [
            rng.binomial(n, min(1.0, p * np.exp(sigma * rng.standard_normal())))
            for _ in range(seeds)
        ]
        out.append(SizeCounts(n, tuple(int(d) for d in draws)))
    return out


@pytest.mark.parametrize("alpha", [0.4, 0.6, 0.9])
def test_fit_recovers_a_known_exponent(alpha):
    fit = fit_power_law(synthetic(np.random.default_rng(7), alpha), replicates=1000)
    assert abs(fit.alpha - alpha) < 0.1
    assert fit.alpha_ci[0] < fit.alpha < fit.alpha_ci[1]
    assert fit.alpha_ci[0] <= alpha <= fit.alpha_ci[1]
    assert fit.sizes == len(SIZES) and fit.replicates == 1000
    lo, hi = fit.band(np.array(SIZES))
    assert np.all(lo < fit.predict(SIZES)) and np.all(fit.predict(SIZES) < hi)


def test_bootstrap_interval_covers_the_true_exponent():
    rng = np.random.default_rng(3)
    covered = [
        lo <= 0.6 <= hi
        for i in range(120)
        for lo, hi in [fit_power_law(synthetic(rng, 0.6), replicates=500, seed=i).alpha_ci]
    ]
    # nominal 95%; three seeds per size make a percentile bootstrap a little narrow (~0.90)
    assert 0.85 <= np.mean(covered) <= 0.995


def test_fit_needs_two_sizes_with_a_count():
    with pytest.raises(CurateError, match="fewer than two sizes"):
        fit_power_law([SizeCounts(100, (0, 0)), SizeCounts(200, (3, 4))])
    with pytest.raises(CurateError, match="two sizes or more"):
        fit_power_law([SizeCounts(100, (3, 4))])


def test_a_size_with_no_rosetta_neuron_drops_out_of_the_fit():
    sizes = [SizeCounts(100, (0, 0)), *synthetic(np.random.default_rng(1), 0.6)]
    fit = fit_power_law(sizes, replicates=500)
    assert fit.sizes == len(SIZES) and abs(fit.alpha - 0.6) < 0.15


def test_capacity_model_recovers_the_exponent_of_counts_it_generated():
    n = np.array(SIZES, float)
    counts = dedicated(n, a=0.7, b=0.8, eps0=0.01, n0=n.min())
    model = fit_capacity(n, counts)
    truth = np.polyfit(np.log(n), np.log(counts), 1)[0]  # the generated curve's mean slope
    assert truth < 0.9  # the generated law is sub-linear at these sizes
    assert abs(model.local_alpha - truth) < 0.05
    assert model.rms_log_error < 0.02
    assert model.asymptotic_alpha == pytest.approx(1 - model.b * (1 / model.a - 1))
    # polarization in the model: the other neurons carry more features each as width grows
    per_neuron = model.features_per_other_neuron(n)
    assert np.all(np.diff(per_neuron) > 0)


@pytest.mark.parametrize("alpha", [0.6, 1.0])
def test_capacity_model_follows_a_pure_power_law(alpha):
    n = np.array(SIZES, float)
    model = fit_capacity(n, 0.05 * n**alpha)
    assert abs(model.local_alpha - alpha) < 0.05


def test_selectivity_gain_interval():
    rng = np.random.default_rng(0)
    first, last = rng.normal(0.2, 0.05, 400), rng.normal(0.6, 0.05, 400)
    gain, lo, hi = ratio_of_means(last, first)
    assert gain == pytest.approx(3.0, rel=0.05) and lo < gain < hi and hi - lo < 0.3
    assert ratio_of_means(np.array([np.nan]), first) is None


def test_zoo_config_typo_names_the_key(tmp_path):
    bad = tmp_path / "zoo.toml"
    bad.write_text('include = "tiny"\nversion = 1\n[zoo]\nwidth = [64]\n')
    with pytest.raises(CurateError, match=r"unknown key 'width'; did you mean 'widths'"):
        load_zoo_config(str(bad))
    bad.write_text('include = "tiny"\nversion = 1\n[zoo]\nseeds = 1\n')
    with pytest.raises(CurateError, match=r"zoo.seeds must be >= 2"):
        load_zoo_config(str(bad))


@pytest.mark.slow
def test_tiny_zoo_and_study_end_to_end(tmp_path, demo_shards):
    from probes.models import load_model

    runner = CliRunner()
    zoo = tmp_path / "zoo"
    args = ["zoo", "train", "--config", "tiny", "--data", str(demo_shards), "--out", str(zoo)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    members = sorted(p.parent.name for p in zoo.glob("*/zoo.json"))
    assert members == ["mlp128-seed0", "mlp128-seed1", "mlp64-seed0", "mlp64-seed1"]
    record = json.loads((zoo / "mlp64-seed1" / "zoo.json").read_text())
    assert record["mlp_neurons"] == 64 * 2 and record["train"]["tokens"] >= 19_000
    assert np.isfinite(record["heldout_loss"]) and record["config"]["zoo"]["widths"] == [64, 128]
    loaded = load_model(str(zoo / "mlp64-seed1"))  # a plain model folder for every command
    assert loaded.model_type == "llama" and len(loaded.tokenizer) == 512
    # seeds differ, widths differ
    a = load_model(str(zoo / "mlp64-seed0")).model.layers[0].mlp.up_proj.weight
    assert not np.allclose(a.detach().numpy(), loaded.model.layers[0].mlp.up_proj.weight.detach())

    weights = zoo / "mlp64-seed0" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert runner.invoke(main, args).exit_code == 0  # a rerun trains nothing
    assert weights.stat().st_mtime_ns == before
    other = tmp_path / "other.toml"
    other.write_text('include = "tiny"\nversion = 1\n[zoo]\ntokens = 30_000\n')
    refused = runner.invoke(main, [*args[:3], str(other), *args[4:]])
    assert refused.exit_code == 2 and "another zoo config (zoo.tokens: 20000" in refused.output

    out = tmp_path / "study"
    study = [
        "scaling",
        "--zoo",
        str(zoo),
        "--data",
        str(demo_shards),
        "--out",
        str(out),
        "--max-tokens",
        "20000",
        "--max-null-rate",
        "0.01",
        "--replicates",
        "300",
    ]
    result = runner.invoke(main, study)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "scaling.json").read_text())
    rows = summary["sizes"]
    assert [r["width"] for r in rows] == [64, 128]
    assert [r["n_total"] for r in rows] == [128, 256]
    for r in rows:
        assert len(r["rosetta_counts"]) == 2 and all(
            isinstance(c, int) for c in r["rosetta_counts"]
        )
        assert r["fraction"] == pytest.approx(np.mean(r["rosetta_counts"]) / r["n_total"])
        assert len(r["random_init_rosetta"]) == 2
    assert summary["fit"] is not None or summary["no_fit"]
    text = (out / "scaling.md").read_text()
    assert "## Where we stand against the paper" in text and "| 64 | 128 |" in text
    for png in ("scaling-fit.png", "selectivity.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sets = sorted(p.name for p in (out / "sets").iterdir())
    assert sets == [f"{m}-anchor" for m in members]
    meta = out / "sets" / "mlp64-seed0-anchor" / "meta.json"
    before = meta.stat().st_mtime_ns
    assert runner.invoke(main, study).exit_code == 0  # the sets are reused, not rediscovered
    assert meta.stat().st_mtime_ns == before
