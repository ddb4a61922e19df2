"""Pairing neurons across models: mutual top-k over the correlation blocks of each partner layer.

Kept apart from the statistics so that the real correlations and the rotated-basis null are paired
by the very same rule.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class Matches:
    buddy: torch.Tensor  # [anchor] partner neuron (flat index) or -1
    corr: torch.Tensor  # [anchor] correlation with the buddy (NaN without one)
    best: torch.Tensor  # [anchor] best correlation with any partner neuron


def mutual_top_k(blocks: Iterator[tuple[slice, torch.Tensor]], n_anchor: int, k: int) -> Matches:
    """Anchor i and partner j are buddies if each is in the other's top k (k=1: best buddies);
    an anchor neuron's buddy is its most correlated such partner."""
    row_val = torch.full((n_anchor, k), -math.inf)
    row_idx = torch.zeros((n_anchor, k), dtype=torch.long)
    col_top = []
    for block, corr in blocks:
        val, idx = corr.topk(min(k, corr.shape[1]), dim=1)
        merged_val = torch.cat([row_val, val], dim=1)
        merged_idx = torch.cat([row_idx, idx + block.start], dim=1)
        row_val, order = merged_val.topk(k, dim=1)
        row_idx = merged_idx.gather(1, order)
        col_top.append(corr.topk(min(k, n_anchor), dim=0).indices)  # [k, width]
    col = torch.cat(col_top, dim=1)  # [k, partner]
    mutual = (col[:, row_idx] == torch.arange(n_anchor).view(1, -1, 1)).any(0)  # [anchor, k]
    mutual &= torch.isfinite(row_val)
    first = torch.where(mutual.any(1), mutual.float().argmax(1), -1)
    has = first >= 0
    pick = first.clamp(min=0).unsqueeze(1)
    buddy = torch.where(has, row_idx.gather(1, pick).squeeze(1), -1)
    corr = torch.where(has, row_val.gather(1, pick).squeeze(1), math.nan)
    return Matches(buddy=buddy, corr=corr, best=row_val[:, 0])
