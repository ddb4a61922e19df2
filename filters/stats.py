"""Corpus statistics for selection, in one pass: totals, z-score moments, the score's spread.

Chunks merge exactly (Chan et al.'s pairwise update), so the exact path (one chunk: the whole
corpus) and the streaming path (many chunks) fit the same rule from the same definitions. Within a
chunk, column sums are taken over sorted values, so a chunk's statistics do not depend on the
order of its rows.
"""

import numpy as np

from filters.rows import Rows
from filters.scoring import column_sums


class Moments:
    """Per-column count, mean and sum of squared deviations; optionally the co-moments."""

    def __init__(self, columns: int, comoments: bool = False):
        self.n = 0
        self.mean = np.zeros(columns)
        self.m2 = np.zeros(columns)
        self.c2 = np.zeros((columns, columns)) if comoments else None

    def add(self, x: np.ndarray) -> None:
        n_b = len(x)
        if n_b == 0 or x.shape[1] == 0:
            return
        mean_b = np.array(column_sums(x)) / n_b
        m2_b = np.array(column_sums(x, mean_b.tolist()))
        delta = mean_b - self.mean
        total = self.n + n_b
        self.mean = self.mean + delta * (n_b / total)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * n_b / total)
        if self.c2 is not None:
            centred = x.astype(np.float64) - mean_b
            self.c2 += centred.T @ centred + np.outer(delta, delta) * (self.n * n_b / total)
        self.n = total


class CorpusStats:
    """What selection needs to know about the whole corpus before deciding any row."""

    def __init__(
        self,
        columns: int,
        min_tokens: int,
        max_tokens: int,
        sources: int = 0,
        spread: bool = False,
    ):
        self.min_tokens, self.max_tokens = min_tokens, max_tokens
        self.docs = 0
        self.tokens = 0
        self.tokens_by_source = np.zeros(sources, np.int64)
        self.usable = Moments(columns)  # neuron columns over usable rows: the z-scores
        # over length-eligible rows, for the score's spread (sample-mode temperature)
        self.eligible = Moments(columns, comoments=True) if spread else None
        self.eligible_probe = Moments(1) if spread else None

    def add(self, rows: Rows) -> None:
        ok = rows.ok
        self.docs += int(ok.sum())
        self.tokens += int(rows.tokens[ok].sum())
        if rows.source is not None and len(self.tokens_by_source):
            self.tokens_by_source += np.bincount(
                rows.source[ok], weights=rows.tokens[ok], minlength=len(self.tokens_by_source)
            ).astype(np.int64)
        self.usable.add(rows.neurons[ok])
        if self.eligible is not None:
            eligible = ok & self.within_limits(rows.lengths)
            self.eligible.add(rows.neurons[eligible])
            self.eligible_probe.add(rows.probe_score[eligible].reshape(-1, 1))

    def within_limits(self, tokens: np.ndarray) -> np.ndarray:
        inside = tokens >= self.min_tokens
        return inside & (tokens <= self.max_tokens) if self.max_tokens else inside
