"""Rosetta discovery on real models: a permuted copy, a random-init copy, MiniLM x MPNet."""

import copy
import json
import math
from dataclasses import replace
from itertools import islice

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from transformers import AutoTokenizer

from curate.discover_cli import discover as discover_cmd
from curate.discover_cli import neurons as neurons_cmd
from probes.capture import ActivationCapture
from probes.discovery import (
    Corpus,
    Moments,
    ScreenSettings,
    Settings,
    discover,
    null_rate,
    to_artifact,
)
from probes.discovery.align import align, encode
from probes.discovery.match import mutual_top_k
from probes.discovery.run import full_capture, narrowed
from probes.discovery.screen import PairSums, screen, sparse_mutual_best
from probes.discovery.selectivity import NeuronStats, class_selectivity
from probes.discovery.stream import ShiftedMoments, shift_
from probes.engine import ProbeEngine
from probes.errors import CurateError
from probes.models import load_model, resolve_model_path
from probes.neuronset import load_neuron_set
from probes.shards import list_shards, read_documents
from tests.conftest import SHARED_DATA, write_jsonl

LAYERS = (0, 1)  # the permutation tests need no deeper layers; capture stops after layer 1
WIDTH = 1536


def _tokenizer(alias: str):
    return AutoTokenizer.from_pretrained(resolve_model_path(alias), local_files_only=True)


def test_identical_tokenizers_align_position_by_position():
    texts = ["Hello wörld, don't   stop!", "Café 東京 naïve."]
    per_model = [encode(_tokenizer(a), texts, 512) for a in ("minilm-l6", "mpnet-base")]
    widths = [len(per_model[0][0].doc.ids), len(per_model[1][0].doc.ids)]
    alignment = align(per_model, widths)
    assert alignment.identical
    assert alignment.rows[0].tolist() == alignment.rows[1].tolist()
    assert 0 not in alignment.rows[0].tolist(), "special tokens are excluded"


def test_byte_level_tokens_are_mean_pooled_within_shared_spans():
    text = "Hello wörld, don't   stop! 東京"
    bert, bpe = (
        encode(_tokenizer("minilm-l6"), [text], 512),
        encode(_tokenizer("smollm2-135m"), [text], 512),
    )
    widths = [len(bert[0].doc.ids), len(bpe[0].doc.ids)]
    alignment = align([bert, bpe], widths)
    assert not alignment.identical
    spans = [[s for s in doc.spans] for doc in (bert[0], bpe[0])]
    units = []
    for m in range(2):
        covered: dict[int, list] = {}
        for row, unit in zip(alignment.rows[m].tolist(), alignment.units[m].tolist(), strict=True):
            covered.setdefault(unit, []).append(spans[m][row])
        units.append({u: (min(s[0] for s in v), max(s[1] for s in v)) for u, v in covered.items()})
    assert units[0] == units[1], "each unit covers the same text in both models"
    texts = sorted((text[s:e] for s, e in units[0].values()), key=text.index)
    assert texts[:3] == ["Hello", "wörld", ","] and {"don", "'t"} <= set(texts)
    assert "   " not in texts
    # Pooling averages the tokens of a unit: "wörld" is 1 BERT token but 3 byte-level tokens.
    # Two "layers" of one and two neurons: pooled neuron-major, [3 neurons, units].
    flat = torch.arange(widths[1], dtype=torch.float32).unsqueeze(1)
    layers = [flat.reshape(1, -1, 1), torch.cat([-flat, 2 * flat], 1).reshape(1, -1, 2)]
    pooled = alignment.pool(1, layers)
    assert pooled.shape == (3, alignment.n_units)
    word = next(u for u, (s, e) in units[1].items() if text[s:e] == "wörld")
    rows = alignment.rows[1][alignment.units[1] == word]
    assert len(rows) > 1 and pooled[0, word] == flat[rows, 0].mean()
    assert pooled[1, word] == -pooled[0, word] and pooled[2, word] == 2 * pooled[0, word]


def test_moments_merge_uneven_batches_exactly():
    rng = np.random.default_rng(0)
    data = rng.normal(5.0, 0.01, size=(1000, 7)).astype(np.float32)
    moments = Moments(7)
    for lo, hi in ((0, 1), (1, 300), (300, 999), (999, 1000)):
        moments.update(torch.from_numpy(data[lo:hi].T.copy()))
    np.testing.assert_allclose(moments.mean, data.astype(np.float64).mean(0), rtol=1e-7)
    np.testing.assert_allclose(moments.var, data.astype(np.float64).var(0), rtol=1e-4)


def test_a_narrowed_capture_reads_the_same_neurons_as_the_full_one(minilm):
    """Replication reads only the candidates and their buddies, as deep as they lie."""
    full = full_capture(minilm, None)
    width = full.loaded.model.config.intermediate_size
    columns = torch.tensor([3 * width + 7, 2, 3 * width + 7, width + 1, width - 1])
    narrow, rows = narrowed(full, width, columns)
    assert narrow.requests == {0: [2, width - 1], 1: [1], 3: [7]}
    batch = minilm.tokenizer(["a short text", "another one, longer"], padding=True)
    ids, mask = torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"])
    whole = torch.cat(list(full.capture(input_ids=ids, attention_mask=mask).values()), -1)
    part = torch.cat(list(narrow.capture(input_ids=ids, attention_mask=mask).values()), -1)
    torch.testing.assert_close(part[..., rows], whole[..., columns])


def test_mutual_top_k_keeps_only_mutual_pairs():
    corr = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.1, 0.0, 0.3]])
    one = mutual_top_k(iter([(slice(0, 3), corr)]), 3, k=1)
    assert one.buddy.tolist() == [0, -1, 2]  # anchor 1's best (partner 0) prefers anchor 0
    assert math.isnan(one.corr[1]) and one.best.tolist() == pytest.approx([0.9, 0.8, 0.3])
    two = mutual_top_k(iter([(slice(0, 2), corr[:, :2]), (slice(2, 3), corr[:, 2:])]), 3, k=2)
    assert two.buddy.tolist() == [0, 0, 2]


def test_pair_sums_give_exact_pearson_correlations_in_one_shifted_pass():
    rng = np.random.default_rng(1)
    a = rng.normal(3.0, 0.5, size=(2000, 5)).astype(np.float32)
    b = (0.7 * a[:, [0, 0, 1, 4]] + rng.normal(0, 0.4, size=(2000, 4))).astype(np.float32)
    shifts = torch.from_numpy(a[:100].mean(0)), torch.from_numpy(b[:100].mean(0))
    sums = PairSums(torch.tensor([0, 0, 1, 4, 2]), torch.tensor([0, 1, 2, 3, 3]), *shifts)
    moments = [ShiftedMoments(shift) for shift in shifts]
    for lo, hi in ((0, 7), (7, 1500), (1500, 2000)):
        batch = [
            shift_(torch.from_numpy(x[lo:hi].T.copy()), s)
            for x, s in zip((a, b), shifts, strict=True)
        ]
        sums.add(*batch)
        for moment, x in zip(moments, batch, strict=True):
            moment.update(x)
    np.testing.assert_allclose(moments[1].mean.numpy(), b.mean(0), rtol=1e-6)
    np.testing.assert_allclose(moments[1].var.numpy(), b.var(0), rtol=1e-5)
    got = sums.correlations(moments[0].mean, moments[0].var, moments[1].mean, moments[1].var)
    pairs_ab = zip(sums.anchor.tolist(), sums.partner.tolist(), strict=True)
    want = [np.corrcoef(a[:, i], b[:, j])[0, 1] for i, j in pairs_ab]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


def test_sparse_mutual_best_equals_dense_matching_when_every_pair_is_given():
    corr = torch.from_numpy(np.random.default_rng(2).uniform(-1, 1, size=(30, 40)).astype("f4"))
    dense = mutual_top_k(iter([(slice(0, 40), corr)]), 30, k=1)
    anchor, partner = torch.arange(30).repeat_interleave(40), torch.arange(40).repeat(30)
    sparse = sparse_mutual_best(anchor, partner, corr.reshape(-1), 30, 40)
    assert torch.equal(sparse.buddy, dense.buddy) and (dense.buddy >= 0).sum() > 3
    assert torch.allclose(sparse.best, dense.best)
    has = dense.buddy >= 0
    assert torch.equal(sparse.corr[has], dense.corr[has])


def test_screening_keeps_the_strong_partners_and_each_partners_best_anchor():
    rng = np.random.default_rng(3)
    anchor = rng.normal(size=(4000, 20)).astype(np.float32)
    partner = rng.normal(size=(4000, 2 * 16)).astype(np.float32)
    partner[:, 21] += 2 * anchor[:, 5]  # layer 1, neuron 5: anchor 5's buddy
    partner[:, 3] += 1 * anchor[:, 9]  # layer 0, neuron 3: anchor 9's buddy
    found = screen(
        torch.from_numpy(anchor.T.copy()),
        torch.from_numpy(partner.T.copy()),
        16,
        ScreenSettings(sample=4000, layers=1, per_layer=2),
        torch.Generator().manual_seed(0),
    )
    pairs = set(zip(found.anchor.tolist(), found.partner.tolist(), strict=True))
    assert (5, 21) in pairs and (9, 3) in pairs
    assert len(pairs) <= 20 * 1 * 2 + 32 * 2  # per anchor: 2 in its best layer; per partner: 2
    # the null's candidates: the same bound, columns of the rotated layers that exist
    assert len(found.null_anchor) <= 20 * 1 * 2 + 32 * 2
    assert found.null_column.max() < found.rotated.n_columns <= 32
    centred_t = shift_(torch.from_numpy(partner.T.copy()), torch.from_numpy(partner.mean(0)))
    assert found.rotated(centred_t).shape == (found.rotated.n_columns, 4000)


def test_neuron_stats_moments_match_direct_central_moments():
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(4)
    x = rng.gamma(2.0, 1.5, size=(3000, 4)).astype(np.float32)
    x[:, 2] = 1.0  # a constant neuron
    x[:, 3] -= 3.0  # fires (is positive) on part of the tokens only
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, size=3000)]
    stats = NeuronStats(torch.tensor([2.5, 4.0, 1.0, 0.0]))  # shifted away from the means
    for lo, hi in ((0, 1000), (1000, 3000)):
        stats.update(shift_(torch.from_numpy(x[lo:hi].T.copy()), stats.shift), list(labels[lo:hi]))
    out = stats.result()
    np.testing.assert_allclose(out["skew"][:2], scipy_stats.skew(x[:, :2]), rtol=1e-4)
    np.testing.assert_allclose(out["kurtosis"][:2], scipy_stats.kurtosis(x[:, :2]), rtol=1e-4)
    assert out["skew"][2] == 0 and out["kurtosis"][2] == -3
    np.testing.assert_allclose(stats.mean.numpy(), x.mean(0, dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(stats.var.numpy()[:2], x[:, :2].var(0, dtype=np.float64), rtol=1e-5)
    np.testing.assert_allclose(out["frequency"].numpy(), (x > 0).mean(0), rtol=1e-6)
    positive = np.maximum(x, 0)
    want = np.stack([positive[labels == c].mean(0) for c in stats.classes])
    np.testing.assert_allclose(out["class_means"].numpy(), want, rtol=1e-5)


def test_class_selectivity_index():
    means = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.5, 0.0]])
    assert class_selectivity(means).tolist() == [1.0, 0.0, 0.0]


def _permuted_copy(loaded, seed: int):
    """A function-preserving copy: each layer's MLP neurons reordered by a known permutation."""
    model = copy.deepcopy(loaded.model)
    generator = torch.Generator().manual_seed(seed)
    perms = []
    with torch.no_grad():
        for layer in model.encoder.layer:
            perm = torch.randperm(WIDTH, generator=generator)
            layer.intermediate.dense.weight.copy_(layer.intermediate.dense.weight[perm])
            layer.intermediate.dense.bias.copy_(layer.intermediate.dense.bias[perm])
            layer.output.dense.weight.copy_(layer.output.dense.weight[:, perm])
            perms.append(perm)
    return replace(loaded, name="minilm-permuted", model=model, content_hash="permuted"), perms


def _noisy_copy(loaded, seed: int = 5):
    """A copy whose first MLP layers have noise added to their weights: imperfect buddies."""
    noisy = copy.deepcopy(loaded.model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in noisy.encoder.layer[: max(LAYERS) + 1]:
            weight = layer.intermediate.dense.weight
            weight.add_(0.8 * weight.std() * torch.randn(weight.shape, generator=generator))
    return replace(loaded, name=f"minilm-noisy-{seed}", model=noisy, content_hash=f"noisy{seed}")


def test_screened_discovery_finds_what_exact_all_pairs_finds(minilm, demo_shards):
    """A noisy copy makes buddies imperfect and unequal; screening on the first 1,024 tokens
    then verifying on all 4,000 must give exact all-pairs' Rosetta set and buddies."""
    partner = _noisy_copy(minilm)
    corpus = Corpus(demo_shards, minilm, max_tokens=4000, heldout=0.25)
    base = Settings(layers=LAYERS, min_corr=0.3)
    exact = discover([minilm, partner], corpus, replace(base, screen=None))
    screened = discover([minilm, partner], corpus, replace(base, screen=ScreenSettings(1024)))
    assert screened.matching["screen_tokens"] < screened.units["discovery"]
    assert 50 < len(exact.rosetta) < 0.9 * 2 * WIDTH  # a real selection, not all or nothing
    assert set(screened.rosetta.tolist()) == set(exact.rosetta.tolist())
    r = exact.rosetta
    mine, theirs = screened.partners[0], exact.partners[0]
    assert torch.equal(mine.matches.buddy[r], theirs.matches.buddy[r])
    torch.testing.assert_close(mine.matches.corr[r], theirs.matches.corr[r], atol=1e-4, rtol=0)


def test_the_null_is_verified_on_its_token_budget_and_the_pairs_on_every_token(minilm, demo_shards):
    partner = _noisy_copy(minilm)
    corpus = Corpus(demo_shards, minilm, max_tokens=4000, heldout=0.25)
    base = Settings(layers=LAYERS, min_corr=0.3, tokens_per_batch=512)
    runs = [
        discover([minilm, partner], corpus, replace(base, screen=ScreenSettings(1024, **kw)))
        for kw in ({"null_tokens": None}, {"null_tokens": 1500})
    ]
    full, capped = (run.matching["null_tokens"] for run in runs)
    assert full == runs[0].units["discovery"] and 1500 <= capped < 1500 + 600
    real = [run.partners[0].matches for run in runs]
    assert torch.equal(real[0].buddy, real[1].buddy)
    torch.testing.assert_close(real[0].corr, real[1].corr, rtol=0, atol=0, equal_nan=True)
    null = [run.partners[0].null.best for run in runs]
    assert not torch.equal(null[0], null[1])  # a null measured on fewer tokens
    assert (null[0] - null[1]).abs().median() < 0.05  # ... of the same rotated columns


def test_three_models_count_each_pair_and_the_intersection_and_a_null_per_partner(
    minilm, demo_shards
):
    """Rosetta means a buddy in every partner: with two differently noisy partners, the set is
    what passes with both, each pair is counted on its own, and the null rate is measured
    against a random-init copy of each partner."""
    partners = [_noisy_copy(minilm, seed) for seed in (5, 6)]
    corpus = Corpus(demo_shards, minilm, max_tokens=3000, heldout=0.25)
    found = discover([minilm, *partners], corpus, Settings(layers=LAYERS, min_corr=0.3))
    per_pair = [p.passes_floor & p.passes_null & p.passes_replication for p in found.partners]
    counts = [int(m.sum()) for m in per_pair]
    both = set((per_pair[0] & per_pair[1]).nonzero()[:, 0].tolist())
    assert set(found.rosetta.tolist()) == both
    assert 50 < len(both) < min(counts)  # each partner keeps some neurons the other loses
    meta = to_artifact(found, corpus, "test", None).meta
    assert meta["counts"]["rosetta_per_partner"] == counts
    null = null_rate(found, corpus)
    assert [run["partner"] for run in null["partners"]] == [
        f"{p.model.name} (random init, seed 0)" for p in found.partners
    ]
    for run in null["partners"]:  # a lenient floor (0.3) on 2k tokens: a few chance buddies
        assert run["rosetta"] <= 0.03 * len(found.rosetta), null
        assert run["rate"] == run["rosetta"] / len(found.rosetta)
    assert null["rosetta"] == max(run["rosetta"] for run in null["partners"])


def test_floor_for_null_rate_lets_through_at_most_the_rate():
    from probes.discovery.controls import floor_for_null_rate
    from probes.discovery.match import Matches

    nan = math.nan
    first = torch.tensor([0.9, 0.8, 0.7, 0.6, nan, 0.5, 0.4, 0.3, 0.2, 0.1])
    second = torch.tensor([0.2, 0.85, 0.75, 0.65, 0.9, 0.55, 0.45, 0.35, 0.25, 0.15])
    nulls = [
        Matches(buddy=torch.zeros(10, dtype=torch.long), corr=c, best=c) for c in (first, second)
    ]
    # a neuron passes with its weaker partner: 0.2, 0.8, 0.7, 0.6, -inf, 0.5, 0.4, 0.3, 0.2, 0.1
    floor, rate = floor_for_null_rate(nulls, 0.1)
    assert (
        floor == pytest.approx(0.7, abs=1e-6) and rate == 0.1
    )  # 0.8 passes; 0.7 would be a second (> 10 %)
    for allowed in (0.2, 0.29):
        floor, rate = floor_for_null_rate(nulls, allowed)
        assert floor == pytest.approx(0.6, abs=1e-6) and rate == 0.2
    assert floor_for_null_rate(nulls, 0.0)[1] == 0.0


def test_max_null_rate_sets_the_floor_on_a_calibration_split_only(minilm, demo_shards):
    partner = _noisy_copy(minilm)
    corpus = Corpus(demo_shards, minilm, max_tokens=5000, heldout=0.2, calibration=0.3)
    found = discover([minilm, partner], corpus, Settings(layers=LAYERS, max_null_rate=0.01))
    assert found.calibration["null_rate"] <= 0.01 and 0 < found.floor < 1
    assert corpus.tokens["calibration"] > 1000 and found.units["calibration"] > 1000
    p = found.partners[0]
    assert torch.equal(p.passes_floor, p.matches.corr >= found.floor)
    # the calibration split changes the floor and nothing else: the same floor given directly
    fixed = discover([minilm, partner], corpus, Settings(layers=LAYERS, min_corr=found.floor))
    assert torch.equal(fixed.rosetta, found.rosetta) and len(found.rosetta) > 0


@pytest.fixture(scope="module")
def permuted(minilm):
    return _permuted_copy(minilm, seed=1)


@pytest.fixture(scope="module")
def permuted_run(minilm, permuted, demo_shards):
    corpus = Corpus(demo_shards, minilm, max_tokens=3000, heldout=0.25)
    return discover([minilm, permuted[0]], corpus, Settings(layers=LAYERS)), corpus


def test_permuted_copy_recovers_the_permutation_for_every_firing_neuron(permuted, permuted_run):
    found, _ = permuted_run
    _, perms = permuted
    partner = found.partners[0]
    # anchor neuron i sits at position argsort(perm)[i] of the permuted layer
    expected = torch.cat(
        [torch.argsort(perms[layer]) + k * WIDTH for k, layer in enumerate(LAYERS)]
    )
    firing = found.anchor_std > 1e-6
    assert firing.sum() > 0.99 * len(firing)
    assert torch.equal(partner.matches.buddy[firing], expected[firing])
    assert partner.matches.corr[firing].min() > 0.999
    assert set(found.rosetta.tolist()) == set(firing.nonzero().squeeze(1).tolist())
    assert found.units["heldout"] > 0 and partner.heldout_corr[firing].min() > 0.99


def test_random_init_copy_finds_almost_nothing(permuted_run):
    found, corpus = permuted_run
    null = null_rate(found, corpus)
    assert null["rosetta"] <= 0.01 * len(found.rosetta), null


def test_cli_discover_show_top_atlas_and_probe_refusal(
    minilm, permuted, demo_shards, demo_texts, tmp_path
):
    partner_dir = tmp_path / "permuted-model"
    permuted[0].model.save_pretrained(partner_dir)
    minilm.tokenizer.save_pretrained(partner_dir)
    out = tmp_path / "set"
    runner = CliRunner()
    args = ["--model", "minilm-l6", "--model", str(partner_dir), "--data", str(demo_shards)]
    args += ["--out", str(out), "--max-tokens", "2000", "--layers", "0,1", "--no-null-rate"]
    args += ["--dtype", "fp32"]
    result = runner.invoke(discover_cmd, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Rosetta neurons:" in result.output and "matching: screen, then verify" in result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["models"][0]["content_hash"] == minilm.content_hash
    assert meta["models"][1]["hook_names"] == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    assert meta["command"].startswith("curate ") and len(meta["corpus"]["fingerprint"]) == 64
    assert meta["neurons"] > 2500
    assert meta["matching"]["method"] == "screen, then verify"
    assert meta["matching"]["verified_pairs"][0] < 0.01 * 3072 * 3072  # a sliver of all pairs
    tsv = (out / "neurons.tsv").read_text().splitlines()
    assert len(tsv) == meta["neurons"] + 1 and tsv[0].startswith("rank\thook")
    again = runner.invoke(discover_cmd, args)
    assert isinstance(again.exception, CurateError) and "--force" in str(again.exception)
    bad = runner.invoke(discover_cmd, [*args, "--max-null-rate", "2", "--force"])
    assert isinstance(bad.exception, CurateError) and "--max-null-rate" in str(bad.exception)
    exact = runner.invoke(discover_cmd, [*args, "--exact", "--force"], catch_exceptions=False)
    assert exact.exit_code == 0, exact.output
    exact_meta = json.loads((out / "meta.json").read_text())
    assert exact_meta["matching"]["method"] == "exact all pairs"
    assert exact_meta["neurons"] == meta["neurons"]

    shown = runner.invoke(neurons_cmd, ["show", str(out), "--json", "--limit", "3"])
    assert shown.exit_code == 0 and len(json.loads(shown.output)["neurons"]) == 3

    target = write_jsonl(tmp_path / "target" / "t.jsonl", [{"text": t} for t in demo_texts[:40]])
    background = write_jsonl(
        tmp_path / "background" / "b.jsonl", [{"text": t} for t in demo_texts[400:440]]
    )
    top_dir = tmp_path / "top"
    top_args = ["top", str(out), "--target", str(target), "--background", str(background)]
    top_args += ["-k", "5", "--out", str(top_dir), "--max-tokens", "1500", "--dtype", "fp32"]
    topped = runner.invoke(neurons_cmd, top_args, catch_exceptions=False)
    assert topped.exit_code == 0, topped.output
    top_meta = json.loads((top_dir / "meta.json").read_text())
    assert top_meta["neurons"] == 5 and top_meta["top"]["d"] == sorted(top_meta["top"]["d"])[::-1]

    page = tmp_path / "atlas.html"
    atlas_args = ["atlas", str(top_dir), "--data", str(target), "--out", str(page)]
    atlas_args += ["--max-tokens", "1500", "--snippets", "2", "--dtype", "fp32"]
    drawn = runner.invoke(neurons_cmd, atlas_args, catch_exceptions=False)
    assert drawn.exit_code == 0, drawn.output
    text = page.read_text()
    assert text.count('<section class="card"') == 5 and "<mark" in text

    neuron_set = load_neuron_set(str(top_dir))
    assert len(neuron_set.neurons) == 5 and neuron_set.model_hash == minilm.content_hash
    ProbeEngine(minilm, neuron_set)  # the anchor model is accepted
    with pytest.raises(CurateError, match="was made for minilm-l6"):
        ProbeEngine(permuted[0], neuron_set)


FRESH_PER_SHARD = 2  # documents 10 and 11 of each shard: discovery reads the first few
FRESH_TOKENS = 64  # from the start of each: ~2,900 tokens in all


def _fresh_texts(corpus_dir, seen: set[str]) -> list[str]:
    """Documents from past the start of every shard, where the discovery stream reads."""
    texts = []
    for shard in list_shards(corpus_dir):
        docs = list(islice(read_documents(shard, root=corpus_dir), 10, 10 + FRESH_PER_SHARD))
        assert len(docs) == FRESH_PER_SHARD
        assert not {d.id for d in docs} & seen, "the check must use documents discovery never read"
        texts += [d.text for d in docs]
    return texts


def _token_activations(
    loaded, requests: dict[int, list[int]], texts: list[str]
) -> tuple[list[str], dict[tuple[int, int], np.ndarray]]:
    """The content tokens of `texts` (each cut to FRESH_TOKENS) and, per (layer, index), the
    neuron's float64 activation at each of them."""
    source = ActivationCapture(loaded, requests)
    tokens: list[str] = []
    columns: dict[tuple[int, int], list[np.ndarray]] = {}
    for lo in range(0, len(texts), 16):
        tok = loaded.tokenizer(
            texts[lo : lo + 16],
            truncation=True,
            max_length=FRESH_TOKENS,
            padding=True,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        content = (tok.attention_mask == 1) & (tok.special_tokens_mask == 0)
        tokens += loaded.tokenizer.convert_ids_to_tokens(tok.input_ids[content].tolist())
        layers = source.capture(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
        for layer, indices in source.requests.items():
            acts = layers[layer][content].double().numpy()
            for j, index in enumerate(indices):
                columns.setdefault((layer, index), []).append(acts[:, j])
    return tokens, {key: np.concatenate(parts) for key, parts in columns.items()}


def _requests(neurons: list[tuple[int, int]]) -> dict[int, list[int]]:
    layers: dict[int, set[int]] = {}
    for layer, index in neurons:
        layers.setdefault(layer, set()).add(index)
    return {layer: sorted(indices) for layer, indices in layers.items()}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / np.sqrt((a @ a) * (b @ b)))


@pytest.mark.slow
def test_minilm_and_mpnet_share_a_significant_rosetta_set(minilm):
    corpus_dir = SHARED_DATA / "corpus"
    if not corpus_dir.is_dir():
        pytest.skip(reason=f"needs the development corpus at {corpus_dir} (../shared/data)")
    mpnet = load_model("mpnet-base")
    corpus = Corpus(corpus_dir, minilm, max_tokens=6000, heldout=0.25, doc_tokens=128)
    found = discover([minilm, mpnet], corpus, Settings())
    partner = found.partners[0]
    r = found.rosetta.tolist()
    assert len(r) >= 20, f"only {len(r)} Rosetta neurons"
    assert len(r) < 0.5 * len(found.mean_corr), "significance control must reject most neurons"

    # Independently of discovery's alignment and statistics: on documents it never read, each
    # Rosetta neuron and its buddy fire together; random anchor/partner pairs do not.
    texts = _fresh_texts(corpus_dir, {doc.id for doc in corpus})
    rng = np.random.default_rng(0)
    anchors = [found.neuron(i) for i in r]
    buddies = [partner.neuron(int(partner.matches.buddy[i])) for i in r]
    random_anchors = [(int(rng.integers(6)), int(rng.integers(1536))) for _ in range(200)]
    random_partners = [(int(rng.integers(12)), int(rng.integers(3072))) for _ in range(200)]
    tokens_a, a = _token_activations(minilm, _requests(anchors + random_anchors), texts)
    tokens_b, b = _token_activations(mpnet, _requests(buddies + random_partners), texts)
    # MiniLM and MPNet share WordPiece tokens, so the two models' tokens pair up by position
    assert tokens_a == tokens_b and len(tokens_a) > 2500
    rosetta = np.array([_pearson(a[x], b[y]) for x, y in zip(anchors, buddies, strict=True)])
    chance = np.array(
        [_pearson(a[x], b[y]) for x, y in zip(random_anchors, random_partners, strict=True)]
    )
    assert np.median(rosetta) > 0.5, np.percentile(rosetta, [10, 50, 90])
    assert np.median(np.abs(chance)) < 0.1, np.percentile(np.abs(chance), [10, 50, 90])
    assert (rosetta > np.quantile(np.abs(chance), 0.99)).mean() > 0.8
