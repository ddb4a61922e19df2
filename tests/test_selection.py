"""`curate filter` keeps the right documents: checked against an independent recomputation.

Every expectation here comes from tests/independent.py (pyarrow + numpy from the README's
definitions), never from `filters/`, and every check reads the shards the command wrote.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from independent import Corpus, kept_mask, read_rows, read_side_files, zscore_keys
from small_corpus import scored_small_corpus
from transformers import AutoTokenizer

from curate.cli import main
from probes.models import resolve_model_path

MIN_TOKENS = 16  # base.toml's select.min_tokens


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    _, scores = scored_small_corpus()
    return read_side_files(scores)


def run_filter(out: Path, *args: str) -> dict:
    shards, scores = scored_small_corpus()
    result = CliRunner().invoke(
        main, ["filter", str(shards), "--scores", str(scores), "--out", str(out), *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "manifest.json").read_text())


def write_recipe(folder: Path, body: str, include: str = "rosetta-default") -> str:
    path = folder / "recipe.toml"
    path.write_text(f'version = 1\ninclude = "{include}"\n{body}\n', encoding="utf-8")
    return str(path)


def eligible(corpus: Corpus, max_tokens: int = 0, min_tokens: int = MIN_TOKENS) -> np.ndarray:
    ok = corpus.usable & (corpus.tokens >= min_tokens)
    return ok & (corpus.tokens <= max_tokens) if max_tokens else ok


def assert_top_by_key(keys: np.ndarray, keep: np.ndarray, pool: np.ndarray) -> None:
    """Every kept document outranks every dropped document of `pool`."""
    assert keep.any() and (pool & ~keep).any(), "a cut that keeps all or nothing proves nothing"
    assert not (keep & ~pool).any(), "a document outside the eligible pool was kept"
    assert keys[keep].min() >= keys[pool & ~keep].max()  # equal keys: duplicate texts


def assert_budget(manifest: dict, corpus: Corpus, keep: np.ndarray) -> None:
    """Kept tokens, recounted from the written shards, are within one document of the budget."""
    kept = int(corpus.tokens[keep].sum())
    assert manifest["kept_tokens"] == kept and manifest["kept_docs"] == int(keep.sum())
    assert kept <= manifest["budget_tokens"] + corpus.tokens[keep].max()


@pytest.mark.parametrize("budget", ["15%", "40%", "75%"])
def test_topk_keeps_the_documents_with_the_highest_zscored_weighted_sum(tmp_path, corpus, budget):
    manifest = run_filter(tmp_path / "o", "--budget", budget)
    keep = kept_mask(corpus, tmp_path / "o")
    keys = zscore_keys(corpus)
    assert_top_by_key(keys, keep, eligible(corpus))
    assert_budget(manifest, corpus, keep)
    input_tokens = int(corpus.tokens[corpus.usable].sum())
    assert manifest["input_tokens"] == input_tokens
    assert manifest["budget_tokens"] == round(input_tokens * float(budget[:-1]) / 100)
    # the next document in key order would have landed further from the budget
    order = np.argsort(-np.where(eligible(corpus) & ~keep, keys, -np.inf))
    nxt = corpus.tokens[order[0]]
    budget_tokens = manifest["budget_tokens"]
    assert abs(manifest["kept_tokens"] + nxt - budget_tokens) >= abs(
        manifest["kept_tokens"] - budget_tokens
    )


def test_recipe_weights_override_the_neuron_sets_weights(tmp_path, corpus):
    first, second, third = corpus.columns[:3]
    weights = {first: 3.0, second: -2.0, third: 0.0}
    table = ", ".join(f"{k} = {v}" for k, v in weights.items())
    recipe = write_recipe(tmp_path, f"[score]\nweights = {{ {table} }}")
    run_filter(tmp_path / "o", "--recipe", recipe, "--budget", "35%")
    keep = kept_mask(corpus, tmp_path / "o")
    assert_top_by_key(zscore_keys(corpus, weights), keep, eligible(corpus))
    default = zscore_keys(corpus)
    assert not keep[np.argsort(-np.nan_to_num(default, nan=-np.inf))[: keep.sum()]].all()


def test_threshold_mode_keeps_exactly_the_documents_at_or_above_it(tmp_path, corpus):
    keys = zscore_keys(corpus)
    threshold = float(np.nanquantile(keys[eligible(corpus)], 0.6))
    recipe = write_recipe(tmp_path, f'[select]\nmode = "threshold"\nthreshold = {threshold}')
    manifest = run_filter(tmp_path / "all", "--recipe", recipe, "--budget", "100%")
    keep = kept_mask(corpus, tmp_path / "all")
    np.testing.assert_array_equal(keep, eligible(corpus) & (keys >= threshold))
    assert manifest["dropped"]["below_threshold"] == int((eligible(corpus) & ~keep).sum())
    run_filter(tmp_path / "some", "--recipe", recipe, "--budget", "10%")  # the budget binds
    some = kept_mask(corpus, tmp_path / "some")
    assert_top_by_key(keys, some, eligible(corpus) & (keys >= threshold))


def test_length_limits_hold_and_the_rest_is_still_top_by_key(tmp_path, corpus):
    lo, hi = (int(np.percentile(corpus.tokens[corpus.usable], q)) for q in (15, 60))
    recipe = write_recipe(tmp_path, f"[select]\nmin_tokens = {lo}\nmax_tokens = {hi}")
    manifest = run_filter(tmp_path / "o", "--recipe", recipe, "--budget", "25%")
    keep = kept_mask(corpus, tmp_path / "o")
    assert corpus.tokens[keep].max() <= hi and corpus.tokens[keep].min() >= lo
    assert_top_by_key(zscore_keys(corpus), keep, eligible(corpus, hi, lo))
    usable = corpus.usable
    assert manifest["dropped"]["too_long"] == int((usable & (corpus.tokens > hi)).sum()) > 0
    assert manifest["dropped"]["too_short"] == int((usable & (corpus.tokens < lo)).sum()) > 0


def test_budget_counted_in_another_tokenizer(tmp_path, corpus):
    shards, _ = scored_small_corpus()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m"))
    manifest = run_filter(tmp_path / "o", "--budget", "30%", "--tokenizer", "smollm2-135m")
    texts = {}
    for path in sorted(shards.rglob("part-*")):
        texts.update({r["id"]: r["text"] for r in read_rows(path)})
    recount = np.array(
        [len(tokenizer(texts[i], add_special_tokens=False)["input_ids"]) for i in corpus.ids]
    )
    assert not np.array_equal(recount, corpus.tokens)  # the two tokenizers do differ
    keep = kept_mask(corpus, tmp_path / "o")
    assert manifest["tokenizer"] == "smollm2-135m"
    assert manifest["input_tokens"] == int(recount[corpus.usable].sum())
    assert manifest["budget_tokens"] == round(0.3 * manifest["input_tokens"])
    assert manifest["kept_tokens"] == int(recount[keep].sum())
    assert manifest["kept_tokens"] <= manifest["budget_tokens"] + recount[keep].max()
    pool = corpus.usable & (recount >= MIN_TOKENS)
    assert_top_by_key(zscore_keys(corpus), keep, pool)


@pytest.mark.parametrize(
    ("recipe", "changes"), [("rosetta-default", False), ("rosetta-sample", True), ("random", True)]
)
def test_seed_changes_sampled_and_random_selections_but_not_topk(tmp_path, corpus, recipe, changes):
    kept = []
    for seed in ("0", "1", "0"):
        out = tmp_path / f"seed{seed}-{len(kept)}"
        run_filter(out, "--recipe", recipe, "--budget", "40%", "--seed", seed)
        kept.append(kept_mask(corpus, out))
    assert np.array_equal(kept[0], kept[2]), "the same seed must give the same selection"
    assert (not np.array_equal(kept[0], kept[1])) == changes


def test_sampling_prefers_high_keys_without_being_topk(tmp_path, corpus):
    run_filter(tmp_path / "o", "--recipe", "rosetta-sample", "--budget", "40%")
    keep = kept_mask(corpus, tmp_path / "o")
    keys, pool = zscore_keys(corpus), eligible(corpus)
    assert keys[keep].mean() > keys[pool & ~keep].mean()
    assert keys[keep].min() < keys[pool & ~keep].max()  # not a hard cut


def test_random_selection_ignores_scores(tmp_path, corpus):
    run_filter(tmp_path / "o", "--recipe", "random", "--budget", "40%")
    keep = kept_mask(corpus, tmp_path / "o")
    keys, pool = zscore_keys(corpus), eligible(corpus)
    assert keys[keep].min() < np.nanmedian(keys[pool]) < keys[keep].max()


def test_source_quota_caps_the_sources_tokens(tmp_path, corpus):
    recipe = write_recipe(tmp_path, "[quotas]\ncaps = { topics = 0.2 }")
    manifest = run_filter(tmp_path / "o", "--recipe", recipe, "--budget", "50%")
    keep = kept_mask(corpus, tmp_path / "o")
    budget = manifest["budget_tokens"]
    topics = corpus.source == "topics"
    assert corpus.tokens[keep & topics].sum() <= np.floor(0.2 * budget)
    free = run_filter(tmp_path / "free", "--budget", "50%")  # the cap binds
    free_keep = kept_mask(corpus, tmp_path / "free")
    assert corpus.tokens[free_keep & topics].sum() > 0.2 * free["budget_tokens"]
    keys = zscore_keys(corpus)  # within each source the cut is still top by key
    for source in ("topics", "modules"):
        mine = corpus.source == source
        assert_top_by_key(keys, keep & mine, eligible(corpus) & mine)
    assert manifest["tokens_by_source"]["topics"]["kept"] == corpus.tokens[keep & topics].sum()


def test_cluster_cap_limits_every_cluster(tmp_path, corpus):
    recipe = write_recipe(tmp_path, "[diversity]\nclusters = 4\ncap = 0.3", "rosetta-diverse")
    manifest = run_filter(tmp_path / "o", "--recipe", recipe, "--budget", "50%")
    keep = kept_mask(corpus, tmp_path / "o")
    cut = manifest["cut"]
    centroids = np.array(cut["centroids"])
    mean, std = np.array(cut["zparams"]["mean"]), np.array(cut["zparams"]["std"])
    z = (corpus.neurons - mean) / std
    cluster = ((z[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    cap = np.floor(0.3 * manifest["budget_tokens"])
    per_cluster = [int(corpus.tokens[keep & (cluster == c)].sum()) for c in range(len(centroids))]
    assert max(per_cluster) <= cap, per_cluster
    assert manifest["dropped"].get("cluster_cap", 0) > 0  # the cap binds
    keys = zscore_keys(corpus)
    for c in range(len(centroids)):  # within a cluster the cut is still top by key
        mine = (cluster == c) & eligible(corpus)
        if (keep & mine).any() and (mine & ~keep).any():
            assert keys[keep & mine].min() >= keys[mine & ~keep].max()


def test_manifest_figures_equal_a_recount_of_the_written_shards(tmp_path, corpus):
    out, dropped_dir = tmp_path / "o", tmp_path / "dropped"
    manifest = run_filter(out, "--budget", "40%", "--dropped", str(dropped_dir))
    keep, dropped = kept_mask(corpus, out), kept_mask(corpus, dropped_dir)
    assert not (keep & dropped).any() and np.array_equal(keep | dropped, corpus.usable)
    usable = corpus.usable
    assert manifest["input_docs"] == int(usable.sum())
    assert manifest["input_tokens"] == int(corpus.tokens[usable].sum())
    assert manifest["skipped_rows"] == int((~usable).sum())
    assert manifest["kept_docs"] == int(keep.sum())
    assert manifest["kept_tokens"] == int(corpus.tokens[keep].sum())
    assert sum(manifest["dropped"].values()) == int(dropped.sum())
    too_short = int((usable & (corpus.tokens < MIN_TOKENS)).sum())
    assert manifest["dropped"].get("too_short", 0) == too_short
    budget = manifest["budget_tokens"]
    assert manifest["budget_error"] == pytest.approx((manifest["kept_tokens"] - budget) / budget)
    for source, figures in manifest["tokens_by_source"].items():
        mine = corpus.source == source
        assert figures == {
            "input": int(corpus.tokens[usable & mine].sum()),
            "kept": int(corpus.tokens[keep & mine].sum()),
        }
    assert set(manifest["tokens_by_source"]) == set(corpus.source.tolist())
    assert manifest["shards"] == len(set(corpus.shard.tolist()))


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("recipe", ["rosetta-default", "rosetta-diverse", "random"])
def test_reruns_write_byte_identical_output(tmp_path, recipe):
    args = ("--recipe", recipe, "--budget", "35%")
    run_filter(tmp_path / "a", *args)
    run_filter(tmp_path / "b", *args)
    first = tree(tmp_path / "a")
    assert {"manifest.json", "report.png"} <= set(first)
    assert first == tree(tmp_path / "b")
    run_filter(tmp_path / "a", *args)  # a rerun into a finished folder changes nothing
    assert tree(tmp_path / "a") == first


def test_probe_method_ranks_by_the_side_files_own_score(tmp_path, corpus):
    _, scores = scored_small_corpus()
    import pyarrow.parquet as pq

    side = {
        i: s
        for path in sorted(scores.rglob("*.scores.parquet"))
        for i, s in zip(
            pq.read_table(path)["id"].to_pylist(),
            pq.read_table(path)["score"].to_pylist(),
            strict=True,
        )
    }
    recipe = write_recipe(tmp_path, '[score]\nmethod = "probe"')
    run_filter(tmp_path / "o", "--recipe", recipe, "--budget", "30%")
    keep = kept_mask(corpus, tmp_path / "o")
    keys = np.array([np.nan if side[i] is None else side[i] for i in corpus.ids.tolist()])
    assert_top_by_key(keys, keep, eligible(corpus))
