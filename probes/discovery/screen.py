"""Screen, then verify: candidate buddies from a token sample, exact statistics only for them.

All-pairs correlation costs (anchor neurons x partner neurons) multiply-adds per token: 340M for
minilm-l6 x mpnet-base, more than the two models' forward passes. A neuron with a strong buddy
already ranks it near the top on a few thousand tokens, so stage 1 (`screen`) correlates every
pair on the first `sample` aligned tokens of the stream and keeps, for each anchor neuron, its
`per_layer` best partners in each of its `layers` best partner layers, and for each partner neuron
its `per_layer` best anchors (the competitors the mutual check must see). Stage 2 (`PairSums`)
streams exact cross sums for those pairs only, over every token of the split: Pearson
correlations then come from them and the exact per-neuron moments. Memory holds the sample and
the pair sums, whatever the token count.

The rotated-basis null is screened and verified the same way: its candidate pairs come from the
sample, and the chosen rotated columns (a fixed linear map of the sample-standardized layer)
stream exact statistics over the first `null_tokens` tokens (131k by default; every token of
a smaller split). A null from the sample alone would be stricter than the exact path's, since
the sample's few tokens give larger chance correlations and chose the candidates; past ~100k
tokens the null's correlations move by ~1e-3, while its rotation is the verification's
largest product, so it stops there.
"""

import math
import warnings
from dataclasses import dataclass

import torch

from probes.cpu import pick_dtype
from probes.discovery.match import Matches
from probes.discovery.stream import (
    ShiftedMoments,
    inverse_std,
    random_rotation,
    shift_,
    transpose_into,
)


@dataclass(frozen=True)
class ScreenSettings:
    sample: int = 8192  # aligned tokens correlated all-pairs
    layers: int = 2  # partner layers kept per anchor neuron (its best ones on the sample)
    per_layer: int = 4  # candidates per anchor neuron per kept layer, and per partner neuron
    null_tokens: int | None = 131_072  # aligned tokens the null's pairs are verified on (the
    # first ones, the sample's included; None: every token): its correlations need ~1e-3
    # precision (1/sqrt(n)), not the Rosetta pairs' full budget


@dataclass
class Rotated:
    """The rotated-basis null's partner columns that need exact statistics: per partner layer,
    the chosen columns of its rotation, applied to partner activations standardized with the
    sample's moments (a fixed linear map, so its exact statistics stream like any neuron's).
    The sample's 1 / std is folded into the maps: standardizing costs no pass of its own."""

    width: int
    columns: list[torch.Tensor]  # per layer: the rotated columns kept (sorted)
    maps_t: list[torch.Tensor]  # per layer: [kept, width] those columns of diag(1/std) R
    dtype: torch.dtype = torch.float32  # bf16 where the CPU multiplies it fast: the null's
    # correlations lose ~1e-6 to its rounding, and this product is the verification's largest

    def __call__(self, partner_t: torch.Tensor) -> torch.Tensor:
        """[kept columns of every layer, in layer order; units] rotated activations, from the
        neuron-major partner activations minus their sample means."""
        w = self.width
        out = torch.empty((self.n_columns, partner_t.shape[1]), dtype=torch.float32)
        lo = 0
        for i, m in enumerate(self.maps_t):  # one layer converted at a time
            out[lo : lo + len(m)] = m @ partner_t[i * w : (i + 1) * w].to(self.dtype)
            lo += len(m)
        return out

    @property
    def n_columns(self) -> int:
        return sum(len(c) for c in self.columns)


@dataclass
class Candidates:
    """Screened pairs for one partner: (anchor, partner flat index), and the null's pairs
    (anchor, index among `rotated`'s kept columns); each unique, in row-major order."""

    anchor: torch.Tensor  # [pairs] long
    partner: torch.Tensor  # [pairs] long
    null_anchor: torch.Tensor
    null_column: torch.Tensor
    rotated: Rotated
    partner_mean: torch.Tensor  # the sample's: the verifier's shift, which `rotated` assumes


class _Best:
    """Per partner layer, as its correlation block arrives: each anchor neuron's `per_layer`
    best columns, and each column's `per_layer` best anchors (the competitors the mutual check
    must see); `pairs` then keeps each anchor's `layers` best layers."""

    def __init__(self, settings: ScreenSettings):
        self.settings = settings
        self.top_val, self.top_idx, self.col_anchor = [], [], []

    def add(self, block: slice, corr: torch.Tensor) -> None:
        k = self.settings.per_layer
        val, idx = corr.topk(min(k, corr.shape[1]), dim=1)
        self.top_val.append(val)
        self.top_idx.append(idx + block.start)
        corr_t = torch.empty((corr.shape[1], corr.shape[0]), dtype=corr.dtype)
        transpose_into(corr_t, corr)  # a row-wise top-k is 4x faster than a column-wise one
        self.col_anchor.append(corr_t.topk(min(k, corr.shape[0]), dim=1).indices.T)

    def pairs(self, n_columns: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(anchor, column) of every candidate pair, unique, in row-major order."""
        top_val, top_idx = torch.stack(self.top_val, 1), torch.stack(self.top_idx, 1)
        n_anchor, n_layers, k = top_idx.shape  # [anchor, layers, k]
        best_layers = top_val[:, :, 0].topk(min(self.settings.layers, n_layers), dim=1).indices
        kept = top_idx.gather(1, best_layers.unsqueeze(2).expand(-1, -1, k)).reshape(n_anchor, -1)
        chosen = torch.unique(kept)
        anchors_of = torch.cat(self.col_anchor, dim=1)[:, chosen]  # [k', chosen columns]
        per_anchor = torch.arange(n_anchor).repeat_interleave(kept.shape[1])
        rows = torch.cat([per_anchor, anchors_of.reshape(-1)])
        cols = torch.cat([kept.reshape(-1), chosen.repeat(anchors_of.shape[0])])
        flat = torch.unique(rows * n_columns + cols)
        return flat // n_columns, flat % n_columns


def _standardized(x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 z-scores of a [neurons, units] matrix's rows (0 for a constant row), with the
    rows' means and 1 / std."""
    z = x_t.float()  # a copy for bf16; for float32, the subtraction below makes one
    mean = z.mean(1)
    z = z - mean.unsqueeze(1)
    inv = inverse_std(torch.linalg.vector_norm(z, dim=1) / math.sqrt(z.shape[1]))
    return z.mul_(inv.unsqueeze(1)), mean, inv


def screen(
    anchor_t: torch.Tensor,
    partner_t: torch.Tensor,
    width: int,
    settings: ScreenSettings,
    generator: torch.Generator,
) -> Candidates:
    """Candidate pairs from all-pairs Pearson correlations on the sample (`anchor_t`
    [A, units], `partner_t` [layers * width, units]: neuron-major, any float dtype), and the
    rotated null's candidates chosen the same way (one random rotation per partner layer, drawn
    as the exact path draws them). The products run in bf16 where the CPU does that fast: they
    only rank candidates.

    The null's correlations come from the real ones, as the exact path computes them: for z
    rotated by R, corr(a, (zR)_j) = (C R)_j / std((zR)_j), a [A, width] x [width, width] product
    instead of another [A, units] x [units, width] one."""
    n_anchor, n = anchor_t.shape
    n_partner = partner_t.shape[0]
    dtype = pick_dtype("auto")
    z_a_t = _standardized(anchor_t)[0].to(dtype)
    blocks = [slice(i * width, (i + 1) * width) for i in range(n_partner // width)]
    real, null = _Best(settings), _Best(settings)
    rotations, means, inverse_stds = [], [], []
    for block in blocks:  # one layer at a time: memory holds one layer's z
        z_t, mean, inv = _standardized(partner_t[block])
        z_t = z_t.to(dtype)
        corr = (z_a_t @ z_t.T).float() / n
        real.add(block, corr)
        rotation = random_rotation(width, generator).to(dtype)  # it only enters dtype products
        rotated_std = torch.linalg.vector_norm((rotation.T @ z_t).float(), dim=1)
        rotated_std /= math.sqrt(n)
        null.add(block, (corr.to(dtype) @ rotation).float() * inverse_std(rotated_std))
        rotations.append(rotation)
        means.append(mean)
        inverse_stds.append(inv)
    null_anchor, null_flat = null.pairs(n_partner)
    layer = null_flat // width
    columns = [(null_flat[layer == i] - i * width).unique() for i in range(len(blocks))]
    maps_t = [
        (r[:, c].float() * inv.unsqueeze(1)).T.contiguous().to(dtype)
        for r, c, inv in zip(rotations, columns, inverse_stds, strict=True)
    ]
    offsets = torch.tensor([0] + [len(c) for c in columns]).cumsum(0)
    null_column = torch.empty_like(null_flat)
    for i, kept in enumerate(columns):
        here = layer == i
        null_column[here] = offsets[i] + torch.searchsorted(kept, null_flat[here] - i * width)
    rotated = Rotated(width, columns, maps_t, dtype)
    return Candidates(*real.pairs(n_partner), null_anchor, null_column, rotated, torch.cat(means))


class PairSums:
    """sum_t (a_t - s_a)(b_t - s_b) for the screened pairs, in float64, shifted by fixed
    per-neuron constants (the sample means) so the one-pass covariance does not cancel.
    `anchor` and `partner` hold the pairs in row-major order (the order of the sums).

    Each batch is one sampled dense-dense product (`torch.sparse.sampled_addmm`) of neuron-major
    activations: the dot products of the screened pairs only, each over contiguous memory."""

    def __init__(
        self, anchor: torch.Tensor, partner: torch.Tensor, shift_anchor: torch.Tensor, shift_partner
    ):
        order = torch.argsort(anchor * len(shift_partner) + partner)
        self.anchor, self.partner = anchor[order], partner[order]
        self.shift_anchor, self.shift_partner = shift_anchor.double(), shift_partner.double()
        rows = torch.zeros(len(shift_anchor) + 1, dtype=torch.long)
        rows[1:] = torch.bincount(self.anchor, minlength=len(shift_anchor)).cumsum(0)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self.pattern = torch.sparse_csr_tensor(
                rows,
                self.partner,
                torch.zeros(len(self.partner)),
                size=(len(shift_anchor), len(shift_partner)),
                check_invariants=False,
            )
        self.sums = torch.zeros(len(self.anchor), dtype=torch.float64)
        self.count = 0

    def add(self, anchor_t: torch.Tensor, partner_t: torch.Tensor) -> None:
        """One batch: [anchor neurons, units] and [partner neurons, units], each minus its shift
        (`stream.shift_`)."""
        products = torch.sparse.sampled_addmm(self.pattern, anchor_t, partner_t.T, beta=0.0)
        self.sums += products.values().double()
        self.count += anchor_t.shape[1]

    def correlations(self, mean_a, var_a, mean_b, var_b) -> torch.Tensor:
        """Pearson correlation per pair from the exact moments of the same tokens."""
        n = max(self.count, 1)
        da = mean_a[self.anchor] - self.shift_anchor[self.anchor]
        db = mean_b[self.partner] - self.shift_partner[self.partner]
        cov = self.sums / n - da * db
        scale = (var_a[self.anchor] * var_b[self.partner]).sqrt()
        return torch.where(scale > 1e-12, cov / scale.clamp(min=1e-12), 0.0).float()


def sparse_mutual_best(
    anchor: torch.Tensor, partner: torch.Tensor, corr: torch.Tensor, n_anchor: int, n_partner: int
) -> Matches:
    """Mutual best buddies among the screened pairs: anchor i's best partner j whose best anchor
    (among the pairs holding j) is i. `best` is each anchor neuron's best screened correlation."""
    order = torch.argsort(corr, descending=True, stable=True)
    a, p, c = anchor[order], partner[order], corr[order]
    first_of_anchor = _first_occurrence(a, n_anchor)
    first_of_partner = _first_occurrence(p, n_partner)
    best = torch.full((n_anchor,), -math.inf)
    has_pairs = first_of_anchor >= 0
    best[has_pairs] = c[first_of_anchor[has_pairs]]
    buddy = torch.full((n_anchor,), -1, dtype=torch.long)
    pair_corr = torch.full((n_anchor,), math.nan)
    top = first_of_anchor[has_pairs]
    mutual = first_of_partner[p[top]] == top
    rows = has_pairs.nonzero().squeeze(1)[mutual]
    buddy[rows] = p[top[mutual]]
    pair_corr[rows] = c[top[mutual]]
    return Matches(buddy=buddy, corr=pair_corr, best=best)


def _first_occurrence(values: torch.Tensor, size: int) -> torch.Tensor:
    """For each id in [0, size): the first position of it in `values`, or -1."""
    first = torch.full((size,), len(values), dtype=torch.long)
    first.scatter_reduce_(0, values, torch.arange(len(values)), reduce="amin")
    return torch.where(first < len(values), first, -1)


class Verifier:
    """Stage 2 for one partner: exact cross sums of its screened pairs and the exact moments of
    its neurons on every token of the discovery split; the same for the null's pairs and the
    rotated columns on the first `null_tokens` (with the anchor's moments on those tokens).
    Batches arrive neuron-major; every sum reads them row-wise. Anchor activations arrive minus
    `shift_anchor`, partner ones are shifted by the sample means."""

    def __init__(self, candidates: Candidates, shift_anchor: torch.Tensor, null_tokens: int | None):
        self.candidates = candidates
        shift_partner = candidates.partner_mean  # the sample means: what `rotated` subtracts
        self.shift = shift_partner.float()
        self.pairs = PairSums(candidates.anchor, candidates.partner, shift_anchor, shift_partner)
        n_rotated = candidates.rotated.n_columns
        self.null_pairs = PairSums(
            candidates.null_anchor, candidates.null_column, shift_anchor, torch.zeros(n_rotated)
        )
        self.moments = ShiftedMoments(shift_partner)
        self.rotated_moments = ShiftedMoments(torch.zeros(n_rotated))
        self.null_anchor_moments = ShiftedMoments(shift_anchor)
        self.null_tokens = null_tokens

    def update(self, anchor_t: torch.Tensor, partner_t: torch.Tensor) -> None:
        """`anchor_t`: the batch's anchor activations minus the same shift (shifted once for
        every partner); `partner_t`: this partner's, shifted here in place. Both neuron-major."""
        partner_t = shift_(partner_t, self.shift)
        self.moments.update(partner_t)
        self.pairs.add(anchor_t, partner_t)
        if self.null_tokens is None or self.null_pairs.count < self.null_tokens:
            rotated_t = self.candidates.rotated(partner_t)
            self.null_pairs.add(anchor_t, rotated_t)
            self.rotated_moments.update(rotated_t)
            self.null_anchor_moments.update(anchor_t)

    def pairing(self, anchor) -> tuple[Matches, Matches]:
        """Mutual best buddies among the screened pairs, and the rotated null's; `anchor` holds
        the anchor neurons' exact `mean` and `var` over every token."""
        partner, rotated, null_anchor = self.moments, self.rotated_moments, self.null_anchor_moments
        n_anchor, n_partner = len(anchor.mean), len(partner.mean)
        corr = self.pairs.correlations(anchor.mean, anchor.var, partner.mean, partner.var)
        null = self.null_pairs.correlations(
            null_anchor.mean, null_anchor.var, rotated.mean, rotated.var
        )
        return (
            sparse_mutual_best(self.pairs.anchor, self.pairs.partner, corr, n_anchor, n_partner),
            sparse_mutual_best(
                self.null_pairs.anchor, self.null_pairs.partner, null, n_anchor, len(rotated.mean)
            ),
        )

    @property
    def n_pairs(self) -> tuple[int, int]:
        return len(self.pairs.sums), len(self.null_pairs.sums)

    @property
    def null_verified_tokens(self) -> int:
        return self.null_pairs.count
