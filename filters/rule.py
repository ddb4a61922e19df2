"""The one per-row rule: score, length and threshold limits, selection key, and the cut lookup.

A `Rule` is fitted once on the whole corpus (z-score statistics, the sample temperature in the
score's units) and then decides any row on its own, so the exact path, the streaming sketch
path and the datatrove `BudgetFilter` all call `Rule.evaluate` and `CutSpec.decide`; a document
gets bit-identical keys on every path (row-wise arithmetic only, never a reduction whose rounding
could depend on the batch). Reasons are small integer codes (`select.REASONS`).
"""

import math
from dataclasses import asdict, dataclass

import numpy as np

from filters.diversity import assign
from filters.methods import Fitted, method
from filters.recipe import Recipe
from filters.rows import Rows
from filters.scoring import ZParams, draws, spread
from filters.select import REASONS, Cut
from filters.stats import CorpusStats
from probes.errors import CurateError

KEPT, ERROR, TOO_SHORT, TOO_LONG, BELOW = (
    REASONS.index(r) for r in ("kept", "error", "too_short", "too_long", "below_threshold")
)
BUDGET = REASONS.index("budget")


@dataclass
class Rule:
    method: str
    mode: str
    temperature: float  # in the score's units: the recipe's temperature times the score spread
    seed: int
    threshold: float | None
    min_tokens: int
    max_tokens: int
    zparams: ZParams | None
    centroids: list[list[float]] | None = None

    def evaluate(self, rows: Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(reason code, score, key) per row; score and key are NaN for unusable rows."""
        m = method(self.method)
        ok = rows.ok
        score = np.full(len(rows), np.nan)
        if ok.any():
            score[ok] = m.score(rows, Fitted(self.zparams, self.seed))
        reason = np.where(ok, KEPT, ERROR).astype(np.uint8)
        short = ok & (rows.lengths < self.min_tokens)
        long = ok & ~short & (rows.lengths > self.max_tokens)
        if not self.max_tokens:
            long[:] = False
        reason[short], reason[long] = TOO_SHORT, TOO_LONG
        if self.threshold is not None:
            reason[ok & ~short & ~long & ~(score >= self.threshold)] = BELOW
        key = score
        if self.mode == "sample" and m.samples:
            key = score / self.temperature - np.log(-np.log(draws(rows.tie, self.seed)))
        return reason, score, key

    def clusters(self, rows: Rows) -> np.ndarray:
        """The diversity cluster of every row (0 without diversity)."""
        if self.centroids is None:
            return np.zeros(len(rows), np.int32)
        return assign(rows.neurons, self.zparams, np.array(self.centroids))


def fit_rule(recipe: Recipe, stats: CorpusStats, columns: list[str], base: list[float]) -> Rule:
    """The rule of `recipe` for a corpus with these statistics, neuron columns and neuron-set
    weights (`base`, overridden per column by score.weights)."""
    sel = recipe.select
    m = method(recipe.score.method)
    zparams = None
    if recipe.score.method == "zsum" or recipe.diversity.clusters:
        unknown = sorted(set(recipe.score.weights) - set(columns))
        if unknown:
            raise CurateError(
                f"score.weights names {unknown[0]!r}, which is not a probed neuron "
                f"(probed: {', '.join(columns)})"
            )
        n, moments = stats.usable.n, stats.usable
        zparams = ZParams(
            tuple(columns),
            tuple(float(x) for x in moments.mean),
            tuple(spread(n, float(m2)) for m2 in moments.m2),
            tuple(
                float(recipe.score.weights.get(c, b)) for c, b in zip(columns, base, strict=True)
            ),
        )
    temperature = sel.temperature
    if sel.mode == "sample" and m.spread_scaled:
        temperature *= _score_spread(recipe.score.method, stats, zparams)
    return Rule(
        method=recipe.score.method,
        mode=sel.mode,
        temperature=temperature,
        seed=sel.seed,
        threshold=sel.threshold if sel.mode == "threshold" else None,
        min_tokens=sel.min_tokens,
        max_tokens=sel.max_tokens,
        zparams=zparams,
    )


def _score_spread(name: str, stats: CorpusStats, zparams: ZParams | None) -> float:
    """Standard deviation of the score over the length-eligible rows, from the pass's moments:
    for the z-scored sum, w' D C D w with C the eligible rows' covariance and D = 1 / std."""
    if name == "probe":
        moments = stats.eligible_probe
        return spread(moments.n, float(moments.m2[0]))
    moments = stats.eligible
    if moments.n == 0:
        return 1.0
    scaled = np.array(zparams.weight) / np.array(zparams.std)
    var = float(scaled @ moments.c2 @ scaled) / moments.n
    return math.sqrt(var) if var > 0 else 1.0


@dataclass
class CutSpec:
    """A rule plus its cuts: everything needed to decide one document. JSON via to_dict."""

    rule: Rule
    # (source name, or "*" without source caps; cluster) -> lowest kept (key, tie), or None
    cuts: dict[tuple[str, int], Cut | None]

    def to_dict(self) -> dict:
        out = asdict(self.rule)
        out["zparams"] = self.rule.zparams.to_dict() if self.rule.zparams else None
        out["cuts"] = [
            {
                "source": s,
                "cluster": c,
                "key": cut.key if cut else None,
                "tie": str(cut.tie) if cut else None,
            }
            for (s, c), cut in sorted(self.cuts.items())
        ]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "CutSpec":
        cuts = {
            (e["source"], e["cluster"]): Cut(e["key"], int(e["tie"]))
            if e["key"] is not None
            else None
            for e in data["cuts"]
        }
        fields = {k: v for k, v in data.items() if k != "cuts"}
        if fields["zparams"]:
            fields["zparams"] = ZParams.from_dict(fields["zparams"])
        return cls(Rule(**fields), cuts)

    def decide(self, rows: Rows, sources: list[str]) -> np.ndarray:
        """The reason code of each row (KEPT for a kept one); `sources[i]` names row i's source."""
        reason, _, key = self.rule.evaluate(rows)
        cluster = self.rule.clusters(rows)
        open_rows = reason == KEPT
        reason[open_rows] = BUDGET
        cells = {(sources[i], int(cluster[i])) for i in np.flatnonzero(open_rows).tolist()}
        names = np.array(sources, dtype=object)
        for source, c in cells:
            cut = self.cuts.get((source, c), self.cuts.get(("*", c)))
            mine = open_rows & (names == source) & (cluster == c)
            if cut is not None:
                reason[mine & cut.keeps(key, rows.tie)] = KEPT
        return reason
