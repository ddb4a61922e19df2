"""The scaling law N_rosetta = c * N_total^alpha, fitted with a bootstrap over seeds and neurons.

Each size has one Rosetta mask per anchor seed (the anchor's neurons that found a buddy in every
other seed). A replicate draws the anchors of every size with replacement (seed-to-seed
variation), then each drawn anchor's count as the number of Rosetta neurons among its neurons
drawn with replacement (sampling of neurons: Binomial(N, k / N)), averages them per size and
fits log count on log size by least squares. Sizes whose count is 0 in a replicate drop out of
that replicate's fit (log 0); the point fit needs two sizes with a count.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from probes.errors import CurateError


@dataclass(frozen=True)
class SizeCounts:
    n_total: int  # neurons of the anchor (all MLP neurons of the model)
    counts: tuple[int, ...]  # Rosetta neurons, one per anchor seed


@dataclass(frozen=True)
class PowerLaw:
    alpha: float
    c: float
    alpha_ci: tuple[float, float]
    c_ci: tuple[float, float]
    level: float
    replicates: int  # replicates with two sizes or more to fit
    sizes: int  # sizes in the point fit
    samples: np.ndarray = field(repr=False, compare=False, default=None)  # [replicates, 2]

    def predict(self, n_total: np.ndarray) -> np.ndarray:
        return self.c * np.asarray(n_total, float) ** self.alpha

    def band(self, n_total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bootstrap's pointwise interval of the fitted line at `n_total`."""
        logs = self.samples[:, 1:2] + self.samples[:, 0:1] * np.log(np.asarray(n_total, float))
        tail = (1 - self.level) / 2 * 100
        lo, hi = np.percentile(logs, [tail, 100 - tail], axis=0)
        return np.exp(lo), np.exp(hi)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "samples"}


def _slopes(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (slope, intercept) of each row of y [rows, sizes] on x [sizes], ignoring
    NaN entries; NaN where a row has fewer than two finite entries."""
    w = np.isfinite(y).astype(float)
    y0 = np.where(w > 0, y, 0.0)
    n = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * x).sum(1) / n
        my = (w * y0).sum(1) / n
        dx = (x - mx[:, None]) * w
        slope = (dx * (y0 - my[:, None])).sum(1) / (dx * dx).sum(1)
    slope = np.where(n >= 2, slope, np.nan)
    return slope, my - slope * mx


def fit_power_law(
    sizes: Sequence[SizeCounts], replicates: int = 2000, level: float = 0.95, seed: int = 0
) -> PowerLaw:
    """The point fit on the mean count per size, and percentile intervals from the bootstrap."""
    if len(sizes) < 2:
        raise CurateError(f"a scaling fit needs two sizes or more, not {len(sizes)}")
    x = np.log([s.n_total for s in sizes])
    means = np.array([np.mean(s.counts) for s in sizes], float)
    with np.errstate(divide="ignore"):
        point = np.where(means > 0, np.log(means), np.nan)
    slope, intercept = _slopes(x, point[None, :])
    if not np.isfinite(slope[0]):
        raise CurateError(
            "fewer than two sizes have any Rosetta neuron: no power law to fit "
            f"(counts per size: {[list(s.counts) for s in sizes]})"
        )
    rng = np.random.default_rng(seed)
    draws = np.empty((replicates, len(sizes)))
    for i, s in enumerate(sizes):
        counts = np.asarray(s.counts, float)
        picked = counts[rng.integers(0, len(counts), size=(replicates, len(counts)))]
        draws[:, i] = rng.binomial(s.n_total, picked / s.n_total).mean(1)
    with np.errstate(divide="ignore"):
        boot_slope, boot_intercept = _slopes(x, np.where(draws > 0, np.log(draws), np.nan))
    ok = np.isfinite(boot_slope)
    tail = (1 - level) / 2 * 100
    a_lo, a_hi = np.percentile(boot_slope[ok], [tail, 100 - tail])
    c_lo, c_hi = np.exp(np.percentile(boot_intercept[ok], [tail, 100 - tail]))
    return PowerLaw(
        alpha=float(slope[0]),
        c=float(np.exp(intercept[0])),
        alpha_ci=(float(a_lo), float(a_hi)),
        c_ci=(float(c_lo), float(c_hi)),
        level=level,
        replicates=int(ok.sum()),
        sizes=int(np.isfinite(point).sum()),
        samples=np.stack([boot_slope[ok], boot_intercept[ok]], 1),
    )


def ratio_of_means(
    last: np.ndarray, first: np.ndarray, replicates: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float] | None:
    """mean(last) / mean(first) with a percentile interval from resampling each's values (the
    selectivity gain of one population between the smallest and the largest size)."""
    last, first = last[np.isfinite(last)], first[np.isfinite(first)]
    if not len(last) or not len(first) or first.mean() <= 0:
        return None
    rng = np.random.default_rng(seed)
    top = last[rng.integers(0, len(last), (replicates, len(last)))].mean(1)
    bottom = first[rng.integers(0, len(first), (replicates, len(first)))].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = top / bottom
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(ratios, [tail, 100 - tail])
    return float(last.mean() / first.mean()), float(lo), float(hi)
