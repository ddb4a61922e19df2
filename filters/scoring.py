"""Document scores and selection keys, computed the same way wherever selection runs.

`curate filter` and the datatrove steps both call these functions, row by row, so the same
document gets bit-identical keys in both: z-score statistics are order-independent (sums of
sorted values) and the combination is an explicit per-column loop, never a reduction whose
rounding could depend on how rows were batched.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ZParams:
    """Per-column mean, standard deviation and weight of a z-scored weighted sum."""

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weight: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"columns": self.columns, "mean": self.mean, "std": self.std, "weight": self.weight}

    @classmethod
    def from_dict(cls, data: dict) -> "ZParams":
        return cls(*(tuple(data[k]) for k in ("columns", "mean", "std", "weight")))


def column_sums(neurons: np.ndarray, mean: Sequence[float] | None = None) -> list[float]:
    """Per column, the sum of x (or of (x - mean)^2), over sorted values: the same whatever
    the order of the rows."""
    out = []
    for j in range(neurons.shape[1]):
        col = neurons[:, j]
        if mean is None:  # sorting before widening orders the same values, at half the cost
            out.append(float(np.sort(col).astype(np.float64).sum()))
        else:
            out.append(float(np.sort((col.astype(np.float64) - mean[j]) ** 2).sum()))
    return out


def zsum(neurons: np.ndarray, params: ZParams) -> np.ndarray:
    """sum_j weight_j * (x_j - mean_j) / std_j, in float64, one column at a time."""
    out = np.zeros(neurons.shape[0], dtype=np.float64)
    for j in range(neurons.shape[1]):
        x = neurons[:, j].astype(np.float64)
        out += params.weight[j] * ((x - params.mean[j]) / params.std[j])
    return out


_GOLDEN = 0x9E3779B97F4A7C15


def draws(hashes: np.ndarray, seed: int) -> np.ndarray:
    """Uniform draws in (0, 1) per document for one seed: splitmix64 of the hash and seed."""
    x = hashes + np.uint64(_GOLDEN * (seed + 1) % 2**64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def spread(n: int, squares: float) -> float:
    """Population standard deviation from a count and a sum of squared deviations from the
    mean; 1.0 when there is no spread (a constant column scales nothing)."""
    var = squares / n if n else 0.0
    return var**0.5 if var > 0 else 1.0
