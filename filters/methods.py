"""Score methods: how a document's selection score is made, one registered class each.

A method declares what it needs (side files from the probe stage, the shard text, a target
corpus), whether selection can stream it (decide a document from a few fitted numbers), and
whether sample-mode temperatures count in standard deviations of its score. Adding a method is
one class here plus its test; recipes name it in `score.method`.
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from filters.rows import Rows
from filters.scoring import ZParams, draws, zsum


@dataclass(frozen=True)
class Fitted:
    """What a method may use besides the rows: fitted once on the whole corpus."""

    zparams: ZParams | None
    seed: int


class Method:
    name: ClassVar[str]
    needs_probe: ClassVar[bool] = False  # side files (neuron columns, probe score)
    side_columns: ClassVar[tuple[str, ...]] = ()  # of "neurons", "score": what it reads
    needs_text: ClassVar[bool] = False  # features computed from the shard text
    needs_target: ClassVar[bool] = False  # a target corpus (dsir.target)
    spread_scaled: ClassVar[bool] = False  # sample temperature in score standard deviations
    samples: ClassVar[bool] = True  # sample mode adds Gumbel noise to the score

    @classmethod
    def streamable(cls) -> bool:
        """Decidable a row at a time from side files (the sketch path, datatrove steps)."""
        return cls.needs_probe and not cls.needs_text

    def score(self, rows: Rows, fitted: Fitted) -> np.ndarray:
        """float64 score per usable row (rows.ok); higher is selected first."""
        raise NotImplementedError

    def text_scorer(self, recipe):
        """For a method that needs the text: an object with `visit(docs)` (called on every batch
        of the token pass) and `scores(batches)` (a second pass: one score per row)."""
        return None


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def method(name: str) -> Method:
    return METHODS[name]()


@register
class ZScoredSum(Method):
    """sum_j w_j (x_j - mean_j) / std_j over the neuron columns: the Rosetta score."""

    name = "zsum"
    needs_probe = True
    side_columns = ("neurons",)
    spread_scaled = True

    def score(self, rows: Rows, fitted: Fitted) -> np.ndarray:
        return zsum(rows.neurons, fitted.zparams)[rows.ok]  # row-wise: no matrix copy


@register
class ProbeScore(Method):
    """The side file's own `score` column (the neuron set's weighted mean activation)."""

    name = "probe"
    needs_probe = True
    side_columns = ("score",)
    spread_scaled = True

    def score(self, rows: Rows, fitted: Fitted) -> np.ndarray:
        return rows.probe_score[rows.ok].astype(np.float64)


@register
class Random(Method):
    """A uniform draw per document and seed: top-k of it is a uniform random subset."""

    name = "random"
    samples = False  # already a random draw, whatever the mode

    def score(self, rows: Rows, fitted: Fitted) -> np.ndarray:
        return draws(rows.tie[rows.ok], fitted.seed)


@register
class Dsir(Method):
    """DSIR's log importance weight toward a target corpus (hashed n-gram features of the text,
    computed before selection into `rows.external`)."""

    name = "dsir"
    needs_text = True
    needs_target = True

    def score(self, rows: Rows, fitted: Fitted) -> np.ndarray:
        return rows.external[rows.ok]

    def text_scorer(self, recipe):
        from filters.dsir import DsirScorer
        from probes.storage import as_path

        d = recipe.dsir
        return DsirScorer(as_path(d.target), d.text_key, d.buckets)
