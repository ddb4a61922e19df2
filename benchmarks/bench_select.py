"""Selection at scale: the whole streaming filter, side files on disk -> kept row lists.

Writes synthetic side files (the real schema of probes/sidefile.py: id hashes, log-normal
document lengths with median ~400 tokens, correlated neuron columns, 0.1 % unusable rows) in
shards of 1M rows, then runs `curate filter`'s streaming path (`select_streaming`: one statistics
pass, the sketch's passes over the keys, one pass listing kept rows) at a 30 % budget with the
bundled rosetta-default recipe scoring those columns. Also checks the sketch against an exact
in-memory cut of the same keys. Side-file writing is not timed; peak RSS is measured in a fresh
child process that only selects.

    python benchmarks/bench_select.py [--rows 20000000] [--neurons 10] [--keep DIR]

Last line: JSON with rows, stream_rows_per_s, peak_rss_mb, budget_error (+ details).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from probes import sidefile

SHARD_ROWS = 1_000_000


def write_side_files(folder: Path, rows: int, neurons: int, seed: int = 0) -> Path:
    """Empty shard files (their side files name them) and one side file per shard."""
    rng = np.random.default_rng(seed)
    shards, scores = folder / "shards", folder / "scores"
    columns = [sidefile.column(5, i) for i in range(neurons)]
    meta_neurons = [[5, i, 0.0, 1.0] for i in range(neurons)]
    mix = rng.normal(size=(neurons, neurons)) / np.sqrt(neurons)
    for s, start in enumerate(range(0, rows, SHARD_ROWS)):
        n = min(SHARD_ROWS, rows - start)
        rel = f"part-{s:05d}.jsonl"
        (shards / rel).parent.mkdir(parents=True, exist_ok=True)
        (shards / rel).touch()
        error = np.where(rng.random(n) < 0.001, "invalid JSON", None)
        latent = rng.normal(size=(n, neurons)).astype(np.float32)
        values = (latent @ mix.astype(np.float32)).astype(np.float32)
        table = {
            "row": np.arange(n, dtype=np.int64),
            "id": pa.nulls(n, pa.string()),
            "id_hash": rng.integers(0, 2**63, n, dtype=np.uint64),
            "n_tokens": np.clip(rng.lognormal(6.0, 1.0, n), 1, 100_000).astype(np.int64),
            "truncated": np.zeros(n, bool),
            "score": pa.array(values.mean(1), mask=error != None),  # noqa: E711
            "error": pa.array(error, pa.string()),
            **{c: values[:, j] for j, c in enumerate(columns)},
        }
        meta = {"shard": rel, "neurons": meta_neurons, "model_hash": "synthetic", "agg": "max"}
        scores.mkdir(parents=True, exist_ok=True)
        schema = sidefile.schema(columns, meta)
        pq.write_table(pa.table(table, schema=schema), scores / (rel + sidefile.SUFFIX))
    return folder


def select_child(folder: Path) -> dict:
    """Run the streaming selection in this process (the child); return its figures."""
    from filters.recipe import load_recipe
    from filters.rows import open_side_files
    from filters.selection import select_streaming

    recipe = load_recipe("rosetta-default").replace(select={"budget": "30%", "min_tokens": 0})
    start = time.perf_counter()
    corpus = open_side_files(folder / "shards", folder / "scores")
    chosen = select_streaming(corpus, recipe)
    seconds = time.perf_counter() - start
    rows = chosen.input_docs + chosen.dropped.get("error", 0)
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "stream_rows_per_s": round(rows / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "budget_error": (chosen.kept_tokens - chosen.budget_tokens) / chosen.budget_tokens,
        "passes": chosen.extra["passes"] + 2,  # the statistics pass and the listing pass
        "kept_docs": chosen.kept_docs,
        "kept_rows_listed": int(sum(len(r) for r in chosen.kept_rows.values())),
    }


def exact_agrees(rows: int) -> dict:
    """The sketch's cut equals the exact in-memory cut on the same synthetic keys."""
    from filters.select import select, sketch_cut

    rng = np.random.default_rng(1)
    key, tie = rng.normal(size=rows), rng.integers(0, 2**63, size=rows, dtype=np.uint64)
    tokens = np.clip(rng.lognormal(6.0, 1.0, size=rows), 1, 100_000).astype(np.int64)
    budget = int(tokens.sum() * 0.3)
    start = time.perf_counter()
    chosen = select(key, tie, tokens, budget)
    exact_seconds = time.perf_counter() - start
    step = 1_000_000

    def chunks():
        return (
            (key[i : i + step], tie[i : i + step], tokens[i : i + step])
            for i in range(0, rows, step)
        )

    start = time.perf_counter()
    sketched = sketch_cut(chunks, budget)
    assert sketched.cut == chosen.cuts[(0, 0)], "sketch and exact cuts differ"
    return {
        "exact_cut_seconds": round(exact_seconds, 2),
        "sketch_cut_seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--neurons", type=int, default=10)
    parser.add_argument("--keep", type=Path, default=None, help="Keep the side files here.")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(select_child(args.child)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-select-") as tmp:
        folder = args.keep or Path(tmp)
        if not (folder / "scores").is_dir():
            start = time.perf_counter()
            write_side_files(folder, args.rows, args.neurons)
            print(f"wrote {args.rows:,} side-file rows in {time.perf_counter() - start:.0f} s")
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(folder)], capture_output=True, text=True
        )
        if child.returncode:
            sys.exit(child.stderr)
        result = json.loads(child.stdout.strip().splitlines()[-1])
    result.update(exact_agrees(min(args.rows, 10_000_000)), neurons=args.neurons)
    print(
        f"streaming filter: {result['rows']:,} rows in {result['seconds']} s "
        f"({result['stream_rows_per_s']:,} rows/s), peak RSS {result['peak_rss_mb']} MB, "
        f"budget error {result['budget_error']:+.2e}, {result['passes']} passes"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
