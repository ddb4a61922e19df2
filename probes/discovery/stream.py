"""Streaming statistics of activations: exact in float64 however many tokens stream through.

Per-neuron mean and variance (Welford/Chan) and the anchor-by-partner cross sums z_A^T z_B are
merged batch by batch, each batch neuron-major ([neurons, units]: every reduction reads contiguous
rows), so memory depends on the neuron counts only and the sums stay exact far beyond 10M
tokens. The cross sums also keep what the rotated-basis null needs.
"""

from collections.abc import Iterator

import torch


class Moments:
    """Per-neuron mean and variance, each batch merged exactly into float64 (Chan et al.)."""

    def __init__(self, n: int):
        self.count = 0
        self.mean = torch.zeros(n, dtype=torch.float64)
        self.m2 = torch.zeros(n, dtype=torch.float64)

    def update(self, x_t: torch.Tensor) -> None:
        """One [neurons, units] batch."""
        n_b = x_t.shape[1]
        mean_b = x_t.mean(1)
        m2_b = ((x_t - mean_b.unsqueeze(1)) ** 2).sum(1).double()
        delta = mean_b.double() - self.mean
        total = self.count + n_b
        self.mean += delta * (n_b / total)
        self.m2 += m2_b + delta**2 * (self.count * n_b / total)
        self.count = total

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / max(self.count, 1)

    def standardize(self, x_t: torch.Tensor) -> torch.Tensor:
        """z-scores of a [neurons, units] batch in float32; a neuron without variance gets 0
        (it correlates with nothing)."""
        mean, inv = self.mean.float().unsqueeze(1), inverse_std(self.var.sqrt()).float()
        return (x_t - mean) * inv.unsqueeze(1)


class ShiftedMoments:
    """Per-neuron mean and variance from float64 sums of `x - shift`, the shift a fixed
    per-neuron constant near the mean (the screening sample's), so the one-pass formula does not
    cancel. Batches arrive already shifted (`shift_`): two row reductions, where `Moments` needs
    four passes."""

    def __init__(self, shift: torch.Tensor):
        self.shift = shift.double()
        self.count = 0
        self.sums = torch.zeros((2, len(shift)), dtype=torch.float64)  # sum d, sum d^2

    def update(self, shifted: torch.Tensor) -> None:
        self.count += shifted.shape[1]
        self.sums[0] += shifted.sum(1).double()
        self.sums[1] += torch.linalg.vector_norm(shifted, dim=1).double() ** 2

    @property
    def mean(self) -> torch.Tensor:
        return shifted_mean_var(self.shift, self.sums[0], self.sums[1], self.count)[0]

    @property
    def var(self) -> torch.Tensor:
        return shifted_mean_var(self.shift, self.sums[0], self.sums[1], self.count)[1]


def shifted_mean_var(
    shift: torch.Tensor, sum_d: torch.Tensor, sum_d2: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 mean and variance of x from the sums of d = x - shift and of d^2."""
    m1, m2 = sum_d.double() / max(count, 1), sum_d2.double() / max(count, 1)
    return shift.double() + m1, (m2 - m1**2).clamp(min=0)


def shift_(x_t: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """`x_t - shift` in place, for a [neurons, units] batch and a per-neuron shift."""
    return x_t.sub_(shift.to(x_t.dtype).unsqueeze(1))


TRANSPOSE_BLOCK = 512  # rows per block: a block's transpose stays in cache (3-5x a plain copy)


def transpose_into(out: torch.Tensor, x: torch.Tensor) -> None:
    """out[:] = x.T (converted to out's dtype), a block of x's rows at a time."""
    for lo in range(0, x.shape[0], TRANSPOSE_BLOCK):
        out[:, lo : lo + TRANSPOSE_BLOCK].copy_(x[lo : lo + TRANSPOSE_BLOCK].T)


def inverse_std(std: torch.Tensor) -> torch.Tensor:
    """1 / std, and 0 for a constant neuron (it correlates with nothing)."""
    return torch.where(std > 1e-6, 1.0 / std.clamp(min=1e-6), torch.zeros_like(std))


def random_rotation(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal n x n matrix (QR of a Gaussian, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


class CrossCorrelation:
    """sum_t z_A z_B^T per partner layer block, plus what the rotated-basis null needs.

    The null rotates each partner layer's z-scores by a random orthogonal R: the rotated
    neurons' cross sums are S R, computed once at the end, and their variances need only the
    streamed squares of z_B R.
    """

    def __init__(self, n_anchor: int, n_layers: int, width: int, generator: torch.Generator):
        self.width = width
        self.sums = torch.zeros((n_anchor, n_layers * width), dtype=torch.float64)
        self.rotations = [random_rotation(width, generator) for _ in range(n_layers)]
        self.rotated_sq = torch.zeros(n_layers * width, dtype=torch.float64)

    def update(self, z_anchor_t: torch.Tensor, z_partner_t: torch.Tensor) -> None:
        """One batch of z-scores, both [neurons, units]."""
        for layer, rotation in enumerate(self.rotations):
            block = slice(layer * self.width, (layer + 1) * self.width)
            z_block_t = z_partner_t[block]
            self.sums[:, block] += z_anchor_t @ z_block_t.T
            self.rotated_sq[block] += ((rotation.T @ z_block_t) ** 2).sum(1)

    def blocks(self, count: int, rotated: bool) -> Iterator[tuple[slice, torch.Tensor]]:
        """(partner columns, float32 Pearson correlations [anchor, width]) per partner layer."""
        for layer, rotation in enumerate(self.rotations):
            block = slice(layer * self.width, (layer + 1) * self.width)
            corr = (self.sums[:, block] / count).float()
            if rotated:
                std = (self.rotated_sq[block] / count).sqrt().float()
                corr = (corr @ rotation) / std.clamp(min=1e-6)
            yield block, corr
