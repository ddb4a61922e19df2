"""Probe throughput per backend, side by side with what a user would otherwise write, on any CPU.

Why: each backend (probes/backends/) claims to probe at a good fraction of what the CPU's matrix
units allow in the precision it runs, and never slower than a naive transformers loop. This
script checks that on one set of documents, in one run:

  backends - ProbeEngine(...).probe(texts) through each backend and precision it ships: torch
             (fp32, and bf16 where the CPU multiplies bf16 in hardware), onnx fp32 and int8;
  bare     - the HF model forward of the same layers, fp32, fixed-size padded batches in the
             documents' original order, truncated to max_length (full depth = the full model);
  naive    - one document at a time, fp32, AutoModel forward with output_hidden_states=True,
             the MLP neurons read with forward hooks;
  GEMM     - matrix-product peaks on model-shaped matrices, measured here in the same run: fp32
             (the best of torch and ONNX Runtime), bf16 (torch), int8 (ONNX Runtime's dynamically
             quantized MatMul, the kernel the int8 variant runs). A backend's limit is the peak of
             the precision it runs divided by the model's FLOPs per token; bf16 is measured even
             where it is emulated, but `auto` runs it only where the CPU has bf16 hardware.

Tokens are the input ids fed to the model (after truncation, special tokens included, no
padding): the same count for every contender. Each contender is warmed up once on a few
documents before it is timed (the onnx export is cached before timing); timings include
tokenization. `cores` is process CPU time / wall time (below the thread count: another job took
CPU from the measurement). Rank correlation is Spearman of the document scores against torch fp32,
with the shared top-10. The last line printed is one JSON object with the headline figures.

    python benchmarks/bench_probe.py [--docs N] [--model minilm-l6] [--layers 0,3,5]
        [--neurons default|spread] [--backends torch-fp32,torch-bf16,onnx-fp32,onnx-int8]
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
from importlib.resources import files
from itertools import zip_longest
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from curate.demo_shards import build_demo_shards  # noqa: E402
from probes.backends import backend_settings, load_for, rank_agreement  # noqa: E402
from probes.batching import tokenize  # noqa: E402
from probes.cpu import (
    cpu_flags,  # noqa: E402
    cpu_has_fast_bf16,  # noqa: E402
)
from probes.engine import ProbeEngine  # noqa: E402
from probes.hooks import mlp_width, n_layers, register_mlp_hook  # noqa: E402
from probes.models import LoadedModel, load_model  # noqa: E402
from probes.neuronset import Neuron, NeuronSet, load_neuron_set  # noqa: E402
from probes.shards import list_shards, read_documents  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"  # dev data, optional
DEFAULT_NEURONS = str(files("probes") / "data" / "default-neurons")
WARMUP_DOCS = 16
GEMM_ROWS = 8192
BACKENDS = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8")
REFERENCE = "torch-fp32"  # what rank correlations compare with
FAST_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512_vnni", "avx_vnni")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=300, help="documents to score (default 300)")
    parser.add_argument("--model", default="minilm-l6", help="model alias or folder")
    parser.add_argument(
        "--neurons",
        default="default",
        help="default: the shipped neuron set (minilm-l6); spread: --neurons-per-layer neurons "
        "spread over each probed layer",
    )
    parser.add_argument(
        "--layers", default=None, help="spread only: comma-separated layers (default: all)"
    )
    parser.add_argument("--neurons-per-layer", type=int, default=4)
    parser.add_argument(
        "--backends",
        default=None,
        help=f"comma-separated, of {', '.join(BACKENDS)} (default: all; torch-bf16 only where "
        "the CPU has bf16 hardware)",
    )
    parser.add_argument(
        "--tokens-per-batch", type=int, default=None, help="default: each backend's own"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the bare run")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="shard folder (else demo)")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the slow loop")
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


def spread_neurons(layers: Sequence[int], width: int, per_layer: int) -> NeuronSet:
    """`per_layer` neurons spread across the MLP width in each probed layer."""
    spread = [i * width // per_layer for i in range(per_layer)]
    neurons = tuple(Neuron(layer, index + layer) for layer in layers for index in spread)
    return NeuronSet(neurons=neurons, origin="benchmark")


def timed(run: Callable[[Sequence[str]], object], texts: Sequence[str]) -> tuple[float, float]:
    """Wall seconds for `run(texts)` after one warm-up call on the first few documents, and the
    cores this process kept busy meanwhile (CPU time / wall time)."""
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


def engine_runner(args, neuron_set: NeuronSet, backend: str, dtype: str) -> Callable:
    """The probe engine through one backend; the onnx export is made (and cached) here, before
    any timing."""
    settings = backend_settings(backend, dtype)
    engine = ProbeEngine(
        load_for(settings, args.model),
        neuron_set,
        tokens_per_batch=args.tokens_per_batch,
        backend=settings,
    )
    return lambda texts: engine.probe(texts).score


# --- the GEMM-bound limits ------------------------------------------------------------------


def gemm_shapes(hidden: int, mlp: int) -> list[tuple[int, int, int]]:
    """[rows, in] x [in, out] for QKV, attention output, MLP up, MLP down, and the square."""
    return [
        (GEMM_ROWS, hidden, 3 * hidden),
        (GEMM_ROWS, hidden, hidden),
        (GEMM_ROWS, hidden, mlp),
        (GEMM_ROWS, mlp, hidden),
        (hidden, hidden, hidden),
    ]


def best_seconds(run: Callable[[], object], repeats: int = 5) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def torch_gflops(dtype: torch.dtype, shape: tuple[int, int, int]) -> float:
    rows, inner, cols = shape
    a, b = torch.randn(rows, inner).to(dtype), torch.randn(inner, cols).to(dtype)
    return 2 * rows * inner * cols / best_seconds(lambda: torch.matmul(a, b)) / 1e9


def ort_gflops(shape: tuple[int, int, int], int8: bool, work: Path) -> float:
    """ONNX Runtime's rate for x @ W with W a constant (as in an exported model); `int8`: W
    quantized per channel by quantize_dynamic, x quantized at run time (the int8 variant)."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rows, inner, cols = shape
    weight = numpy_helper.from_array(np.random.randn(inner, cols).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, inner])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, cols])],
        [weight],
    )
    path = work / f"gemm-{inner}x{cols}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = path.with_suffix(".int8.onnx")
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True)
        path = quantized
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.randn(rows, inner).astype(np.float32)
    return 2 * rows * inner * cols / best_seconds(lambda: session.run(None, {"x": x})) / 1e9


def measure_gemm(hidden: int, mlp: int) -> dict[str, dict[tuple, float]]:
    """GFLOP/s (GOP/s for int8) per model-shaped product and precision."""
    shapes = gemm_shapes(hidden, mlp)
    with tempfile.TemporaryDirectory(prefix="bench-gemm-") as tmp:
        work = Path(tmp)
        return {
            "fp32 torch": {s: torch_gflops(torch.float32, s) for s in shapes},
            "fp32 onnxruntime": {s: ort_gflops(s, False, work) for s in shapes},
            "bf16 torch": {s: torch_gflops(torch.bfloat16, s) for s in shapes},
            "int8 onnxruntime": {s: ort_gflops(s, True, work) for s in shapes},
        }


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
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if "model name" in line)
    fast = ", ".join(f for f in FAST_FLAGS if f in cpu_flags()) or "no bf16 or VNNI hardware"
    return f"{model} [{fast}], {torch.get_num_threads()} threads"


def peaks(rates: dict[str, dict[tuple, float]]) -> dict[str, float]:
    """The best rate per precision over shapes and libraries."""
    best: dict[str, float] = {}
    for name, per_shape in rates.items():
        dtype = name.split()[0]
        best[dtype] = max(best.get(dtype, 0.0), max(per_shape.values()))
    return best


def print_gemm(rates: dict, flops: dict, layers_run: int, hidden: int, mlp: int) -> None:
    print()
    print("GEMM GFLOP/s (GOP/s for int8), best of 5:")
    names = list(rates)
    print(f"  {'shape':<16} " + " ".join(f"{n:>17}" for n in names))
    for shape in gemm_shapes(hidden, mlp):
        cells = " ".join(f"{rates[n][shape]:17.1f}" for n in names)
        print(f"  {'x'.join(map(str, shape)):<16} {cells}")
    print(
        f"limit(dtype) = peak(dtype) / flops_per_token; flops_per_token = L*2*(4h^2 + 2hm) + "
        f"L*4*h*E[T] = {flops['dense'] / 1e6:.2f}M + {flops['attention'] / 1e6:.2f}M "
        f"= {flops['total'] / 1e6:.2f} MFLOP (L={layers_run}, h={hidden}, m={mlp}, "
        f"token-weighted E[T]={flops['mean_T']:.0f})"
    )


def main() -> None:
    args = parse_args()
    fp32 = load_model(args.model, torch.float32)
    hidden, mlp = fp32.model.config.hidden_size, fp32.model.config.intermediate_size
    depth_total = n_layers(fp32.model, fp32.model_type)
    if args.neurons == "default":
        neuron_set = load_neuron_set(DEFAULT_NEURONS)
    else:
        layers = [int(x) for x in args.layers.split(",")] if args.layers else range(depth_total)
        width = mlp_width(fp32.model, fp32.model_type)
        neuron_set = spread_neurons(sorted(set(layers)), width, args.neurons_per_layer)
    layers_run = max(neuron_set.requests()) + 1

    texts, source = load_texts(args.corpus, args.docs)
    lengths = [len(doc.ids) for doc in tokenize(fp32.tokenizer, texts, fp32.max_length)]
    tokens = sum(lengths)
    load = os.getloadavg()
    default = backend_settings()
    default_name = f"{default['name']}-{default['dtype']}"
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_summary()}, load {load[0]:.2f}")
    print(f"# {len(texts)} docs from {source}: {tokens} tokens fed, {max(lengths)} max")
    print(
        f"# {args.model}: {len(neuron_set.neurons)} neurons in layers "
        f"{sorted(neuron_set.requests())}; default backend here: {default_name}"
    )

    wanted = args.backends.split(",") if args.backends else list(BACKENDS)
    if not args.backends and not cpu_has_fast_bf16():
        wanted.remove("torch-bf16")  # emulated: minutes per thousand tokens, and never auto
    runners = {b: engine_runner(args, neuron_set, *b.split("-")) for b in wanted}
    runs, scores = {}, {}
    for name, run in runners.items():
        result: dict = {}
        runs[name] = timed(lambda t, run=run, result=result: result.update(s=run(t)), texts)
        scores[name] = result["s"]
    runs["bare"] = timed(bare_runner(fp32, layers_run, args.batch_size), texts)
    if not args.skip_naive:
        runs["naive"] = timed(naive_runner(fp32, neuron_set.requests()), texts)
    tok_s = {name: tokens / wall for name, (wall, _) in runs.items()}

    rates = measure_gemm(hidden, mlp)
    peak = peaks(rates)
    flops = flops_per_token(hidden, mlp, layers_run, lengths)
    naive = tok_s.get("naive")
    result = {"cpu": cpu_summary(), "default_backend": default_name}
    result |= {f"gemm_{d}_gflops": round(peak[d], 1) for d in ("fp32", "bf16")}
    result["gemm_int8_gops"] = round(peak["int8"], 1)

    print()
    header = f"{'contender':<34} {'seconds':>8} {'tok/s':>8} {'limit':>8} {'of limit':>8}"
    print(f"{header} {'vs naive':>8} {'rank corr':>9} {'top10':>5} {'cores':>5}")
    for name, (wall, cores) in runs.items():
        dtype = name.split("-")[1] if name in runners else "fp32"
        limit = peak[dtype] * 1e9 / flops["total"]
        speedup = tok_s[name] / naive if naive else float("nan")
        corr, shared = (float("nan"), 0)
        agreement = f"{'-':>9} {'-':>5}"  # the bare and naive runs keep no scores
        if name in scores and REFERENCE in scores:
            corr, shared = rank_agreement(scores[REFERENCE], scores[name])
            agreement = f"{corr:9.4f} {shared:5d}"
        label = {"bare": f"bare fp32 forward, batch {args.batch_size}", "naive": "naive loop"}
        print(
            f"{label.get(name, name):<34} {wall:8.2f} {tok_s[name]:8.0f} {limit:8.0f} "
            f"{tok_s[name] / limit:8.3f} {speedup:8.2f} {agreement} {cores:5.2f}"
        )
        key = name.replace("-", "_")
        result[f"{key}_tok_s"] = round(tok_s[name])
        result[f"{key}_fraction_of_limit"] = round(tok_s[name] / limit, 3)
        result[f"{key}_speedup_vs_naive"] = round(speedup, 2) if naive else None
        if name in scores:
            result[f"{key}_rank_corr"] = round(corr, 4)
            result[f"{key}_top10_shared"] = shared
    print_gemm(rates, flops, layers_run, hidden, mlp)
    result |= {
        "docs": len(texts),
        "tokens": tokens,
        "model": args.model,
        "neurons": len(neuron_set.neurons),
        "layers_run": layers_run,
        "tokens_per_batch": args.tokens_per_batch or "backend default",
        "mflops_per_token": round(flops["total"] / 1e6, 3),
        "load_1min": round(load[0], 2),
        "load_1min_end": round(os.getloadavg()[0], 2),
        "cores_busy": {name: round(cores, 2) for name, (_, cores) in runs.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
