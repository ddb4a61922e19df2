"""Selection for corpora too large for an in-memory DocTable: stream the side files.

Pass 1 reads the side files in chunks for the totals and the z-score statistics (sums combined
over chunks), the sketch passes (`sketch_cut`) find the global (key, tie) cut for the budget,
and a last pass lists the kept rows. Keys are computed chunk by chunk with the same functions as
`make_plan`, so a document's key does not depend on the path. Only what one global threshold
expresses streams: topk, threshold and sample modes without quotas, diversity or DSIR.
"""

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from filters.corpus import SIDE_COLUMNS, directory_source
from filters.manifest import KeyHistogram
from filters.plan import SPREAD_SCALED, CutSpec, _limits, _score
from filters.recipe import Recipe
from filters.scoring import (
    ZParams,
    column_sums,
    doc_hashes,
    selection_keys,
    spread,
    zparams_from_sums,
)
from filters.select import Cut, rank_order, sketch_cut
from probes.errors import CurateError

CHUNK_ROWS = 65_536


@dataclass
class Chunk:
    shard: int
    row: np.ndarray  # int64 physical rows
    ids: list[str]
    tokens: np.ndarray  # int64
    ok: np.ndarray  # bool: the row is usable
    neurons: np.ndarray  # float32 [rows, columns]
    probe_score: np.ndarray  # float64


@dataclass
class StreamPlan:
    """What `make_plan` gives, without per-row arrays: kept/dropped rows per shard and totals."""

    kept_rows: dict[str, np.ndarray]
    dropped_rows: dict[str, np.ndarray]
    input_docs: int
    input_tokens: int
    budget_tokens: int
    kept_docs: int
    kept_tokens: int
    budget_reached: bool
    dropped: Counter
    input_by_source: Counter
    kept_by_source: Counter
    spec: CutSpec
    passes: int
    histogram: KeyHistogram

    @property
    def threshold(self) -> float | None:
        cut = self.spec.cuts[("*", 0)]
        return cut.key if cut is not None else None


def check_streamable(recipe: Recipe, rows: int, limit: int) -> None:
    """Raise, naming the recipe feature, if the recipe needs the whole table in memory."""
    features = [
        (recipe.score.method == "dsir", "score.method = 'dsir'"),
        (recipe.score.method == "random", "score.method = 'random' (reads shard text)"),
        (bool(recipe.quotas.caps), "quotas.caps"),
        (recipe.quotas.source != "directory", "quotas.source other than 'directory'"),
        (recipe.diversity.clusters > 0, "diversity.clusters"),
        (bool(recipe.select.tokenizer), "select.tokenizer (recounts tokens from shard text)"),
    ]
    for needed, name in features:
        if needed:
            raise CurateError(
                f"{name} needs exact selection, which holds the corpus in memory, but the "
                f"corpus has {rows:,} rows, over select.exact_max_rows = {limit:,}; raise it "
                "in the recipe or with --max-exact-rows"
            )


def iter_chunks(paths: list[Path], columns: list[str], rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
    """The side files in table order (shard, then row), `rows` rows at a time."""
    for i, path in enumerate(paths):
        for batch in pq.ParquetFile(path).iter_batches(rows, columns=[*SIDE_COLUMNS, *columns]):
            col = {name: batch.column(name) for name in batch.schema.names}
            yield Chunk(
                shard=i,
                row=col["row"].to_numpy(zero_copy_only=False).astype(np.int64),
                ids=col["id"].to_pylist(),
                tokens=col["n_tokens"].to_numpy(zero_copy_only=False).astype(np.int64),
                ok=np.array([e is None for e in col["error"].to_pylist()], dtype=bool),
                neurons=np.stack(
                    [col[c].to_numpy(zero_copy_only=False) for c in columns], 1
                ).astype(np.float32)
                if columns
                else np.zeros((batch.num_rows, 0), np.float32),
                probe_score=col["score"].to_numpy(zero_copy_only=False).astype(np.float64),
            )


def _fit_zparams(
    paths: list[Path], columns: list[str], recipe: Recipe, base: list[float]
) -> ZParams:
    """`fit_zparams` over the usable rows of all chunks: two passes of chunk sums."""
    n = sum(int(c.ok.sum()) for c in iter_chunks(paths, columns))
    parts = [column_sums(c.neurons[c.ok]) for c in iter_chunks(paths, columns)]
    mean = [math.fsum(p[j] for p in parts) / n if n else 0.0 for j in range(len(columns))]
    parts = [column_sums(c.neurons[c.ok], mean) for c in iter_chunks(paths, columns)]
    squares = [math.fsum(p[j] for p in parts) for j in range(len(columns))]
    return zparams_from_sums(n, mean, squares, columns, recipe.score.weights, base)


def _scored(chunk: Chunk, recipe: Recipe, zparams: ZParams | None) -> tuple[list, np.ndarray]:
    """Per row: the reason it cannot be selected (or None) and its score (NaN: unusable)."""
    sel, ok = recipe.select, chunk.ok
    score = np.full(len(ok), np.nan)
    score[ok] = _score(
        recipe.score.method, chunk.neurons[ok], chunk.probe_score[ok], zparams, int(ok.sum())
    )
    threshold = sel.threshold if sel.mode == "threshold" else None
    reason: list[str | None] = ["error"] * len(ok)
    limits = _limits(chunk.tokens[ok], score[ok], sel.min_tokens, sel.max_tokens, threshold)
    for i, r in zip(np.flatnonzero(ok).tolist(), limits, strict=True):
        reason[i] = r
    return reason, score


def _keys(
    chunk: Chunk, recipe: Recipe, zparams: ZParams | None, temperature: float
) -> tuple[list[str | None], np.ndarray, np.ndarray]:
    """Per row: the reason it cannot be selected (or None), its key and its hash."""
    sel, ok = recipe.select, chunk.ok
    reason, score = _scored(chunk, recipe, zparams)
    hashes = doc_hashes(chunk.ids)
    key = np.full(len(ok), np.nan)
    key[ok] = selection_keys(
        score[ok], hashes[ok], recipe.score.method, sel.mode, temperature, sel.seed
    )
    return reason, key, hashes


def _temperature(
    paths: list[Path], columns: list[str], recipe: Recipe, zparams: ZParams | None
) -> float:
    """select.temperature in the score's units, as `make_plan` sets it: two passes of sums."""
    sel = recipe.select
    if sel.mode != "sample" or recipe.score.method not in SPREAD_SCALED:
        return sel.temperature

    def eligible_scores() -> Iterator[np.ndarray]:
        for c in iter_chunks(paths, columns):
            reason, score = _scored(c, recipe, zparams)
            yield score[[r is None for r in reason]].reshape(-1, 1)

    n = sum(len(x) for x in eligible_scores())
    mean = math.fsum(column_sums(x)[0] for x in eligible_scores()) / n if n else 0.0
    squares = math.fsum(column_sums(x, [mean])[0] for x in eligible_scores())
    return sel.temperature * spread(n, squares)


def stream_plan(
    paths: list[Path], columns: list[str], meta: dict, shards: list[str], recipe: Recipe
) -> StreamPlan:
    """The plan `make_plan` would make (no caps), holding one chunk and the sketch at a time."""
    sel = recipe.select
    zparams = None
    if recipe.score.method == "zsum":
        unknown = set(recipe.score.weights) - set(columns)
        if unknown:
            raise CurateError(
                f"score.weights names {sorted(unknown)[0]!r}, which is not a probed neuron "
                f"(probed: {', '.join(columns)})"
            )
        zparams = _fit_zparams(paths, columns, recipe, [w for *_, w in meta["neurons"]])
    input_docs = input_tokens = 0
    for c in iter_chunks(paths, columns):
        input_docs += int(c.ok.sum())
        input_tokens += int(c.tokens[c.ok].sum())
    budget_tokens = recipe.budget.resolve(input_tokens)
    temperature = _temperature(paths, columns, recipe, zparams)
    key_range = [math.inf, -math.inf]  # of the usable rows' keys, for the report's histogram

    def eligible_keys():
        for c in iter_chunks(paths, columns):
            reason, key, hashes = _keys(c, recipe, zparams, temperature)
            if c.ok.any():
                key_range[:] = (
                    min(key_range[0], key[c.ok].min()),
                    max(key_range[1], key[c.ok].max()),
                )
            m = np.array([r is None for r in reason], dtype=bool)
            yield key[m], hashes[m], c.tokens[m]

    found = sketch_cut(eligible_keys, budget_tokens)
    hist = KeyHistogram.empty(*key_range) if input_docs else KeyHistogram.empty(0.0, 1.0)
    kept: dict[str, list[np.ndarray]] = {s: [] for s in shards}
    dropped_rows: dict[str, list[np.ndarray]] = {s: [] for s in shards}
    dropped, input_by, kept_by = Counter(), Counter(), Counter()
    kept_docs = kept_tokens = 0
    lowest: Cut | None = None
    for c in iter_chunks(paths, columns):
        reason, key, hashes = _keys(c, recipe, zparams, temperature)
        eligible = np.array([r is None for r in reason], dtype=bool)
        if found.everything:
            keep = eligible
        elif found.cut is None:
            keep = np.zeros(len(eligible), dtype=bool)
        else:
            keep = eligible & found.cut.keeps(key, hashes)
        rel = shards[c.shard]
        kept[rel].append(c.row[keep])
        dropped_rows[rel].append(c.row[~keep])
        dropped.update(
            r if r is not None else "budget" for r, k in zip(reason, keep, strict=True) if not k
        )
        source = directory_source(rel)
        input_by[source] += int(c.tokens[c.ok].sum())
        kept_by[source] += int(c.tokens[keep].sum())
        kept_docs += int(keep.sum())
        kept_tokens += int(c.tokens[keep].sum())
        hist.add(key[c.ok], key[keep])
        if keep.any():
            k, h = key[keep], hashes[keep]
            last = rank_order(k, h)[-1]
            cand = Cut(float(k[last]), int(h[last]))
            if lowest is None or (cand.key, cand.tie) < (lowest.key, lowest.tie):
                lowest = cand
    hist.threshold = lowest.key if lowest is not None else None
    spec = CutSpec(
        method=recipe.score.method,
        mode=sel.mode,
        temperature=temperature,
        seed=sel.seed,
        threshold=sel.threshold if sel.mode == "threshold" else None,
        min_tokens=sel.min_tokens,
        max_tokens=sel.max_tokens,
        zparams=zparams,
        centroids=None,
        cuts={("*", 0): lowest},
    )
    return StreamPlan(
        kept_rows={
            s: np.sort(np.concatenate(v or [np.zeros(0, np.int64)])) for s, v in kept.items()
        },
        dropped_rows={
            s: np.sort(np.concatenate(v or [np.zeros(0, np.int64)]))
            for s, v in dropped_rows.items()
        },
        input_docs=input_docs,
        input_tokens=input_tokens,
        budget_tokens=budget_tokens,
        kept_docs=kept_docs,
        kept_tokens=kept_tokens,
        budget_reached=not found.everything or kept_tokens >= budget_tokens,
        dropped=dropped,
        input_by_source=input_by,
        kept_by_source=kept_by,
        spec=spec,
        passes=found.passes,
        histogram=hist,
    )
