"""Benchmark the discovery correlation stage for minilm-l6 x mpnet-base (all MLP neurons).

Measures, in one run: the machine's float32 GEMM peak (a matmul of the same shapes), the
correlation stage's tokens/s and FLOP/s (z_A^T z_B into float64 plus the rotated-null squares),
one discovery pass over real text (both models' forward on every layer, aligned; with each
tokenizer's calls and texts), peak RSS, and the extrapolated time for 1M discovery tokens (two
forward passes + one correlation pass per token). The last line is JSON. `--pass-only` measures
the pass alone.

    python benchmarks/bench_discover.py [--units 2048] [--batches 2] [--pass-only]
"""

import argparse
import json
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from curate.demo_shards import build_demo_shards
from probes.discovery import Corpus, aligned_batches
from probes.discovery.run import full_capture
from probes.discovery.stream import CrossCorrelation
from probes.engine import pick_dtype
from probes.hooks import mlp_width, n_layers
from probes.models import load_model


def gemm_peak(m: int, k: int, n: int, repeats: int = 3) -> float:
    """Best float32 FLOP/s of an [m, k] x [k, n] product (the correlation stage's shape)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * m * k * n / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class CountingTokenizer:
    """Forwards to a tokenizer and counts its calls, the texts they tokenize and their time."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls, self.texts, self.seconds = tokenizer, 0, 0, 0.0

    def __call__(self, texts, *args, **kwargs):
        self.calls += 1
        self.texts += len(texts)
        start = time.perf_counter()
        encoded = self.tokenizer(texts, *args, **kwargs)
        self.seconds += time.perf_counter() - start
        return encoded

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)


def discovery_pass(models, data: Path, tokens: int, doc_tokens: int | None) -> dict:
    """One pass as discovery reads it (every MLP layer of all models, bf16 if fast): aligned
    tokens/s, wall and CPU seconds, and per model the tokenizer's calls, texts and seconds."""
    counted = [replace(m, tokenizer=CountingTokenizer(m.tokenizer)) for m in models]
    corpus = Corpus(data, counted[0], tokens, heldout=0.0, doc_tokens=doc_tokens)
    captures = [full_capture(m, None) for m in counted]
    start, cpu, units = time.perf_counter(), time.process_time(), 0
    for acts, _ in aligned_batches(corpus, captures, False, 2048, "forward"):
        units += acts[0].shape[0]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "tok_s": round(units / seconds, 1),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),  # this process only: the measure on a shared machine
        "aligned_tokens": units,
        "anchor_tokens": sum(corpus.tokens.values()),
        "documents": sum(corpus.docs.values()),
        "tokenizer_calls": {m.name: m.tokenizer.calls for m in counted},
        "texts_tokenized": {m.name: m.tokenizer.texts for m in counted},
        "tokenizer_seconds": {m.name: round(m.tokenizer.seconds, 3) for m in counted},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2048, help="Aligned tokens per batch.")
    parser.add_argument("--batches", type=int, default=2, help="Timed correlation batches.")
    parser.add_argument("--forward-tokens", type=int, default=2048, help="Anchor tokens read.")
    parser.add_argument("--doc-tokens", type=int, default=None, help="Per document (default: all).")
    parser.add_argument("--pass-only", action="store_true", help="Measure the pass only.")
    args = parser.parse_args()

    dtype = pick_dtype("auto")
    models = [load_model(name, dtype) for name in ("minilm-l6", "mpnet-base")]
    with tempfile.TemporaryDirectory() as tmp:
        data = build_demo_shards(Path(tmp) / "shards")
        one_pass = discovery_pass(models, data, args.forward_tokens, args.doc_tokens)
    fwd_tok_s = one_pass["tok_s"]
    print(f"discovery pass (both models, every layer, {dtype}): {fwd_tok_s:.1f} tok/s")
    print(f"tokenizer calls {one_pass['tokenizer_calls']}, texts {one_pass['texts_tokenized']}")
    print(f"tokenizer seconds {one_pass['tokenizer_seconds']} of {one_pass['seconds']} s")
    print(f"for {one_pass['anchor_tokens']} anchor tokens in {one_pass['documents']} documents")
    command = " ".join(["python", *sys.argv])
    if args.pass_only:
        print(f"command: {command}")
        print(json.dumps({"pass": one_pass}))
        return

    n_anchor = n_layers(models[0].model, "bert") * mlp_width(models[0].model, "bert")
    layers, width = n_layers(models[1].model, "mpnet"), mlp_width(models[1].model, "mpnet")
    print(f"threads {torch.get_num_threads()}, anchor {n_anchor} x partner {layers * width}")

    peak = gemm_peak(n_anchor, args.units, width)
    print(f"GEMM peak (float32, {n_anchor}x{args.units}x{width}): {peak / 1e9:.1f} GFLOP/s")

    cross = CrossCorrelation(n_anchor, layers, width, torch.Generator().manual_seed(0))
    z_anchor_t = torch.randn(n_anchor, args.units)
    z_partner = torch.randn(args.units, layers * width)
    cross.update(z_anchor_t[:, :64].contiguous(), z_partner[:64])  # warm up
    seconds = sum(_timed(lambda: cross.update(z_anchor_t, z_partner)) for _ in range(args.batches))
    units = args.units * args.batches
    flops = 2 * units * (n_anchor * layers * width + layers * width * width)
    corr_tok_s = units / seconds
    fraction = flops / seconds / peak
    print(f"correlation: {corr_tok_s:.1f} tok/s, {flops / seconds / 1e9:.1f} GFLOP/s")

    per_token = 2 / fwd_tok_s + 1 / corr_tok_s
    hours = 1e6 * per_token / 3600
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"1M discovery tokens: {hours:.2f} h (2 forward passes + correlation); peak RSS")
    print(f"{peak_rss_mb:.0f} MB; command: {command}")
    print(
        json.dumps(
            {
                "corr_tok_s": round(corr_tok_s, 1),
                "fraction_of_gemm_peak": round(fraction, 3),
                "peak_rss_mb": round(peak_rss_mb),
                "gemm_peak_gflops": round(peak / 1e9, 1),
                "forward_tok_s": round(fwd_tok_s, 1),
                "extrapolated_1m_tokens_h": round(hours, 2),
                "pass": one_pass,
            }
        )
    )


if __name__ == "__main__":
    main()
