"""Training throughput of the bench's LM training loop against the GEMM bound of its dtype.

Why: `curate bench` spends most of its time in `curate.cpt.loop.train`; this measures that loop
(the real model and objective, AdamW, on real text when ../shared/data is present, else the
demo corpus) in fp32 and under bf16 autocast, and the machine's matmul peak for both dtypes in
the same run, so the ratio is honest on any CPU. FLOPs per token count the matmuls of forward
and backward (6 x the linear weights a token passes through, the attention products, and the
LM head: at every position for a causal model, at the masked share for a masked LM).

    python benchmarks/bench_train.py [--config default] [--steps 12]

Last line: JSON with tok_s per dtype, gemm_fp32_gflops, gemm_bf16_gflops, fraction_of_bound.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from curate.cpt import data, loop, model
from curate.cpt.config import load_config
from probes.shards import list_shards, read_documents

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"


def gemm_gflops(m: int, k: int, n: int, dtype: torch.dtype, repeats: int = 5) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * m * k * n / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def texts(limit: int = 400) -> list[str]:
    if SHARED.is_dir():
        folder = SHARED
    else:
        from curate.demo_shards import build_demo_shards

        folder = build_demo_shards(Path(tempfile.mkdtemp()) / "shards")
    out = []
    for shard in list_shards(folder):
        out += [d.text for d in read_documents(shard, on_error="skip") if d.error is None]
        if len(out) >= limit:
            break
    return out[:limit]


def flops_per_token(cfg, vocab: int, mask_prob: float) -> float:
    h, m, layers, t = cfg.hidden, cfg.mlp, cfg.layers, cfg.seq_len
    causal = cfg.objective == model.CAUSAL
    mlp = (3 if causal else 2) * h * m  # SwiGLU (gate, up, down) or GELU (up, down)
    linear = layers * (4 * h * h + mlp)  # q, k, v, o and the MLP, per token
    attention = layers * 2 * t * h  # q.k and attn.v, per token
    # the output matrix at every position (causal), or transform + output at masked positions
    head = h * vocab if causal else mask_prob * (h * h + h * vocab)
    return 6 * (linear + attention + head)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="default")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    config = load_config(args.config)
    tokenizer = model.load_tokenizer(config.model.tokenizer)
    seq, special = data.pack(data.token_ids(tokenizer, texts()), tokenizer, config.model.seq_len)
    per_step = config.train.batch * (config.model.seq_len - 2)
    result: dict = {"config": args.config, "threads": torch.get_num_threads()}
    for dtype in ("fp32", "bf16"):
        net = model.fresh_model(config.model, tokenizer, 0)
        train = loop.TrainConfig(**{**config.train.__dict__, "dtype": dtype})
        warm = loop.train(net, seq, special, 2 * per_step, train, 0, Path(tempfile.mkdtemp()), 0)
        del warm
        run = loop.train(
            net,
            seq,
            special,
            args.steps * per_step,
            train,
            1,
            Path(tempfile.mkdtemp()),
            tokenizer.mask_token_id,
        )
        result[f"tok_s_{dtype}"] = round(run.tokens_per_second)
    h, b = config.model.hidden, per_step
    result["gemm_fp32_gflops"] = round(gemm_gflops(b, h, config.model.mlp, torch.float32), 1)
    result["gemm_bf16_gflops"] = round(gemm_gflops(b, h, config.model.mlp, torch.bfloat16), 1)
    fpt = flops_per_token(config.model, len(tokenizer), config.train.mask_prob)
    result["mflops_per_token"] = round(fpt / 1e6, 2)
    for dtype in ("fp32", "bf16"):
        bound = result[f"gemm_{dtype}_gflops"] * 1e9 / fpt
        result[f"bound_tok_s_{dtype}"] = round(bound)
        result[f"fraction_of_bound_{dtype}"] = round(result[f"tok_s_{dtype}"] / bound, 3)
    result["auto_dtype"] = "bf16" if loop.autocast_dtype("auto") is not None else "fp32"
    for dtype in ("fp32", "bf16"):
        print(
            f"{dtype}: {result[f'tok_s_{dtype}']:,} tok/s of a {result[f'bound_tok_s_{dtype}']:,} "
            f"tok/s GEMM bound ({result[f'fraction_of_bound_{dtype}']:.0%})"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
