"""Paired multi-bootstrap statistics: sensitivity, differences, tokens to parity, savings.

Every metric is computed from per-example outputs, so one replicate is a pair of draws shared by
every arm and token count (after MultiBERTs' multi-bootstrap): seeds drawn with replacement, and
evaluation examples drawn with replacement as integer weights. A metric's value in a replicate
is its mean over the drawn seeds, each seed's metric computed on the drawn examples.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Metric = Callable[[np.ndarray, dict], np.ndarray]  # (weights [R, n], outputs) -> [R]


def _total(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return w @ x.astype(np.float64)


def lm_loss(w: np.ndarray, out: dict) -> np.ndarray:
    """Masked-LM loss per token over the drawn target sequences (lower is better)."""
    return _total(w, out["loss_sum"]) / np.maximum(_total(w, out["count"]), 1)


def accuracy(w: np.ndarray, out: dict) -> np.ndarray:
    return _total(w, out["predicted"] == out["label"]) / w.sum(1)


def log_loss(w: np.ndarray, out: dict) -> np.ndarray:
    """Mean negative log probability of the true class (lower is better)."""
    return _total(w, -np.log(np.clip(out["true_probability"], 1e-12, 1.0))) / w.sum(1)


def _confusion(w: np.ndarray, out: dict) -> tuple[np.ndarray, ...]:
    p, y = out["predicted"] == 1, out["label"] == 1
    return tuple(_total(w, m) for m in (p & y, ~p & ~y, p & ~y, ~p & y))


def mcc(w: np.ndarray, out: dict) -> np.ndarray:
    tp, tn, fp, fn = _confusion(w, out)
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.where(den > 0, (tp * tn - fp * fn) / np.where(den > 0, den, 1), 0.0)


def f1_accuracy(w: np.ndarray, out: dict) -> np.ndarray:
    """Mean of F1 (class 1) and accuracy, GLUE's MRPC score."""
    tp, tn, fp, fn = _confusion(w, out)
    f1 = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12), 0.0)
    return (f1 + (tp + tn) / w.sum(1)) / 2


def _weighted_corr(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = w.sum(1)
    mx, my = _total(w, x) / n, _total(w, y) / n
    cov = _total(w, x * y) / n - mx * my
    vx = _total(w, x * x) / n - mx**2
    vy = _total(w, y * y) / n - my**2
    return cov / np.sqrt(np.maximum(vx * vy, 1e-24))


def pearson_spearman(w: np.ndarray, out: dict) -> np.ndarray:
    """Mean of Pearson and Spearman correlation (ranks fixed on the full set), GLUE's STS-B."""
    x, y = out["predicted"].astype(np.float64), out["label"].astype(np.float64)
    rank = lambda v: np.argsort(np.argsort(v)).astype(np.float64)  # noqa: E731
    return (_weighted_corr(w, x, y) + _weighted_corr(w, rank(x), rank(y))) / 2


METRICS: dict[str, tuple[Metric, bool]] = {  # name -> (function, higher is better)
    "lm_loss": (lm_loss, False),
    "accuracy": (accuracy, True),
    "mcc": (mcc, True),
    "f1_accuracy": (f1_accuracy, True),
    "pearson_spearman": (pearson_spearman, True),
    "log_loss": (log_loss, False),
}


@dataclass
class Draws:
    """The shared draws of every replicate: example weights per evaluation set, seed picks."""

    examples: dict[str, np.ndarray]  # evaluation set -> [R, n] integer weights
    seeds: np.ndarray  # [R, S] indices into the run seeds

    @classmethod
    def make(cls, sizes: dict[str, int], n_seeds: int, replicates: int, seed: int) -> "Draws":
        rng = np.random.default_rng(seed)
        examples = {
            name: rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(np.float64)
            for name, n in sorted(sizes.items())
        }
        return cls(examples, rng.integers(0, n_seeds, size=(replicates, n_seeds)))


def point(metric: str, per_seed: list[dict]) -> float:
    """The metric on all examples, averaged over seeds."""
    fn = METRICS[metric][0]
    n = len(per_seed[0][next(iter(per_seed[0]))])
    return float(np.mean([fn(np.ones((1, n)), out)[0] for out in per_seed]))


def replicates(metric: str, eval_set: str, per_seed: list[dict], draws: Draws) -> np.ndarray:
    """[R] values of `metric` under the shared draws (seed picks and example weights)."""
    fn = METRICS[metric][0]
    by_seed = np.stack([fn(draws.examples[eval_set], out) for out in per_seed])  # [S, R]
    picks = draws.seeds % len(per_seed)  # T = 0 (the base model) has one "seed"
    return by_seed[picks, np.arange(len(picks))[:, None]].mean(1)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def tokens_to_parity(
    grid: np.ndarray, curves: np.ndarray, reference: np.ndarray, higher: bool
) -> np.ndarray:
    """Per replicate, the smallest token count at which a curve reaches its reference.

    `grid` [G] token counts (ascending, > 0), `curves` [R, G], `reference` [R]. The curve is made
    monotone in the better direction (running best) and interpolated linearly in log tokens;
    the first grid point when it is already reached there; inf when never reached.
    """
    sign = 1.0 if higher else -1.0
    best = np.maximum.accumulate(sign * curves, axis=1)
    target = sign * reference
    out = np.full(len(curves), np.inf)
    logs = np.log(grid)
    for r in range(len(curves)):
        above = np.flatnonzero(best[r] >= target[r])
        if not len(above):
            continue
        i = above[0]
        if i == 0:
            out[r] = grid[0]
            continue
        lo, hi = best[r, i - 1], best[r, i]
        frac = (target[r] - lo) / (hi - lo) if hi > lo else 1.0
        out[r] = float(np.exp(logs[i - 1] + frac * (logs[i] - logs[i - 1])))
    return out
