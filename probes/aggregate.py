"""Per-document aggregation of token activations, with length-normalised variants.

The plain max (and a fixed top-k mean) grows with document length: a long document gets more
draws. The `_norm` variants are length-invariant in expectation: `max_norm` averages the maxima
of fixed windows, `topk_norm` averages the top `k` tokens per window's worth of tokens, and
`frac_above` is the share of tokens where a neuron fires (its raw form is `count_above`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads on first use: recipes and the CLI read the names without it
    import torch

AGGREGATIONS = ("max", "max_norm", "topk", "topk_norm", "count_above", "frac_above")
DEFAULT_AGGREGATION = "max_norm"
TOP_K = 8
WINDOW = 64


def aggregate(
    acts: torch.Tensor,
    content: torch.Tensor,
    how: str,
    thresholds: torch.Tensor,
    k: int = TOP_K,
    window: int = WINDOW,
) -> torch.Tensor:
    """Reduce `acts` [batch, tokens, neurons] over the content tokens to [batch, neurons].

    `content` [batch, tokens] marks the tokens that count (no padding, no special tokens);
    every document must have at least one.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")
    import torch

    acts = acts.float()
    mask = content.unsqueeze(-1)
    n = content.sum(dim=1, keepdim=True).float()  # [batch, 1]
    if how in ("count_above", "frac_above"):
        count = ((acts > thresholds) & mask).sum(dim=1).float()
        return count if how == "count_above" else count / n
    ranked = acts.masked_fill(~mask, -math.inf)
    if how == "max":
        return ranked.amax(dim=1)
    if how == "max_norm":
        return _window_max_mean(ranked, content, window)
    ranked = ranked.sort(dim=1, descending=True).values
    per_doc_k = n.clamp(max=k) if how == "topk" else torch.ceil(n * k / window).clamp(max=n)
    take = torch.arange(ranked.shape[1]).view(1, -1, 1) < per_doc_k.unsqueeze(1)
    return ranked.masked_fill(~take, 0.0).sum(dim=1) / per_doc_k


def _window_max_mean(ranked: torch.Tensor, content: torch.Tensor, window: int) -> torch.Tensor:
    """Mean of per-window maxima, each window weighted by its share of content tokens."""
    import torch

    batch, tokens, neurons = ranked.shape
    spill = -tokens % window
    ranked = torch.nn.functional.pad(ranked, (0, 0, 0, spill), value=-math.inf)
    content = torch.nn.functional.pad(content, (0, spill), value=False)
    maxima = ranked.view(batch, -1, window, neurons).amax(dim=2)
    weight = content.view(batch, -1, window).sum(dim=2, keepdim=True).float()
    maxima = torch.where(weight > 0, maxima, torch.zeros_like(maxima))
    return (maxima * weight).sum(dim=1) / weight.sum(dim=1)
