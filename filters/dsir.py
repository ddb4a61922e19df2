"""DSIR baseline (Xie et al. 2023): importance weights from hashed n-gram features.

Each document becomes counts of hashed lowercase unigrams and bigrams. Bag-of-n-grams models of
the raw corpus and of a target corpus give every document a log importance weight
sum_f count_f * (log p_target(f) - log p_raw(f)); Gumbel top-k over those weights (select mode
`sample`) then resamples the raw corpus toward the target, as in the paper.
"""

import re
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from probes.shards import list_shards, read_documents

_WORD = re.compile(r"\w+")


def features(text: str, buckets: int) -> np.ndarray:
    """Hashed unigram and bigram ids of a text (crc32: stable across processes)."""
    words = _WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    return np.array([zlib.crc32(g.encode()) % buckets for g in grams], dtype=np.int64)


class NgramModel:
    """Add-one smoothed bag of hashed n-grams."""

    def __init__(self, buckets: int):
        self.counts = np.ones(buckets, dtype=np.float64)

    def add(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.counts += np.bincount(features(text, len(self.counts)), minlength=len(self.counts))

    def log_probs(self) -> np.ndarray:
        return np.log(self.counts / self.counts.sum())


def target_model(target_dir: Path, text_key: str, buckets: int) -> NgramModel:
    """Model of the target corpus (bad rows skipped: they carry no text to learn from)."""
    model = NgramModel(buckets)
    for shard in list_shards(target_dir):
        docs = read_documents(shard, text_key=text_key, on_error="skip")
        model.add(d.text for d in docs if d.error is None)
    return model


def log_importance(texts: list[str], raw: NgramModel, target: NgramModel) -> np.ndarray:
    """Per-document log importance weight (empty text: 0)."""
    ratio = target.log_probs() - raw.log_probs()
    buckets = len(ratio)
    return np.array([float(ratio[features(t, buckets)].sum()) for t in texts], dtype=np.float64)


class DsirScorer:
    """DSIR over one corpus: `visit` every batch of the token pass (the raw model), then
    `scores` makes a second pass for each document's log importance weight."""

    def __init__(self, target_dir: Path, text_key: str, buckets: int):
        self.raw = NgramModel(buckets)
        self.target = target_model(target_dir, text_key, buckets)

    def visit(self, docs: list) -> None:
        self.raw.add(d.text for d in docs if d.error is None)

    def scores(self, batches: Iterable[list]) -> np.ndarray:
        """Log importance per document of `batches` (the corpus again, in row order)."""
        parts = [log_importance([d.text for d in docs], self.raw, self.target) for docs in batches]
        return np.concatenate(parts) if parts else np.zeros(0)
