"""The global token-weighted cut: budget accuracy, determinism, caps, and the sketch path."""

import numpy as np
import pytest

from filters.rows import Rows
from filters.rule import Rule
from filters.scoring import draws
from filters.select import REASONS, rank_order, select, sketch_cut
from probes import sidefile


def _corpus(n: int, seed: int = 0, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    key = rng.normal(size=n)
    if decimals is not None:
        key = np.round(key, decimals)  # many exact ties
    tie = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    tokens = rng.integers(20, 2000, size=n)
    return key, tie, tokens


@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.9])
def test_kept_tokens_within_half_percent_and_at_most_one_document_over(fraction):
    key, tie, tokens = _corpus(50_000)
    budget = int(tokens.sum() * fraction)
    chosen = select(key, tie, tokens, budget)
    assert abs(chosen.kept_tokens - budget) <= 0.005 * budget
    assert chosen.kept_tokens <= budget + tokens.max()
    assert chosen.kept_tokens == int(tokens[chosen.keep].sum())


def test_the_cut_lands_on_the_prefix_nearest_the_budget():
    """Over or under: the kept set is the prefix of the key order whose tokens are nearest the
    budget (the order recomputed here by plain sorting)."""
    key, tie, tokens = _corpus(2_000, seed=3)
    order = sorted(range(len(key)), key=lambda i: (key[i], int(tie[i])), reverse=True)
    prefix = np.concatenate([[0], np.cumsum(tokens[order])])
    over = 0
    for budget in np.random.default_rng(4).integers(1, int(tokens.sum()), 200).tolist():
        chosen = select(key, tie, tokens, budget)
        assert abs(chosen.kept_tokens - budget) == np.abs(prefix - budget).min()
        assert chosen.keep[order[: int(chosen.keep.sum())]].all()
        over += chosen.kept_tokens > budget
    assert 0 < over < 200  # both sides occur: past the budget only when that is nearer


def test_topk_keeps_the_highest_keys_and_one_threshold_separates_kept():
    key, tie, tokens = _corpus(5_000, decimals=1)
    chosen = select(key, tie, tokens, int(tokens.sum() * 0.25))
    cut = chosen.cuts[(0, 0)]
    assert (cut.keeps(key, tie) == chosen.keep).all()
    assert key[chosen.keep].min() >= key[~chosen.keep].max()


def test_budget_larger_than_corpus_keeps_everything_and_says_so():
    key, tie, tokens = _corpus(100)
    chosen = select(key, tie, tokens, int(tokens.sum()) * 2)
    assert chosen.keep.all() and not chosen.budget_reached


@pytest.mark.parametrize("decimals", [None, 0, 2])
def test_sketch_path_finds_the_exact_cut(decimals):
    key, tie, tokens = _corpus(20_000, seed=3, decimals=decimals)
    for fraction in (0.05, 0.5, 0.97):
        budget = int(tokens.sum() * fraction)
        exact = select(key, tie, tokens, budget)

        def chunks():
            return (
                (key[i : i + 3000], tie[i : i + 3000], tokens[i : i + 3000])
                for i in range(0, len(key), 3000)
            )

        sketched = sketch_cut(chunks, budget, exact_limit=200)
        assert sketched.cut == exact.cuts[(0, 0)]
        assert sketched.kept_tokens == exact.kept_tokens


def test_source_caps_hold_and_each_cell_stays_a_prefix():
    key, tie, tokens = _corpus(4_000, seed=1)
    source = (np.arange(4_000) % 3).astype(np.int32)
    budget = int(tokens.sum() * 0.4)
    cap = int(budget * 0.2)
    chosen = select(key, tie, tokens, budget, source=source, source_caps={0: cap})
    assert tokens[chosen.keep & (source == 0)].sum() <= cap
    assert abs(chosen.kept_tokens - budget) <= tokens.max()
    for (s, _), cut in chosen.cuts.items():
        cell = source == s
        assert (cut.keeps(key[cell], tie[cell]) == chosen.keep[cell]).all()
    assert {REASONS[r] for r in chosen.reason[~chosen.keep]} == {"budget", "source_cap"}


def _keys(score: np.ndarray, ids: list[str], method: str, mode: str, temperature: float, seed: int):
    """Selection keys and ties of rows with these scores (side-file `score`), by the rule."""
    n = len(ids)
    rows = Rows(
        shard=np.zeros(n, np.int32),
        row=np.arange(n),
        tie=sidefile.id_hashes(ids),
        tokens=np.full(n, 100),
        ok=np.ones(n, bool),
        neurons=np.zeros((n, 0), np.float32),
        probe_score=score,
    )
    rule = Rule(method, mode, temperature, seed, None, 0, 0, None)
    return rule.evaluate(rows)[2], rows.tie


def test_gumbel_sampling_is_seeded_and_prefers_high_scores():
    ids = [f"doc-{i}" for i in range(20_000)]
    score = np.linspace(-2, 2, len(ids))
    tokens = np.full(len(ids), 100)
    picks = []
    for seed in (0, 0, 1):
        key, tie = _keys(score, ids, "probe", "sample", 1.0, seed)
        picks.append(select(key, tie, tokens, 100 * 2_000).keep)
    assert (picks[0] == picks[1]).all() and not (picks[0] == picks[2]).all()
    top, bottom = picks[0][-5_000:].mean(), picks[0][:5_000].mean()
    assert top > 3 * bottom > 0  # soft: low scores still get some documents
    key, tie = _keys(score, ids, "probe", "sample", 1e-5, 0)
    hot = select(key, tie, tokens, 200_000)
    assert hot.keep[-2_000:].all()  # near-zero temperature is top-k


def test_random_keys_are_uniform_and_ignore_scores():
    ids = [str(i) for i in range(50_000)]
    keys, tie = _keys(np.arange(50_000.0), ids, "random", "sample", 1.0, 7)
    assert 0 < keys.min() and keys.max() < 1 and abs(keys.mean() - 0.5) < 0.01
    assert abs(np.corrcoef(keys, np.arange(50_000.0))[0, 1]) < 0.02
    other_seed = draws(tie, 8)  # another seed: independent draws
    assert abs(np.corrcoef(keys, other_seed)[0, 1]) < 0.02 and abs(other_seed.mean() - 0.5) < 0.01


def test_rank_order_is_by_key_then_tie_descending():
    key = np.array([1.0, 2.0, 2.0, 0.5])
    tie = np.array([5, 1, 9, 3], dtype=np.uint64)
    assert rank_order(key, tie).tolist() == [2, 1, 0, 3]
