"""Independent recomputation of what a selection should be, from the files alone.

These helpers read side files and written shards with pyarrow, json and gzip only, and compute
selection keys with plain numpy from their documented definitions (README: the z-scored weighted
sum over neuron columns). They share no code with `filters/`, so a broken scoring or cut in the
product cannot hide by breaking the check the same way.
"""

import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import zstandard

META_KEY = b"rosetta_curate"


@dataclass
class Corpus:
    """One row per side-file row, in shard then row order."""

    ids: np.ndarray  # str
    shard: np.ndarray  # relative shard path per row
    source: np.ndarray  # the shard's first directory
    tokens: np.ndarray  # int64 n_tokens (the probe tokenizer's content tokens)
    usable: np.ndarray  # bool: no error
    neurons: np.ndarray  # float64 [rows, columns]
    columns: list[str]
    weights: np.ndarray  # the neuron set's weight per column (side-file metadata)

    def index(self) -> dict[str, int]:
        return {doc_id: i for i, doc_id in enumerate(self.ids.tolist())}


def read_side_files(scores_dir: Path) -> Corpus:
    ids, shard, tokens, usable, blocks = [], [], [], [], []
    columns: list[str] = []
    weights: list[float] = []
    for path in sorted(scores_dir.rglob("*.scores.parquet")):
        meta = json.loads(pq.read_schema(path).metadata[META_KEY])
        columns = [f"L{layer}N{index}" for layer, index, _, _ in meta["neurons"]]
        weights = [w for *_, w in meta["neurons"]]
        table = pq.read_table(path).to_pydict()
        rel = path.relative_to(scores_dir).as_posix().removesuffix(".scores.parquet")
        ids += table["id"]
        shard += [rel] * len(table["id"])
        tokens += table["n_tokens"]
        usable += [e is None for e in table["error"]]
        blocks.append(np.array([table[c] for c in columns], dtype=np.float64).T)
    shard_arr = np.array(shard)
    return Corpus(
        ids=np.array(ids),
        shard=shard_arr,
        source=np.array([s.split("/")[0] if "/" in s else s.split(".")[0] for s in shard]),
        tokens=np.array(tokens, dtype=np.int64),
        usable=np.array(usable, dtype=bool),
        neurons=np.concatenate(blocks),
        columns=columns,
        weights=np.array(weights, dtype=np.float64),
    )


def zscore_keys(corpus: Corpus, overrides: dict[str, float] | None = None) -> np.ndarray:
    """sum_j w_j (x_j - mean_j) / std_j with mean and population std over the usable rows.

    NaN for unusable rows; `overrides` (a recipe's score.weights) replace the set's weights.
    """
    x = corpus.neurons[corpus.usable]
    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1.0
    w = corpus.weights.copy()
    for column, weight in (overrides or {}).items():
        w[corpus.columns.index(column)] = weight
    keys = np.full(len(corpus.ids), np.nan)
    keys[corpus.usable] = ((x - mean) / std) @ w
    return keys


def read_rows(path: Path) -> list[dict]:
    """Every record of a written shard (jsonl, .gz, .zst or parquet)."""
    if path.name.endswith(".parquet"):
        return pq.read_table(path).to_pylist()
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.name.endswith(".zst"):
        data = (
            zstandard.ZstdDecompressor()
            .stream_reader(io.BytesIO(data), read_across_frames=True)
            .read()
        )
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def written_ids(out_dir: Path) -> dict[str, list[str]]:
    """Ids of the documents written under `out_dir`, per relative shard path."""
    shards = [
        p
        for p in sorted(out_dir.rglob("*"))
        if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"))
    ]
    return {p.relative_to(out_dir).as_posix(): [r["id"] for r in read_rows(p)] for p in shards}


def kept_mask(corpus: Corpus, out_dir: Path) -> np.ndarray:
    """Which side-file rows were written to `out_dir` (each at its own relative path)."""
    index = corpus.index()
    keep = np.zeros(len(corpus.ids), dtype=bool)
    for rel, ids in written_ids(out_dir).items():
        for doc_id in ids:
            i = index[doc_id]
            assert corpus.shard[i] == rel, f"{doc_id} written to {rel}, read from {corpus.shard[i]}"
            assert not keep[i], f"{doc_id} written twice"
            keep[i] = True
    return keep
