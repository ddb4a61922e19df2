"""Documents as selection sees them: columns of numbers per row, read from side files or text.

The exact path holds the whole corpus as one `Rows`; the streaming path and datatrove see it a
chunk at a time. Either way the same rule decides each row (filters/rule.py).
"""

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from probes import sidefile
from probes.errors import CurateError
from probes.shards import Document, chunked, dotted, list_shards, read_documents
from probes.shards import shard_root as root_of
from probes.storage import opened

TEXT_BATCH = 256
CHUNK_ROWS = 1 << 20


@dataclass
class Rows:
    shard: np.ndarray  # int32 index into Corpus.shards
    row: np.ndarray  # int64 physical row in its shard
    tie: np.ndarray  # uint64 id hash: the tie-break and the source of random draws
    tokens: np.ndarray  # int64 budget units: content tokens (or pixels), or 1 per row
    ok: np.ndarray  # bool: usable (no error)
    neurons: np.ndarray  # float32 [rows, columns]; 0 columns without side files
    probe_score: np.ndarray  # float64 side-file score (NaN: unusable or no side files)
    external: np.ndarray | None = None  # float64 score computed from the text (dsir)
    source: np.ndarray | None = None  # int32 index into the corpus's source names
    errors: list[str | None] | None = None  # the reason per row (exact path only)
    # int64 content tokens (or pixels) where the budget counts rows instead (`tokens` all 1):
    # what select.min_tokens / max_tokens bound
    length: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tie)

    @property
    def lengths(self) -> np.ndarray:
        return self.tokens if self.length is None else self.length

    def count_rows(self) -> None:
        """Make every row weigh 1 in the budget (documents, images), keeping its length."""
        self.length, self.tokens = self.lengths, np.ones(len(self), np.int64)

    def take(self, mask: np.ndarray) -> "Rows":
        pick = lambda x: None if x is None else x[mask]  # noqa: E731
        return replace(
            self,
            shard=self.shard[mask],
            row=self.row[mask],
            tie=self.tie[mask],
            tokens=self.tokens[mask],
            ok=self.ok[mask],
            neurons=self.neurons[mask],
            probe_score=self.probe_score[mask],
            external=pick(self.external),
            source=pick(self.source),
            errors=None,
            length=pick(self.length),
        )


@dataclass
class Corpus:
    """Where rows come from: the shard folder, its shards, and the side files' description."""

    root: Path
    shards: list[str]  # relative paths, in row order
    columns: list[str] = field(default_factory=list)  # neuron columns
    side_meta: dict | None = None  # the first side file's metadata (model, neurons, agg)
    side_paths: list[Path] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # names behind Rows.source
    per_row: bool = False  # the budget counts rows (documents, images), not side-file n_tokens

    @property
    def base_weights(self) -> list[float]:
        return sidefile.neuron_weights(self.side_meta) if self.side_meta else []


def open_side_files(shard_dir: Path, scores_dir: Path, per_row: bool = False) -> Corpus:
    """Every shard's side file; all must exist and come from one model, neuron set and agg.

    With `per_row` every usable row weighs 1 in the budget (a budget in documents or images)."""
    root = root_of(shard_dir)
    shards = list_shards(shard_dir)
    paths, meta0 = [], None
    for shard in shards:
        path = sidefile.path_for(scores_dir, shard_dir, shard)
        if not path.is_file():
            raise CurateError(f"{path}: missing score side file for {shard}")
        meta = sidefile.read_meta(path)
        key = {k: meta.get(k) for k in ("model_hash", "neurons", "agg")}
        if meta0 is None:
            meta0 = meta
        elif key != {k: meta0.get(k) for k in key}:
            raise CurateError(f"{path}: scored with other model/neurons/agg than {meta0['shard']}")
        paths.append(path)
    return Corpus(
        root=root,
        shards=[s.relative_to(root).as_posix() for s in shards],
        columns=sidefile.neuron_columns(meta0) if meta0 else [],
        side_meta=meta0,
        side_paths=paths,
        per_row=per_row,
    )


def side_file_rows(corpus: Corpus) -> int:
    """Rows in all side files, from their parquet footers (no data is read)."""
    return sum(_footer_rows(path) for path in corpus.side_paths)


def _footer_rows(path: Path) -> int:
    with opened(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def side_file_chunks(
    corpus: Corpus, rows: int = CHUNK_ROWS, neurons: bool = True, score: bool = True
) -> Iterator[Rows]:
    """The side files in row order (shard, then row), `rows` rows at a time, vectorised.

    A pass that needs no neuron columns or no probe score skips reading them (left empty).
    """
    columns = corpus.columns if neurons else []
    names = ["row", "id_hash", "n_tokens", "error", *(["score"] if score else []), *columns]
    for i, path in enumerate(corpus.side_paths):
        with opened(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(rows, columns=names):
                yield _from_batch(batch, i, columns, corpus.per_row)


def _from_batch(batch: pa.RecordBatch, shard: int, columns: list[str], per_row: bool) -> Rows:
    n = batch.num_rows
    col = batch.column
    neurons = np.empty((n, len(columns)), np.float32, order="F")  # column by column: contiguous
    for j, name in enumerate(columns):
        neurons[:, j] = col(name).to_numpy(zero_copy_only=False)
    has_score = "score" in batch.schema.names
    score = pc.fill_null(col("score"), float("nan")) if has_score else None
    rows = Rows(
        shard=np.full(n, shard, np.int32),
        row=np.asarray(col("row").to_numpy(), np.int64),
        tie=np.asarray(col("id_hash").to_numpy(), np.uint64),
        tokens=np.asarray(col("n_tokens").to_numpy(), np.int64),
        ok=pc.is_null(col("error")).to_numpy(zero_copy_only=False),
        neurons=neurons,
        probe_score=np.asarray(score.to_numpy(), np.float64) if has_score else np.full(n, np.nan),
    )
    if per_row:
        rows.count_rows()
    return rows


def read_side_files(corpus: Corpus) -> Rows:
    """The whole corpus as one Rows (the exact path), with each row's error."""
    names = ["row", "id_hash", "n_tokens", "score", "error", *corpus.columns]
    parts, errors = [], []
    for i, path in enumerate(corpus.side_paths):
        with opened(path) as f:
            table = pq.read_table(f, columns=names)
        parts.append(
            _from_batch(table.combine_chunks().to_batches()[0], i, corpus.columns, corpus.per_row)
            if table.num_rows
            else None
        )
        errors += table.column("error").to_pylist()
    return concat([p for p in parts if p is not None], len(corpus.columns), errors)


def concat(parts: list[Rows], columns: int, errors: list[str | None] | None = None) -> Rows:
    if not parts:
        empty = np.zeros(0)
        return Rows(
            empty.astype(np.int32),
            empty.astype(np.int64),
            empty.astype(np.uint64),
            empty.astype(np.int64),
            empty.astype(bool),
            np.zeros((0, columns), np.float32),
            empty,
            errors=[],
        )
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return Rows(
        shard=cat("shard"),
        row=cat("row"),
        tie=cat("tie"),
        tokens=cat("tokens"),
        ok=cat("ok"),
        neurons=np.concatenate([p.neurons for p in parts]),
        probe_score=cat("probe_score"),
        errors=errors,
        length=None if parts[0].length is None else cat("length"),
    )


def iter_shard_docs(
    shard_dir: Path, text_key: str, id_key: str, on_error: str, image_key: str | None = None
) -> Iterator[tuple[int, list[Document]]]:
    """(shard index, a batch of its documents) for every shard, in row order (images with
    `image_key`)."""
    root = root_of(shard_dir)
    for i, shard in enumerate(list_shards(shard_dir)):
        docs = read_documents(shard, text_key, id_key, on_error, root=root, image_key=image_key)
        for batch in chunked(docs, TEXT_BATCH):
            yield i, batch


def image_pixels(docs: list[Document]) -> np.ndarray:
    """Width x height of each document's image from its header (no decode); 0 where unreadable."""
    out = np.zeros(len(docs), np.int64)
    for i, doc in enumerate(docs):
        if doc.error is None:
            try:
                with Image.open(io.BytesIO(doc.media)) as image:
                    out[i] = image.width * image.height
            except (OSError, ValueError, Image.DecompressionBombError):
                pass
    return out


def scan_shards(
    shard_dir: Path,
    text_key: str,
    id_key: str,
    on_error: str,
    count: Callable[[list[Document]], np.ndarray],
    visit: Callable[[list[Document]], None] | None = None,
    image_key: str | None = None,
) -> tuple[Corpus, Rows]:
    """One pass over the shards: ids, errors and `count(docs)` budget units per row (recipes
    that never run the probe model; a row counted 0 is unusable). `visit` sees every batch too
    (e.g. DSIR features). With `image_key` the documents are images."""
    root = root_of(shard_dir)
    shards = list_shards(shard_dir)
    empty = sidefile.NO_TOKENS if image_key is None else sidefile.NOT_AN_IMAGE
    shard_idx, rows, ids, tokens, errors = [], [], [], [], []
    for i, batch in iter_shard_docs(shard_dir, text_key, id_key, on_error, image_key):
        counts = count(batch)
        for doc, n in zip(batch, counts.tolist(), strict=True):
            error = doc.error
            if error is None and n == 0:
                error = sidefile.unusable(shards[i], doc.row, empty, on_error)
            shard_idx.append(i)
            rows.append(doc.row)
            ids.append(doc.id)
            tokens.append(n)
            errors.append(error)
        if visit is not None:
            visit(batch)
    n = len(ids)
    corpus = Corpus(root=root, shards=[s.relative_to(root).as_posix() for s in shards])
    return corpus, Rows(
        shard=np.array(shard_idx, np.int32),
        row=np.array(rows, np.int64),
        tie=sidefile.id_hashes(ids),
        tokens=np.array(tokens, np.int64),
        ok=np.array([e is None for e in errors], dtype=bool),
        neurons=np.zeros((n, 0), np.float32),
        probe_score=np.full(n, np.nan),
        errors=errors,
    )


def directory_source(rel: str) -> str:
    """The first directory of a shard's relative path; for a top-level shard, its name stem."""
    return rel.split("/")[0] if "/" in rel else rel.split(".")[0]


def assign_sources(corpus: Corpus, rows: Rows, how: str) -> None:
    """Fill rows.source and corpus.sources: the shard's first directory ("directory"), or a
    dotted record key such as metadata.source."""
    if how == "directory":
        names = [directory_source(s) for s in corpus.shards]
        corpus.sources = sorted(set(names))
        per_shard = np.array([corpus.sources.index(n) for n in names], np.int32)
        rows.source = per_shard[rows.shard] if len(rows) else np.zeros(0, np.int32)
        return
    values: dict[tuple[int, int], str] = {}
    for i, rel in enumerate(corpus.shards):
        for doc in read_documents(corpus.root / rel, on_error="skip", root=corpus.root):
            values[(i, doc.row)] = dotted(doc.record, how) or "(unknown)"
    pairs = zip(rows.shard.tolist(), rows.row.tolist(), strict=True)
    names = [values.get(pair, "(unknown)") for pair in pairs]
    corpus.sources = sorted(set(names))
    lookup = {name: i for i, name in enumerate(corpus.sources)}
    rows.source = np.array([lookup[n] for n in names], np.int32)
