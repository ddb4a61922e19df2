"""A small mixed-format corpus cut from the demo shards, scored once per test session.

The full demo corpus takes about a minute to probe on two cores; 30 documents per shard keep
every format (jsonl, jsonl.gz, multi-frame jsonl.zst, parquet) at a few seconds.
"""

import functools
import gzip
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from curate.demo_shards import SHARDS, build_demo_shards
from probes.shards import iter_raw_rows

DOCS_PER_SHARD = 30


def write_small_corpus(demo: Path, out: Path, docs: int = DOCS_PER_SHARD) -> Path:
    for rel in SHARDS:
        rows = [raw for row, raw in iter_raw_rows(demo / rel) if row < docs]
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".parquet"):
            pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(demo / rel)), target)
            continue
        data = b"".join(r + b"\n" for r in rows)
        if rel.endswith(".gz"):
            data = gzip.compress(data, mtime=0)
        elif rel.endswith(".zst"):
            cctx = zstandard.ZstdCompressor()
            half = b"".join(r + b"\n" for r in rows[: docs // 2])
            data = cctx.compress(half) + cctx.compress(data[len(half) :])
        target.write_bytes(data)
    return out


@functools.cache
def scored_small_corpus() -> tuple[Path, Path]:
    """(shard dir, side-file dir), probed with the real MiniLM once per process.

    Probed with the bundled recipes' model and neuron set, so `curate filter` with any of them
    finds the side files fresh and never re-probes.
    """
    from filters.recipe import load_recipe
    from probes.prober import probe_directory

    base = Path(tempfile.mkdtemp(prefix="rosetta-small-"))
    demo = build_demo_shards(base / "demo")
    shards = write_small_corpus(demo, base / "shards")
    probe = load_recipe("base").probe
    probe_directory(shards, probe.neurons, base / "scores", probe.model, probe.agg, progress=False)
    return shards, base / "scores"


def read_jsonl_ids(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        return [json.loads(line)["id"] for line in f]
