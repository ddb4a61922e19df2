"""One global token-weighted cut of a corpus by a recipe: exactly in memory, or streaming.

Both paths make one statistics pass (filters/stats.py), fit one rule (filters/rule.py), key every
row with it, and cut: `select_exact` holds the rows and handles quotas and diversity caps;
`select_streaming` re-reads the side files chunk by chunk and finds the same single cut with the
mergeable sketch (filters/select.py), holding only the kept row numbers. The result is the same
`Selection` either way.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from filters.diversity import assign, fit_centroids
from filters.methods import METHODS
from filters.recipe import Recipe
from filters.report import KeyHistogram
from filters.rows import Corpus, Rows, directory_source, side_file_chunks
from filters.rule import KEPT, CutSpec, Rule, fit_rule
from filters.select import REASONS, Cut, select, sketch_cut
from filters.stats import CorpusStats
from probes.errors import CurateError


@dataclass
class Selection:
    """Which rows are kept, why the others are not, and the totals the manifest reports."""

    path: str  # "exact" or "sketch"
    budget_tokens: int
    input_docs: int
    input_tokens: int
    kept_docs: int
    kept_tokens: int
    budget_reached: bool  # False when everything eligible fit under the budget
    dropped: dict[str, int]  # reason -> rows
    tokens_by_source: dict[str, tuple[int, int]]  # source -> (input, kept)
    spec: CutSpec
    histogram: KeyHistogram
    kept_rows: dict[str, np.ndarray]  # shard -> sorted physical rows
    dropped_rows: dict[str, np.ndarray]
    # the exact path also keeps per-row arrays, in Rows order
    keep: np.ndarray | None = None
    reason: np.ndarray | None = None  # uint8 codes into select.REASONS
    key: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def threshold(self) -> float | None:
        """The lowest kept selection key (the global cut); None when nothing is kept."""
        return self.histogram.threshold


def _stats(recipe: Recipe, columns: int, sources: int) -> CorpusStats:
    sel = recipe.select
    spread = sel.mode == "sample" and METHODS[recipe.score.method].spread_scaled
    return CorpusStats(columns, sel.min_tokens, sel.max_tokens, sources, spread)


def _counts(reason: np.ndarray) -> dict[str, int]:
    codes = np.bincount(reason, minlength=len(REASONS))
    return {REASONS[c]: int(n) for c, n in enumerate(codes) if c != KEPT and n}


def _rows_by_shard(corpus: Corpus, rows: Rows, mask: np.ndarray) -> dict[str, np.ndarray]:
    return {rel: np.sort(rows.row[(rows.shard == i) & mask]) for i, rel in enumerate(corpus.shards)}


def select_exact(corpus: Corpus, rows: Rows, recipe: Recipe) -> Selection:
    """The selection with every row in memory (rows.source filled for quotas)."""
    sel, quotas, div = recipe.select, recipe.quotas, recipe.diversity
    stats = _stats(recipe, len(corpus.columns), len(corpus.sources))
    stats.add(rows)
    rule = fit_rule(recipe, stats, corpus.columns, corpus.base_weights)
    budget = recipe.budget.resolve(stats.tokens)
    reason, _, key = rule.evaluate(rows)
    eligible = reason == KEPT
    cluster = None
    if div.clusters and eligible.any():
        centroids = fit_centroids(
            rows.neurons[eligible],
            rule.zparams,
            rows.tie[eligible],
            div.clusters,
            div.iterations,
            sel.seed,
        )
        rule.centroids = centroids.tolist()
        cluster = np.zeros(len(rows), np.int32)
        cluster[eligible] = assign(rows.neurons[eligible], rule.zparams, centroids)
    caps = _source_caps(quotas.caps, corpus.sources, budget)
    idx = np.flatnonzero(eligible)
    chosen = select(
        key[idx],
        rows.tie[idx],
        rows.tokens[idx],
        budget,
        source=rows.source[idx] if caps else None,
        source_caps=caps,
        cluster=cluster[idx] if cluster is not None else None,
        cluster_cap=math.floor(div.cap * budget) if cluster is not None else None,
    )
    keep = np.zeros(len(rows), dtype=bool)
    keep[idx] = chosen.keep
    reason[idx] = chosen.reason
    spec = CutSpec(
        rule,
        {(corpus.sources[s] if caps else "*", c): cut for (s, c), cut in chosen.cuts.items()},
    )
    hist = KeyHistogram.of(key, keep)
    input_by = stats.tokens_by_source
    kept_by = np.bincount(rows.source[keep], weights=rows.tokens[keep], minlength=len(input_by))
    return Selection(
        path="exact",
        budget_tokens=budget,
        input_docs=stats.docs,
        input_tokens=stats.tokens,
        kept_docs=int(keep.sum()),
        kept_tokens=chosen.kept_tokens,
        budget_reached=chosen.budget_reached,
        dropped=_counts(reason),
        tokens_by_source={
            name: (int(input_by[i]), int(kept_by[i])) for i, name in enumerate(corpus.sources)
        },
        spec=spec,
        histogram=hist,
        kept_rows=_rows_by_shard(corpus, rows, keep),
        dropped_rows=_rows_by_shard(corpus, rows, ~keep),
        keep=keep,
        reason=reason,
        key=key,
    )


def _source_caps(caps: dict[str, float], sources: list[str], budget: int) -> dict[int, int]:
    for name in caps:
        if name not in sources:
            raise CurateError(
                f"quotas.caps names source {name!r}, which is not in the corpus "
                f"(sources: {', '.join(sources)})"
            )
    return {sources.index(name): math.floor(frac * budget) for name, frac in caps.items()}


def check_streamable(recipe: Recipe, rows: int, limit: int) -> None:
    """Raise, naming the recipe feature, if the recipe needs the whole corpus in memory."""
    name = recipe.score.method
    features = [
        (not METHODS[name].streamable(), f"score.method = {name!r}"),
        (bool(recipe.quotas.caps), "quotas.caps"),
        (recipe.quotas.source != "directory", "quotas.source other than 'directory'"),
        (recipe.diversity.clusters > 0, "diversity.clusters"),
        (bool(recipe.select.tokenizer), "select.tokenizer (recounts tokens from shard text)"),
    ]
    for needed, feature in features:
        if needed:
            raise CurateError(
                f"{feature} needs exact selection, which holds the corpus in memory, but the "
                f"corpus has {rows:,} rows, over select.exact_max_rows = {limit:,}; raise it "
                "in the recipe or with --max-exact-rows"
            )


def select_streaming(corpus: Corpus, recipe: Recipe) -> Selection:
    """The selection `select_exact` would make (no caps), one side-file chunk at a time:
    one statistics pass, the sketch's passes over the keys, one pass listing the kept rows."""
    corpus.sources = sorted({directory_source(rel) for rel in corpus.shards})
    shard_source = np.array([corpus.sources.index(directory_source(r)) for r in corpus.shards])

    reads = METHODS[recipe.score.method].side_columns
    needs = {"neurons": "neurons" in reads, "score": "score" in reads}

    def chunks():
        for chunk in side_file_chunks(corpus, **needs):
            chunk.source = shard_source[chunk.shard]
            yield chunk

    stats = _stats(recipe, len(corpus.columns), len(corpus.sources))
    for chunk in chunks():
        stats.add(chunk)
    rule = fit_rule(recipe, stats, corpus.columns, corpus.base_weights)
    budget = recipe.budget.resolve(stats.tokens)
    key_range = [math.inf, -math.inf]  # of the usable rows' keys, for the report's histogram

    def eligible_keys():
        for chunk in chunks():
            reason, _, key = rule.evaluate(chunk)
            if chunk.ok.any():
                usable = key[chunk.ok]
                key_range[:] = min(key_range[0], usable.min()), max(key_range[1], usable.max())
            m = reason == KEPT
            yield key[m], chunk.tie[m], chunk.tokens[m]

    found = sketch_cut(eligible_keys, budget)
    hist = KeyHistogram.empty(*key_range) if stats.docs else KeyHistogram.empty(0.0, 1.0)
    return _list_kept(corpus, chunks, rule, found, stats, budget, hist)


def _list_kept(corpus, chunks, rule: Rule, found, stats: CorpusStats, budget, hist) -> Selection:
    """The last streaming pass: each chunk's kept and dropped rows, counted by reason."""
    kept: dict[str, list[np.ndarray]] = {s: [] for s in corpus.shards}
    dropped_rows: dict[str, list[np.ndarray]] = {s: [] for s in corpus.shards}
    reasons = np.zeros(len(REASONS), np.int64)
    kept_by = np.zeros(len(corpus.sources), np.int64)
    lowest: Cut | None = None
    for chunk in chunks():
        reason, _, key = rule.evaluate(chunk)
        eligible = reason == KEPT
        if found.everything:
            keep = eligible
        elif found.cut is None:
            keep = np.zeros(len(chunk), dtype=bool)
        else:
            keep = eligible & found.cut.keeps(key, chunk.tie)
        reason[eligible & ~keep] = REASONS.index("budget")
        reasons += np.bincount(reason, minlength=len(REASONS))
        for i in np.unique(chunk.shard).tolist():
            mine = chunk.shard == i
            kept[corpus.shards[i]].append(chunk.row[mine & keep])
            dropped_rows[corpus.shards[i]].append(chunk.row[mine & ~keep])
        kept_by += np.bincount(
            chunk.source[keep], weights=chunk.tokens[keep], minlength=len(kept_by)
        ).astype(np.int64)
        hist.add(key[chunk.ok], key[keep])
        if keep.any():
            k, t = key[keep], chunk.tie[keep]
            lowest_key = k.min()
            candidate = Cut(float(lowest_key), int(t[k == lowest_key].min()))
            if lowest is None or (candidate.key, candidate.tie) < (lowest.key, lowest.tie):
                lowest = candidate
    hist.threshold = lowest.key if lowest is not None else None
    kept_tokens = int(kept_by.sum())
    input_by = stats.tokens_by_source
    return Selection(
        path="sketch",
        budget_tokens=budget,
        input_docs=stats.docs,
        input_tokens=stats.tokens,
        kept_docs=int(sum(len(r) for v in kept.values() for r in v)),
        kept_tokens=kept_tokens,
        budget_reached=not found.everything or kept_tokens >= budget,
        dropped={REASONS[c]: int(n) for c, n in enumerate(reasons) if c != KEPT and n},
        tokens_by_source={
            name: (int(input_by[i]), int(kept_by[i])) for i, name in enumerate(corpus.sources)
        },
        spec=CutSpec(rule, {("*", 0): lowest}),
        histogram=hist,
        kept_rows={
            s: np.sort(np.concatenate(v or [np.zeros(0, np.int64)])) for s, v in kept.items()
        },
        dropped_rows={
            s: np.sort(np.concatenate(v or [np.zeros(0, np.int64)]))
            for s, v in dropped_rows.items()
        },
        extra={"passes": found.passes},
    )
