"""The score side-file contract, in one place: probe writes it; filter, datatrove and the
harness read it.

A side file is `<shard path>.scores.parquet` under the scores folder, row-aligned with its shard:
one row per physical row, with `row`, `id`, `id_hash` (the document's stable 64-bit hash: the
tie-break and the source of random draws, stored so selection never re-hashes ids), `n_tokens`
(content tokens of the whole document), `truncated`, `score` (the neuron set's weighted mean;
null for an unusable row), `error` (why a row is unusable) and one float32 column per neuron named
`L{layer}N{index}`. The parquet metadata key `rosetta_curate` holds JSON: the shard's relative
path, size and mtime, and the probe identity (every input that changes a row), so a rerun redoes
exactly the side files whose inputs changed.
"""

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from probes.errors import ShardError
from probes.shards import shard_root
from probes.storage import opened

SUFFIX = ".scores.parquet"
META_KEY = b"rosetta_curate"
FORMAT_VERSION = 3  # 2: the id_hash column; 3: the backend settings
NO_TOKENS = "text has no tokens"  # a row whose text tokenizes to nothing is unusable
NOT_AN_IMAGE = "not a readable image"  # an image row whose bytes do not open as an image
BASE_FIELDS = (
    ("row", pa.int64()),
    ("id", pa.string()),
    ("id_hash", pa.uint64()),
    ("n_tokens", pa.int64()),
    ("truncated", pa.bool_()),
    ("score", pa.float32()),
    ("error", pa.string()),
)
_COLUMN = re.compile(r"^L(\d+)N(\d+)$")


def column(layer: int, index: int) -> str:
    """The side-file column of a neuron."""
    return f"L{layer}N{index}"


def is_column(name: str) -> bool:
    return _COLUMN.match(name) is not None


def path_for(scores_dir: Path, shard_dir: Path, shard: Path) -> Path:
    """`scores_dir/<shard path relative to shard_dir>.scores.parquet`."""
    return scores_dir / (shard.relative_to(shard_root(shard_dir)).as_posix() + SUFFIX)


def schema(columns: Sequence[str], meta: dict) -> pa.Schema:
    fields = [*BASE_FIELDS, *((c, pa.float32()) for c in columns)]
    return pa.schema(fields).with_metadata({META_KEY: json.dumps(meta)})


def read_meta(path: Path) -> dict:
    with opened(path) as f:
        return json.loads(pq.read_schema(f).metadata[META_KEY])


def neuron_columns(meta: dict) -> list[str]:
    """The neuron columns of a side file, in file order."""
    return [column(layer, index) for layer, index, *_ in meta["neurons"]]


def neuron_weights(meta: dict) -> list[float]:
    """The neuron set's weight per neuron column."""
    return [weight for *_, weight in meta["neurons"]]


def identity(
    model: str,
    model_hash: str,
    neurons: Sequence[tuple[int, int, float, float]],
    agg: str,
    text_key: str,
    id_key: str,
    on_error: str,
    backend: dict,
    image_key: str | None = None,
) -> dict:
    """Everything a side file's rows depend on besides its shard: a rerun redoes any mismatch.

    `neurons` are (layer, index, threshold, weight); `backend` is what ran the model and at
    which precision (probes/backends/: another backend's numbers differ). The id key changes
    the `id` column and the error mode whether bad rows exist in the file at all, so a side
    file written under `skip` must not satisfy a run that asked to `fail`. `image_key` names
    an image model's input field (absent for text models).
    """
    images = {} if image_key is None else {"image_key": image_key}
    return {
        "format": FORMAT_VERSION,
        "model": model,
        "model_hash": model_hash,
        "neurons": [list(n) for n in neurons],
        "agg": agg,
        "text_key": text_key,
        "id_key": id_key,
        "on_error": on_error,
        "backend": backend,
        **images,
    }


def same_inputs(old: dict, new: dict) -> bool:
    """Whether a side file recorded with `old` metadata answers a run that would record `new`
    (only the tool version may differ)."""
    strip = lambda meta: {k: v for k, v in meta.items() if k != "tool_version"}  # noqa: E731
    return strip(old) == strip(new)


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """A stable 64-bit hash per document id (blake2b): the same on every machine and run."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest()) for i in ids],
        dtype=np.uint64,
    )


def no_tokens(shard: Path, row: int, on_error: str) -> str:
    """The empty-text rule: a row with no tokens stops a `fail` run, and is skipped otherwise."""
    return unusable(shard, row, NO_TOKENS, on_error)


def unusable(shard: Path, row: int, reason: str, on_error: str, member: str | None = None) -> str:
    """A row the model could not read (no tokens, not an image): stops a `fail` run, and is
    recorded with its reason otherwise. `member` names the row's file inside the shard (an
    ImageFolder image, a tar member): the error then reads `shard:member: reason`."""
    if on_error == "fail":
        if member is not None:
            raise ShardError(f"{shard}:{member}", None, reason)
        raise ShardError(str(shard), row + 1, reason)
    return reason if member is None else f"{reason} in {member}"
