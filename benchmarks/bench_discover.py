"""Benchmark the discovery correlation stage for minilm-l6 x mpnet-base (all MLP neurons).

Measures, in one run: the machine's float32 GEMM peak (a matmul of the same shapes), the
correlation stage's tokens/s and FLOP/s (z_A^T z_B into float64 plus the rotated-null squares),
both models' forward tokens/s on real text, peak RSS, and the extrapolated time for 1M
discovery tokens (two forward passes + one correlation pass per token). The last line is JSON.

    python benchmarks/bench_discover.py [--units 2048] [--batches 2]
"""

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from curate.demo_shards import build_demo_shards
from probes.discovery import Corpus, aligned_batches
from probes.discovery.run import full_source
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


def forward_tok_s(models, data: Path, tokens: int) -> float:
    """Aligned tokens/s of one pass capturing every MLP layer of all models (bf16 if fast)."""
    corpus = Corpus(data, models[0], tokens, heldout=0.0)
    sources = [full_source(m, None) for m in models]
    start, units = time.perf_counter(), 0
    for acts, _ in aligned_batches(corpus, sources, False, 2048, "forward"):
        units += acts[0].shape[0]
    return units / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2048, help="Aligned tokens per batch.")
    parser.add_argument("--batches", type=int, default=2, help="Timed correlation batches.")
    parser.add_argument("--forward-tokens", type=int, default=2048)
    args = parser.parse_args()

    dtype = pick_dtype("auto")
    models = [load_model(name, dtype) for name in ("minilm-l6", "mpnet-base")]
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

    with tempfile.TemporaryDirectory() as tmp:
        data = build_demo_shards(Path(tmp) / "shards")
        fwd_tok_s = forward_tok_s(models, data, args.forward_tokens)
    print(f"forward (both models, every layer, {dtype}): {fwd_tok_s:.1f} tok/s")

    per_token = 2 / fwd_tok_s + 1 / corr_tok_s
    hours = 1e6 * per_token / 3600
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"1M discovery tokens: {hours:.2f} h (2 forward passes + correlation); peak RSS")
    print(f"{peak_rss_mb:.0f} MB; command: {' '.join(['python', *sys.argv])}")
    print(
        json.dumps(
            {
                "corr_tok_s": round(corr_tok_s, 1),
                "fraction_of_gemm_peak": round(fraction, 3),
                "peak_rss_mb": round(peak_rss_mb),
                "gemm_peak_gflops": round(peak / 1e9, 1),
                "forward_tok_s": round(fwd_tok_s, 1),
                "extrapolated_1m_tokens_h": round(hours, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
