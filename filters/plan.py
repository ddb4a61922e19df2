"""From a document table and a recipe to a selection plan: which rows are kept, and why not.

A plan also serializes to a `CutSpec`: the few numbers (z-score statistics, centroids, one
(key, tie) threshold per (source, cluster) cell) with which any worker can decide a document on
its own, the same way `curate filter` did. The datatrove filter step applies exactly that.
"""

import math
from dataclasses import dataclass

import numpy as np

from filters.corpus import DocTable
from filters.diversity import assign, fit_centroids
from filters.recipe import Budget, Recipe
from filters.scoring import (
    ZParams,
    doc_hashes,
    fit_zparams,
    score_spread,
    selection_keys,
    zsum,
)
from filters.select import REASONS, Cut, select
from probes.errors import CurateError

# Sample-mode temperatures of these methods count in standard deviations of the score; DSIR's
# log importance weights are used as they are (temperature 1 = importance resampling).
SPREAD_SCALED = ("zsum", "probe")


@dataclass
class CutSpec:
    """Everything needed to decide one document; JSON-serializable via to_dict."""

    method: str
    mode: str
    temperature: float  # in the score's units: the recipe's temperature times the score spread
    seed: int
    threshold: float | None
    min_tokens: int
    max_tokens: int
    zparams: ZParams | None
    centroids: list[list[float]] | None
    # (source name or "*" without source caps, cluster) -> lowest kept (key, tie)
    cuts: dict[tuple[str, int], Cut | None]

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "mode": self.mode,
            "temperature": self.temperature,
            "seed": self.seed,
            "threshold": self.threshold,
            "min_tokens": self.min_tokens,
            "max_tokens": self.max_tokens,
            "zparams": self.zparams.to_dict() if self.zparams else None,
            "centroids": self.centroids,
            "cuts": [
                {
                    "source": s,
                    "cluster": c,
                    "key": cut.key if cut else None,
                    "tie": str(cut.tie) if cut else None,
                }
                for (s, c), cut in sorted(self.cuts.items())
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "CutSpec":
        cuts = {
            (e["source"], e["cluster"]): Cut(e["key"], int(e["tie"]))
            if e["key"] is not None
            else None
            for e in data["cuts"]
        }
        zp = ZParams.from_dict(data["zparams"]) if data["zparams"] else None
        fields = {
            k: data[k]
            for k in (
                "method",
                "mode",
                "temperature",
                "seed",
                "threshold",
                "min_tokens",
                "max_tokens",
            )
        }
        return cls(**fields, zparams=zp, centroids=data["centroids"], cuts=cuts)

    def decide(
        self,
        ids: list[str],
        tokens: np.ndarray,
        sources: list[str],
        neurons: np.ndarray | None = None,
        probe_score: np.ndarray | None = None,
    ) -> list[str | None]:
        """None to keep a document, else the reason it is dropped (same reasons as the plan)."""
        hashes = doc_hashes(ids)
        score = _score(self.method, neurons, probe_score, self.zparams, len(ids))
        reason = _limits(tokens, score, self.min_tokens, self.max_tokens, self.threshold)
        if self.method == "dsir":
            raise CurateError(
                "dsir recipes select in `curate filter` only (features need the text)"
            )
        key = selection_keys(score, hashes, self.method, self.mode, self.temperature, self.seed)
        cluster = (
            assign(neurons, self.zparams, np.array(self.centroids))
            if self.centroids is not None
            else np.zeros(len(ids), np.int32)
        )
        out: list[str | None] = []
        for i in range(len(ids)):
            if reason[i] is not None:
                out.append(reason[i])
                continue
            c = int(cluster[i])
            cut = self.cuts.get((sources[i], c), self.cuts.get(("*", c)))
            kept = cut is not None and bool(cut.keeps(key[i : i + 1], hashes[i : i + 1])[0])
            out.append(None if kept else "budget")
        return out


@dataclass
class Plan:
    budget_tokens: int
    input_docs: int
    input_tokens: int
    keep: np.ndarray  # bool per table row
    reason: list[str | None]  # per table row: None if kept
    score: np.ndarray  # float64 per row (NaN: unusable)
    key: np.ndarray  # float64 per row (NaN: unusable)
    kept_tokens: int
    budget_reached: bool
    spec: CutSpec
    cluster: np.ndarray | None

    @property
    def kept_docs(self) -> int:
        return int(self.keep.sum())

    @property
    def threshold(self) -> float | None:
        """The lowest kept selection key (the global cut); None when nothing is kept."""
        kept = self.key[self.keep]
        return float(kept.min()) if len(kept) else None


def _score(
    method: str,
    neurons: np.ndarray | None,
    probe_score: np.ndarray | None,
    zparams: ZParams | None,
    n: int,
    external: np.ndarray | None = None,
) -> np.ndarray:
    if method == "zsum":
        return zsum(neurons, zparams)
    if method == "probe":
        return np.asarray(probe_score, dtype=np.float64)
    if method == "dsir":
        return external
    return np.zeros(n)


def _limits(
    tokens: np.ndarray, score: np.ndarray, lo: int, hi: int, threshold: float | None
) -> list[str | None]:
    reason: list[str | None] = [None] * len(tokens)
    for i, (t, s) in enumerate(zip(tokens.tolist(), score.tolist(), strict=True)):
        if t < lo:
            reason[i] = "too_short"
        elif hi and t > hi:
            reason[i] = "too_long"
        elif threshold is not None and not s >= threshold:
            reason[i] = "below_threshold"
    return reason


def make_plan(
    table: DocTable, recipe: Recipe, budget: Budget, dsir_score: np.ndarray | None = None
) -> Plan:
    """Score, filter by limits, and cut the table to the budget in one global selection."""
    sel, quotas, div = recipe.select, recipe.quotas, recipe.diversity
    ok = table.ok
    n_ok = int(ok.sum())
    input_tokens = int(table.tokens[ok].sum())
    budget_tokens = budget.resolve(input_tokens)
    hashes = doc_hashes(table.ids)
    zparams = None
    if recipe.score.method == "zsum" or div.clusters:
        base = [w for *_, w in table.side_meta["neurons"]]
        zparams = fit_zparams(table.neurons[ok], table.columns, recipe.score.weights, base)
        unknown = set(recipe.score.weights) - set(table.columns)
        if unknown:
            raise CurateError(
                f"score.weights names {sorted(unknown)[0]!r}, which is not a probed neuron "
                f"(probed: {', '.join(table.columns)})"
            )
    score = np.full(len(table), np.nan)
    if n_ok:
        score[ok] = _score(
            recipe.score.method,
            table.neurons[ok] if table.neurons is not None else None,
            table.probe_score[ok] if table.probe_score is not None else None,
            zparams,
            n_ok,
            dsir_score[ok] if dsir_score is not None else None,
        )
    reason: list[str | None] = ["error"] * len(table)
    threshold = sel.threshold if sel.mode == "threshold" else None
    limits = _limits(table.tokens[ok], score[ok], sel.min_tokens, sel.max_tokens, threshold)
    for i, r in zip(np.flatnonzero(ok).tolist(), limits, strict=True):
        reason[i] = r
    eligible = np.array([r is None for r in reason], dtype=bool)
    temperature = sel.temperature
    if sel.mode == "sample" and recipe.score.method in SPREAD_SCALED:
        temperature *= score_spread(score[eligible])
    key = np.full(len(table), np.nan)
    key[ok] = selection_keys(
        score[ok], hashes[ok], recipe.score.method, sel.mode, temperature, sel.seed
    )
    centroids, cluster = None, None
    if div.clusters and eligible.any():
        centroids = fit_centroids(
            table.neurons[eligible],
            zparams,
            hashes[eligible],
            div.clusters,
            div.iterations,
            sel.seed,
        )
        cluster = np.zeros(len(table), np.int32)
        cluster[eligible] = assign(table.neurons[eligible], zparams, centroids)
    source_caps = _source_caps(quotas.caps, table.sources, budget_tokens)
    idx = np.flatnonzero(eligible)
    chosen = select(
        key[idx],
        hashes[idx],
        table.tokens[idx],
        budget_tokens,
        source=table.source[idx] if source_caps else None,
        source_caps=source_caps,
        cluster=cluster[idx] if cluster is not None else None,
        cluster_cap=math.floor(div.cap * budget_tokens) if centroids is not None else None,
    )
    keep = np.zeros(len(table), dtype=bool)
    keep[idx] = chosen.keep
    for i, r in zip(idx.tolist(), chosen.reason.tolist(), strict=True):
        reason[i] = REASONS[r]
    spec = CutSpec(
        method=recipe.score.method,
        mode=sel.mode,
        temperature=temperature,
        seed=sel.seed,
        threshold=threshold,
        min_tokens=sel.min_tokens,
        max_tokens=sel.max_tokens,
        zparams=zparams,
        centroids=centroids.tolist() if centroids is not None else None,
        cuts={
            (table.sources[s] if source_caps else "*", c): cut
            for (s, c), cut in chosen.cuts.items()
        },
    )
    return Plan(
        budget_tokens=budget_tokens,
        input_docs=n_ok,
        input_tokens=input_tokens,
        keep=keep,
        reason=reason,
        score=score,
        key=key,
        kept_tokens=chosen.kept_tokens,
        budget_reached=chosen.budget_reached,
        spec=spec,
        cluster=cluster,
    )


def _source_caps(caps: dict[str, float], sources: list[str], budget: int) -> dict[int, int]:
    for name in caps:
        if name not in sources:
            raise CurateError(
                f"quotas.caps names source {name!r}, which is not in the corpus "
                f"(sources: {', '.join(sources)})"
            )
    return {sources.index(name): math.floor(frac * budget) for name, frac in caps.items()}
