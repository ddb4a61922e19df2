"""Aggregations: exact values on hand-made activations, and length behaviour."""

import math

import pytest
import torch

from probes.aggregate import AGGREGATIONS, aggregate

ZERO = torch.zeros(1)


def _one_doc(values: list[float], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    acts = torch.tensor(values + [99.0] * pad).view(1, -1, 1)  # padding holds a huge value
    content = torch.tensor([True] * len(values) + [False] * pad).view(1, -1)
    return acts, content


def test_padding_and_special_tokens_never_count():
    acts, content = _one_doc([1.0, 3.0, 2.0], pad=5)
    assert aggregate(acts, content, "max", ZERO).item() == 3.0
    assert aggregate(acts, content, "topk", ZERO, k=2).item() == 2.5
    assert aggregate(acts, content, "count_above", torch.tensor([1.5])).item() == 2
    assert aggregate(acts, content, "frac_above", torch.tensor([1.5])).item() == pytest.approx(
        2 / 3
    )


def test_topk_uses_all_tokens_of_a_short_document():
    acts, content = _one_doc([4.0, 2.0])
    assert aggregate(acts, content, "topk", ZERO, k=8).item() == 3.0


def test_topk_norm_takes_k_per_window_of_tokens():
    values = [float(v) for v in range(128)]  # two windows of 64 -> top 2*k tokens
    acts, content = _one_doc(values)
    got = aggregate(acts, content, "topk_norm", ZERO, k=4, window=64).item()
    assert got == pytest.approx(sum(range(120, 128)) / 8)


def test_max_norm_averages_window_maxima_weighted_by_length():
    acts, content = _one_doc([1.0] * 64 + [5.0] * 32, pad=3)
    got = aggregate(acts, content, "max_norm", ZERO, window=64).item()
    assert got == pytest.approx((1.0 * 64 + 5.0 * 32) / 96)


def test_length_normalised_variants_do_not_grow_with_length():
    """Same token distribution, 8x longer: max grows, the _norm variants stay put."""
    torch.manual_seed(0)
    short = torch.randn(200, 64, 1)
    long = torch.randn(200, 512, 1)
    full = lambda x: torch.ones(x.shape[:2], dtype=torch.bool)  # noqa: E731
    for how, grows in [("max", True), ("max_norm", False), ("topk_norm", False)]:
        a = aggregate(short, full(short), how, ZERO).mean().item()
        b = aggregate(long, full(long), how, ZERO).mean().item()
        assert (b - a > 0.5) is grows, (how, a, b)
        if not grows:
            assert math.isclose(a, b, rel_tol=0.1), (how, a, b)


def test_each_neuron_is_reduced_separately_and_unknown_names_fail():
    acts = torch.tensor([[[1.0, -1.0], [2.0, -3.0]]])
    content = torch.ones(1, 2, dtype=torch.bool)
    assert aggregate(acts, content, "max", torch.zeros(2)).tolist() == [[2.0, -1.0]]
    assert set(AGGREGATIONS) >= {"max", "topk", "frac_above"}
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(acts, content, "median", torch.zeros(2))
