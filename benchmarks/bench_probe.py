"""Probe-engine throughput, side by side with what a user would otherwise write.

Why: the engine claims that tokenizing once, length-sorting, batching by padded-token count,
running in bf16 and stopping at the deepest probed layer makes probing several times faster than
a naive transformers loop and brings it within a small factor of what the CPU's matrix units
allow. This script checks that claim on one set of documents, in one run:

  (a) probe  - ProbeEngine(...).probe(texts), dtype auto (bf16 where the CPU has bf16 hardware);
  (b) bare   - the HF model forward of the same layers, fp32, fixed-size padded batches in the
               documents' original order, truncated to max_length (full depth = the full model);
  (c) naive  - one document at a time, fp32, AutoModel forward with output_hidden_states=True,
               the MLP neurons read with forward hooks;
  (d) GEMM   - torch.matmul FLOP/s in fp32 and bf16 on model-shaped matrices; the best bf16 figure
               gives the GEMM-bound limit in tokens/s for the layers run.

Tokens are counted as the input ids fed to the model (after truncation, special tokens included,
no padding): the same count for every contender. Each contender is warmed up once on a few
documents before it is timed; timings include tokenization. The table's GFLOP/s is the model's
FLOPs by the formula below divided by wall time; `cores` is process CPU time / wall time (below
the thread count: another job took CPU from the measurement). The last line printed is one JSON
object with the headline figures.

    python benchmarks/bench_probe.py [--docs N] [--model minilm-l6] [--layers 0,3,5]
"""

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import zip_longest
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from curate.demo_shards import build_demo_shards  # noqa: E402
from probes.batching import tokenize  # noqa: E402
from probes.engine import ProbeEngine, pick_dtype  # noqa: E402
from probes.hooks import mlp_width, n_layers, register_mlp_hook  # noqa: E402
from probes.models import LoadedModel, load_model  # noqa: E402
from probes.neuronset import Neuron, NeuronSet  # noqa: E402
from probes.shards import list_shards, read_documents  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"  # dev data, optional
WARMUP_DOCS = 16
GEMM_ROWS = 8192


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=300, help="documents to score (default 300)")
    parser.add_argument("--model", default="minilm-l6", help="model alias or folder")
    parser.add_argument(
        "--layers",
        default=None,
        help="comma-separated layers to probe (default: every layer, i.e. full depth)",
    )
    parser.add_argument("--neurons-per-layer", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the bare run")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="shard folder (else demo)")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the slow loop (c)")
    return parser.parse_args()


# --- documents ------------------------------------------------------------------------------


def load_texts(corpus: Path, n_docs: int) -> tuple[list[str], str]:
    """The first documents of each source in turn (a mix of lengths), or of the demo shards."""
    if corpus.is_dir() and any(corpus.rglob("*.jsonl*")):
        return _interleaved(corpus, n_docs), str(corpus)
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        demo = build_demo_shards(Path(tmp) / "demo")
        return _interleaved(demo, n_docs), f"demo shards ({corpus} not found)"


def _interleaved(root: Path, n_docs: int) -> list[str]:
    sources: dict[str, list[Path]] = {}
    for shard in list_shards(root):
        sources.setdefault(shard.relative_to(root).parts[0], []).append(shard)
    streams = [_texts(shards) for shards in sources.values()]
    texts = []
    for row in zip_longest(*streams):
        texts.extend(text for text in row if text is not None)
        if len(texts) >= n_docs:
            break
    return texts[:n_docs]


def _texts(shards: Sequence[Path]) -> Iterator[str]:
    for shard in shards:
        for doc in read_documents(shard):
            if doc.error is None and doc.text.strip():
                yield doc.text


# --- contenders -----------------------------------------------------------------------------


def probe_neurons(layers: Sequence[int], width: int, per_layer: int) -> NeuronSet:
    """`per_layer` neurons spread across the MLP width in each probed layer."""
    spread = [i * width // per_layer for i in range(per_layer)]
    neurons = tuple(Neuron(layer, index + layer) for layer in layers for index in spread)
    return NeuronSet(neurons=neurons, source="benchmark")


def timed(run: Callable[[Sequence[str]], object], texts: Sequence[str]) -> tuple[float, float]:
    """Wall seconds for `run(texts)` after one warm-up call on the first few documents, and the
    cores this process kept busy meanwhile (CPU time / wall time): below the thread count means
    something else on the machine took CPU from the measurement."""
    run(texts[:WARMUP_DOCS])
    start, cpu_start = time.perf_counter(), time.process_time()
    run(texts)
    wall = time.perf_counter() - start
    return wall, (time.process_time() - cpu_start) / wall


@contextlib.contextmanager
def only_layers(model: torch.nn.Module, depth: int) -> Iterator[None]:
    """Run just the first `depth` transformer blocks (what a user probing shallow layers would
    do by slicing the block list); the model is restored afterwards."""
    owner = model.encoder if hasattr(model, "encoder") else model
    name = "layer" if hasattr(model, "encoder") else "layers"
    full = getattr(owner, name)
    setattr(owner, name, torch.nn.ModuleList(full[:depth]))
    try:
        yield
    finally:
        setattr(owner, name, full)


def bare_runner(loaded: LoadedModel, depth: int, batch_size: int) -> Callable:
    """Plain padded fp32 batches in corpus order, up to and including layer `depth - 1`."""
    tokenizer, model = loaded.tokenizer, loaded.model

    @torch.inference_mode()
    def run(texts: Sequence[str]) -> None:
        with only_layers(model, depth):
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(
                    list(texts[start : start + batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=loaded.max_length,
                    return_tensors="pt",
                )
                model(**enc)

    return run


def naive_runner(loaded: LoadedModel, requests: dict[int, list[int]]) -> Callable:
    """One document at a time through the full model with output_hidden_states=True."""
    tokenizer, model = loaded.tokenizer, loaded.model

    @torch.no_grad()
    def run(texts: Sequence[str]) -> list[dict[int, torch.Tensor]]:
        acts: dict[int, torch.Tensor] = {}
        handles = [
            register_mlp_hook(
                model, loaded.model_type, layer, lambda a, k=layer: acts.update({k: a})
            )
            for layer in requests
        ]
        results = []
        try:
            for text in texts:
                enc = tokenizer(
                    text, truncation=True, max_length=loaded.max_length, return_tensors="pt"
                )
                model(**enc, output_hidden_states=True)
                results.append({k: acts[k][0, :, idx].amax(0) for k, idx in requests.items()})
        finally:
            for handle in handles:
                handle.remove()
        return results

    return run


# --- the GEMM-bound limit -------------------------------------------------------------------


def gemm_shapes(hidden: int, mlp: int) -> list[tuple[int, int, int]]:
    """[rows, in] x [in, out] for QKV, attention output, MLP up, MLP down, and the square."""
    return [
        (GEMM_ROWS, hidden, 3 * hidden),
        (GEMM_ROWS, hidden, hidden),
        (GEMM_ROWS, hidden, mlp),
        (GEMM_ROWS, mlp, hidden),
        (hidden, hidden, hidden),
    ]


def gemm_gflops(dtype: torch.dtype, shape: tuple[int, int, int], repeats: int = 5) -> float:
    """Best-of-`repeats` torch.matmul rate in GFLOP/s (2*M*K*N per product)."""
    rows, inner, cols = shape
    a = torch.randn(rows, inner).to(dtype)
    b = torch.randn(inner, cols).to(dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * rows * inner * cols / best / 1e9


def flops_per_token(hidden: int, mlp: int, layers_run: int, lengths: Sequence[int]) -> dict:
    """Dense 2*(4h^2 + 2hm) per layer, plus attention scores and values at the actual lengths:
    4*T*h per layer for a token in a document of T tokens, averaged over tokens."""
    dense = 2 * (4 * hidden * hidden + 2 * hidden * mlp) * layers_run
    mean_t = sum(t * t for t in lengths) / sum(lengths)  # token-weighted mean length
    attention = 4 * mean_t * hidden * layers_run
    return {"dense": dense, "attention": attention, "total": dense + attention, "mean_T": mean_t}


# --- report ---------------------------------------------------------------------------------


def cpu_summary() -> str:
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text()
        lines = info.splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if "model name" in line)
        flags = set(next(line for line in lines if line.startswith("flags")).split())
        fast = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
        model += f" [{', '.join(fast) or 'no bf16 hardware'}]"
    return f"{model}, {torch.get_num_threads()} threads"


def measure_gemm(hidden: int, mlp: int) -> dict[torch.dtype, dict[tuple, float]]:
    """GFLOP/s per model-shaped product, for fp32 and bf16."""
    return {
        dt: {shape: gemm_gflops(dt, shape) for shape in gemm_shapes(hidden, mlp)}
        for dt in (torch.float32, torch.bfloat16)
    }


def print_table(rows: list[tuple[str, float, int, float, float]], limit: float, peak: float):
    print()
    print(f"{'contender':<44} {'seconds':>8} {'tokens/s':>10} {'GFLOP/s':>8} {'cores':>6}")
    for label, seconds, tokens, flops, cores in rows:
        rate = f"{tokens / seconds:10.0f} {flops / seconds / 1e9:8.1f}"
        print(f"{label:<44} {seconds:8.2f} {rate} {cores:6.2f}")
    print(f"{'(d) bf16 GEMM-bound limit':<44} {'':>8} {limit:10.0f} {peak:8.1f}")


def build_contenders(
    args: argparse.Namespace,
    fast: LoadedModel,
    fp32: LoadedModel,
    neuron_set: NeuronSet,
    layers_run: int,
) -> dict[str, tuple[str, int, Callable]]:
    """name -> (table label, layers it runs, runner taking the texts)."""
    span, depth_total = f"layers 0-{layers_run - 1}", n_layers(fp32.model, fp32.model_type)
    dtype_name = str(fast.model.dtype).removeprefix("torch.")
    contenders = {
        "probe": (
            f"(a) probe engine, {dtype_name}, {span}",
            layers_run,
            ProbeEngine(fast, neuron_set).score,
        ),
        "bare": (
            f"(b) bare fp32 forward, batch {args.batch_size}, {span}",
            layers_run,
            bare_runner(fp32, layers_run, args.batch_size),
        ),
    }
    if not args.skip_naive:
        contenders["naive"] = (
            f"(c) naive per-doc loop, fp32, all {depth_total} layers",
            depth_total,
            naive_runner(fp32, neuron_set.requests()),
        )
    return contenders


def print_gemm(rates: dict, flops: dict, layers_run: int, hidden: int, mlp: int) -> None:
    print()
    print("GEMM GFLOP/s (torch.matmul, best of 5):")
    for shape in gemm_shapes(hidden, mlp):
        fp, bf = rates[torch.float32][shape], rates[torch.bfloat16][shape]
        print(f"  {'x'.join(map(str, shape)):<16} fp32 {fp:7.1f}   bf16 {bf:7.1f}")
    print(
        f"limit = bf16_GFLOP/s / flops_per_token; flops_per_token = L*2*(4h^2 + 2hm) + "
        f"L*4*h*E[T] = {flops['dense'] / 1e6:.2f}M + {flops['attention'] / 1e6:.2f}M "
        f"= {flops['total'] / 1e6:.2f} MFLOP (L={layers_run}, h={hidden}, m={mlp}, "
        f"token-weighted E[T]={flops['mean_T']:.0f})"
    )


def main() -> None:
    args = parse_args()
    dtype = pick_dtype("auto")
    dtype_name = str(dtype).removeprefix("torch.")
    fast = load_model(args.model, dtype)
    fp32 = load_model(args.model, torch.float32)
    hidden, mlp = fp32.model.config.hidden_size, fp32.model.config.intermediate_size
    depth_total = n_layers(fp32.model, fp32.model_type)
    layers = sorted({int(x) for x in args.layers.split(",")}) if args.layers else range(depth_total)
    width = mlp_width(fp32.model, fp32.model_type)
    neuron_set = probe_neurons(layers, width, args.neurons_per_layer)
    layers_run = max(layers) + 1

    texts, source = load_texts(args.corpus, args.docs)
    lengths = [len(doc.ids) for doc in tokenize(fp32.tokenizer, texts, fp32.max_length)]
    tokens = sum(lengths)
    load = os.getloadavg()
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_summary()}, load {load[0]:.2f}")
    print(f"# {len(texts)} docs from {source}: {tokens} tokens fed, {max(lengths)} max")
    print(f"# {args.model}: probing layers {list(layers)} ({len(neuron_set.neurons)} neurons)")

    contenders = build_contenders(args, fast, fp32, neuron_set, layers_run)
    runs = {name: timed(run, texts) for name, (_, _, run) in contenders.items()}
    tok_s = {name: tokens / wall for name, (wall, _) in runs.items()}

    rates = measure_gemm(hidden, mlp)
    best = {dt: max(r.values()) for dt, r in rates.items()}
    flops = flops_per_token(hidden, mlp, layers_run, lengths)
    limit = best[torch.bfloat16] * 1e9 / flops["total"]

    rows = [
        (
            label,
            runs[name][0],
            tokens,
            flops_per_token(hidden, mlp, depth, lengths)["total"] * tokens,
            runs[name][1],
        )
        for name, (label, depth, _) in contenders.items()
    ]
    print_table(rows, limit, best[torch.bfloat16])
    print_gemm(rates, flops, layers_run, hidden, mlp)

    naive = tok_s.get("naive")
    result = {
        "probe_tok_s": round(tok_s["probe"]),
        "bare_fp32_tok_s": round(tok_s["bare"]),
        "naive_tok_s": round(naive) if naive else None,
        "bf16_limit_tok_s": round(limit),
        "fraction_of_limit": round(tok_s["probe"] / limit, 3),
        "speedup_vs_naive": round(tok_s["probe"] / naive, 2) if naive else None,
        "speedup_vs_bare": round(tok_s["probe"] / tok_s["bare"], 2),
        "docs": len(texts),
        "tokens": tokens,
        "model": args.model,
        "layers_run": layers_run,
        "dtype": dtype_name,
        "gemm_fp32_gflops": round(best[torch.float32], 1),
        "gemm_bf16_gflops": round(best[torch.bfloat16], 1),
        "mflops_per_token": round(flops["total"] / 1e6, 3),
        "cpu": cpu_summary(),
        "load_1min": round(load[0], 2),
        "load_1min_end": round(os.getloadavg()[0], 2),
        "cores_busy": {name: round(cores, 2) for name, (_, cores) in runs.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
