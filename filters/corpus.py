"""The per-document table that selection works on, read from side files and/or shard text.

Scores come from the probe stage's side files; a text pass is made only for what side files
lack: token counts in another tokenizer, DSIR features, sources named by a record key, or a
recipe (random, dsir) that never runs the probe model.
"""

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from probes.errors import CurateError, ShardError
from probes.score_shards import read_side_meta, side_file
from probes.shards import (
    Document,
    chunked,
    iter_raw_rows,
    list_shards,
    read_documents,
    shard_root,
)

TEXT_BATCH = 256


@dataclass
class DocTable:
    """One entry per physical row of every shard, in shard then row order."""

    root: Path
    shards: list[str]  # paths relative to root
    shard: np.ndarray  # int32 index into shards
    row: np.ndarray  # int64 physical row
    ids: list[str]
    tokens: np.ndarray  # int64, in the budget tokenizer
    error: list[str | None]  # why a row is unusable, or None
    columns: list[str] = field(default_factory=list)  # neuron columns, side-file order
    neurons: np.ndarray | None = None  # float32 [rows, columns]
    probe_score: np.ndarray | None = None  # float64, NaN for unusable rows
    side_meta: dict | None = None  # metadata of the first side file (model, neurons, agg)
    source: np.ndarray | None = None  # int32 index into sources
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.error], dtype=bool)


SIDE_COLUMNS = ("row", "id", "n_tokens", "score", "error")


def side_files(shard_dir: Path, scores_dir: Path) -> tuple[list[Path], dict, list[str]]:
    """Every shard's side file, the first one's metadata and the neuron columns.

    All must exist and come from one model, neuron set and aggregation.
    """
    paths, meta0 = [], None
    for shard in list_shards(shard_dir):
        path = side_file(scores_dir, shard_dir, shard)
        if not path.is_file():
            raise CurateError(f"{path}: missing score side file for {shard}")
        meta = read_side_meta(path)
        key = {k: meta[k] for k in ("model_hash", "neurons", "agg")}
        if meta0 is None:
            meta0 = meta
        elif key != {k: meta0[k] for k in key}:
            raise CurateError(f"{path}: scored with other model/neurons/agg than {meta0['shard']}")
        paths.append(path)
    columns = [f"L{layer}N{index}" for layer, index, *_ in meta0["neurons"]] if meta0 else []
    return paths, meta0, columns


def side_file_rows(paths: list[Path]) -> int:
    """Rows in all side files, from their parquet footers (no data is read)."""
    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)


def from_side_files(shard_dir: Path, scores_dir: Path) -> DocTable:
    """Read the side file of every shard; all must come from one model, neuron set and agg."""
    shards = list_shards(shard_dir)
    root = shard_root(shard_dir)
    paths, meta0, columns = side_files(shard_dir, scores_dir)
    parts = [
        (i, pq.read_table(path, columns=[*SIDE_COLUMNS, *columns]), columns)
        for i, path in enumerate(paths)
    ]
    cat = {
        name: [t.column(name).to_numpy(zero_copy_only=False) for _, t, _ in parts]
        for name in ("row", "n_tokens", "score")
    }
    return DocTable(
        root=root,
        shards=[s.relative_to(root).as_posix() for s in shards],
        shard=np.concatenate([np.full(t.num_rows, i, np.int32) for i, t, _ in parts]),
        row=np.concatenate(cat["row"]).astype(np.int64),
        ids=[x for _, t, _ in parts for x in t.column("id").to_pylist()],
        tokens=np.concatenate(cat["n_tokens"]).astype(np.int64),
        error=[x for _, t, _ in parts for x in t.column("error").to_pylist()],
        columns=columns,
        neurons=np.concatenate(
            [
                np.stack([t.column(c).to_numpy(zero_copy_only=False) for c in columns], 1)
                for _, t, _ in parts
            ]
        ).astype(np.float32),
        probe_score=np.concatenate(cat["score"]).astype(np.float64),
        side_meta=meta0,
    )


def iter_shard_docs(
    shard_dir: Path, text_key: str, id_key: str, on_error: str
) -> Iterator[tuple[int, list[Document]]]:
    """(shard index, a batch of its documents) for every shard, in table order."""
    root = shard_root(shard_dir)
    for i, shard in enumerate(list_shards(shard_dir)):
        for batch in chunked(
            read_documents(shard, text_key, id_key, on_error, root=root), TEXT_BATCH
        ):
            yield i, batch


def from_text(
    shard_dir: Path,
    text_key: str,
    id_key: str,
    on_error: str,
    count: Callable[[list[str]], np.ndarray],
    visit: Callable[[list[Document]], None] | None = None,
) -> DocTable:
    """A table from one pass over the shard text: ids, errors and `count(texts)` tokens.

    `visit` sees every batch too (e.g. to hash DSIR features in the same pass).
    """
    root = shard_root(shard_dir)
    shards = list_shards(shard_dir)
    shard_idx, rows, ids, tokens, errors = [], [], [], [], []
    for i, batch in iter_shard_docs(shard_dir, text_key, id_key, on_error):
        counts = count([d.text if d.error is None else "" for d in batch])
        for doc, n in zip(batch, counts.tolist(), strict=True):
            error = doc.error if doc.error is not None or n > 0 else "text has no tokens"
            shard_idx.append(i)
            rows.append(doc.row)
            ids.append(doc.id)
            tokens.append(n)
            errors.append(error)
            if error == "text has no tokens" and on_error == "fail":
                raise ShardError(str(shards[i]), doc.row + 1, error)
        if visit is not None:
            visit(batch)
    return DocTable(
        root=root,
        shards=[s.relative_to(root).as_posix() for s in shards],
        shard=np.array(shard_idx, np.int32),
        row=np.array(rows, np.int64),
        ids=ids,
        tokens=np.array(tokens, np.int64),
        error=errors,
    )


def directory_source(rel: str) -> str:
    """The first directory of a shard's relative path; for a top-level shard, its name stem."""
    return rel.split("/")[0] if "/" in rel else rel.split(".")[0]


def assign_sources(table: DocTable, how: str) -> None:
    """Fill table.source: the shard's first directory ("directory"), or a dotted record key."""
    if how == "directory":
        names = [directory_source(s) for s in table.shards]
        per_shard = np.array([sorted(set(names)).index(n) for n in names], np.int32)
        table.sources = sorted(set(names))
        table.source = per_shard[table.shard] if len(table) else np.zeros(0, np.int32)
        return
    path = how.split(".")
    values: dict[tuple[int, int], str] = {}
    for i, rel in enumerate(table.shards):
        try:
            for row, raw in iter_raw_rows(table.root / rel):
                values[(i, row)] = _dotted(raw, path)
        except ShardError:  # rows after stream damage are unusable rows already
            pass
    pairs = zip(table.shard.tolist(), table.row.tolist(), strict=True)
    names = [values.get(pair, "(unknown)") for pair in pairs]
    table.sources = sorted(set(names))
    lookup = {name: i for i, name in enumerate(table.sources)}
    table.source = np.array([lookup[n] for n in names], np.int32)


def _dotted(raw: bytes | dict, path: list[str]) -> str:
    try:
        value: object = json.loads(raw) if isinstance(raw, bytes) else raw
        for part in path:
            value = value[part]  # type: ignore[index]
    except (ValueError, KeyError, TypeError, IndexError):
        return "(unknown)"
    return str(value)
