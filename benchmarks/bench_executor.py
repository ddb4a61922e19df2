"""Scaling of the datatrove pipeline on datatrove's LocalPipelineExecutor: 1 to N workers.

Why: a user sizing a cluster run needs the per-node throughput of the scoring stage and how it
divides over workers; the filter stage (a reader, BudgetFilter, a writer) should cost little
beside it. This script runs the plan of docs/datatrove.md (score -> plan -> filter) on the same
shards once per worker count, each worker's model capped at cores / workers threads
(`RosettaScorer(threads=...)`), and prints wall time, tokens per second, speed-up and
efficiency (speed-up / workers) per stage, then a paper estimate of the node-hours to score 1B
and 100B tokens with each backend at the best measured worker count of this node.

Every worker count must keep the same documents as the first, per backend (else the script
stops with an error; backends differ a little in precision, so their kept sets may differ).
Times include each task's model load, as a real run pays it (the local executor's pool sends
each task its own copy of the steps; one worker runs the tasks in the calling process and loads
the model once), but not a backend's one-time export (onnx), which is cached before timing.

    python benchmarks/bench_executor.py [--corpus DIR] [--shards 8] [--docs-per-shard 40]
        [--workers 1,2] [--backends torch,onnx]

Last line: JSON with cpu, cores, tokens and, per backend and worker count, score_s, score_tok_s,
score_speedup, score_efficiency, filter_s, filter_speedup, filter_efficiency, and
node_hours_1b / node_hours_100b per backend.
"""

import argparse
import gzip
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from datatrove.executor import LocalPipelineExecutor  # noqa: E402

from curate.datatrove_steps import RosettaScorer, plan_stages  # noqa: E402
from curate.demo_shards import build_demo_shards  # noqa: E402
from filters.recipe import load_recipe  # noqa: E402
from probes.cpu import cpu_flags  # noqa: E402
from probes.shards import list_shards, read_documents  # noqa: E402

HEAD = (
    "backend",
    "workers",
    "thr/w",
    "score s",
    "tok/s",
    "speedup",
    "eff",
    "filter s",
    "speedup",
    "eff",
)
TABLE = "{:8} {:>7} {:>5} {:>8} {:>7} {:>7} {:>5} {:>8} {:>7} {:>5}"
SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"


def write_shards(source: Path, out: Path, shards: int, per_shard: int) -> Path:
    """`shards` JSON-lines shards of `per_shard` documents each, taken in turn from the source's
    shards (a mix of sources and lengths in every shard)."""
    streams = [read_documents(s, on_error="skip") for s in list_shards(source)]
    docs: list[dict] = []
    while len(docs) < shards * per_shard and streams:
        for stream in list(streams):
            doc = next(stream, None)
            if doc is None:
                streams.remove(stream)
            elif doc.error is None:
                docs.append({"id": doc.id, "text": doc.text})
    out.mkdir(parents=True)
    for s in range(shards):
        part = docs[s * per_shard : (s + 1) * per_shard]
        lines = "".join(json.dumps(d) + "\n" for d in part)
        (out / f"part-{s:03d}.jsonl").write_text(lines, encoding="utf-8")
    return out


def run_plan(shards: Path, work: Path, recipe, tasks: int, workers: int, threads: int, backend):
    """(score seconds, plan seconds, filter seconds, tokens scored, kept ids)."""
    times = []
    stages = plan_stages(str(shards), str(work), recipe, backend=backend, threads=threads)
    sizes = [(tasks, workers), (1, 1), (tasks, workers)]
    for i, (steps, (n_tasks, n_workers)) in enumerate(zip(stages, sizes, strict=True)):
        executor = LocalPipelineExecutor(
            steps, tasks=n_tasks, workers=n_workers, logging_dir=str(work / f"logs{i}")
        )
        start = time.perf_counter()
        executor.run()
        times.append(time.perf_counter() - start)
    tokens = 0
    for path in (work / "tagged").glob("*.jsonl.gz"):
        with gzip.open(path, "rt") as f:
            tokens += sum(json.loads(line)["metadata"]["n_tokens"] for line in f)
    kept = set()
    for path in (work / "kept").glob("*.jsonl.gz"):
        with gzip.open(path, "rt") as f:
            kept.update(json.loads(line)["id"] for line in f)
    return (*times, tokens, kept)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="shard folder (else ../shared/data/corpus, else demo)",
    )
    parser.add_argument("--shards", type=int, default=8, help="shards = tasks per stage")
    parser.add_argument("--docs-per-shard", type=int, default=40)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--backends", default="torch,onnx", help="comma-separated: torch, onnx")
    parser.add_argument("--recipe", default="rosetta-default")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    workers = [int(w) for w in args.workers.split(",")]
    recipe = load_recipe(args.recipe).replace(select={"budget": "30%"})
    tmp = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    source = args.corpus or (SHARED_CORPUS if SHARED_CORPUS.is_dir() else None)
    source = source or build_demo_shards(tmp / "demo")
    shards = write_shards(source, tmp / "shards", args.shards, args.docs_per_shard)
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512_bf16", "amx", "avx512_vnni")))
    load = os.getloadavg()[0]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {when}, {cpu_name()} {flags}, {cores} cores, load {load:.2f}")
    print(
        f"# {args.shards} shards x {args.docs_per_shard} docs from {source}; {args.recipe} at 30%"
    )
    print(TABLE.format(*HEAD))
    result: dict = {"cpu": cpu_name(), "cores": cores, "load_1min": round(load, 2)}
    for backend in args.backends.split(","):
        assert RosettaScorer(recipe, backend=backend).engine is not None  # export cached first
        base, reference_kept = None, None
        for w in workers:
            threads = max(1, cores // w)
            work = tmp / f"{backend}-w{w}"
            score_s, _, filter_s, tokens, kept = run_plan(
                shards, work, recipe, args.shards, w, threads, backend
            )
            reference_kept = reference_kept if reference_kept is not None else kept
            base = base or (score_s, filter_s)
            row = {
                "score_s": round(score_s, 2),
                "score_tok_s": round(tokens / score_s),
                "score_speedup": round(base[0] / score_s, 2),
                "score_efficiency": round(base[0] / score_s / w, 2),
                "filter_s": round(filter_s, 2),
                "filter_speedup": round(base[1] / filter_s, 2),
                "filter_efficiency": round(base[1] / filter_s / w, 2),
            }
            result[f"{backend}_w{w}"] = row
            result["tokens"] = tokens
            print(TABLE.format(backend, w, threads, *row.values()))
            if kept != reference_kept:
                raise SystemExit(f"{backend}, {w} workers: another kept set than 1 worker's")
        best = max(result[f"{backend}_w{w}"]["score_tok_s"] for w in workers)
        result[f"{backend}_node_hours_1b"] = round(1e9 / best / 3600, 1)
        result[f"{backend}_node_hours_100b"] = round(1e11 / best / 3600)
    print("\nnode-hours to score (this node, best worker count; a paper estimate, scoring only):")
    for backend in args.backends.split(","):
        print(
            f"  {backend:6} 1B tokens: {result[f'{backend}_node_hours_1b']:,.1f} h   "
            f"100B tokens: {result[f'{backend}_node_hours_100b']:,} h"
        )
    print(json.dumps(result))
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
