"""Benchmark discovery for minilm-l6 x mpnet-base (all MLP neurons): screened vs exact.

Runs `discover` twice on the same tokens: the default screened path (all pairs on a token
sample, then exact statistics for the candidate pairs; the null's on its token budget) and a
reference: exact all pairs (`curate discover --exact`), or with `--reference full-null` the
screened path with the null verified on every token (`--null-tokens 0`), or with `--reference
none` nothing (the screened run alone, for a long run). Reports, in one run:
the float32 and bf16 GEMM peaks at the correlation's shape, each path's wall time and the share
of it spent in the models' forward passes (with alignment), the screened path's peak RSS
(measured before the reference runs), the extrapolated time for 1M discovery tokens (the
screening paid once, the null's rotation on its budget only) and for a run of
`--max-tokens 1000000` (1M corpus tokens, the held-out split's included), and the recall: the
share of the reference's Rosetta neurons the default run also finds with the same buddy. Last
line: JSON.

    python benchmarks/bench_discover.py [--tokens 30000] [--data DIR] [--doc-tokens 128]
        [--reference exact|full-null|none]
        [--exact-result exact.json]   # the reference run, kept for reruns on the same tokens
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
from probes.cpu import pick_dtype
from probes.discovery import Corpus, ScreenSettings, Settings, discover
from probes.discovery import run as discovery_run
from probes.discovery.screen import Rotated
from probes.hooks import mlp_width, n_layers
from probes.models import load_model

SHARED_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus"


def gemm_peak(m: int, k: int, n: int, dtype: torch.dtype, repeats: int = 3) -> float:
    """Best FLOP/s of an [m, k] x [k, n] product in `dtype` (the correlation stage's shape)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * m * k * n / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Clock:
    """Seconds spent inside wrapped functions or generators, by name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def function(self, name: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._add(name, time.perf_counter() - start)

        return timed

    def generator(self, name: str, fn):
        def timed(*args, **kwargs):
            items = fn(*args, **kwargs)
            while True:
                start = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    return
                finally:
                    self._add(name, time.perf_counter() - start)
                yield item

        return timed

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def timed_discovery(models, corpus: Corpus, settings: Settings) -> tuple[object, dict]:
    """discover() with the forward passes (the aligned-batch stream), the screening and the
    null's rotation (paid on the null's tokens only) timed."""
    clock = Clock()
    original = discovery_run.aligned_batches, discovery_run.screen, Rotated.__call__
    discovery_run.aligned_batches = clock.generator("forward", original[0])
    discovery_run.screen = clock.function("screen", original[1])
    Rotated.__call__ = clock.function("null", original[2])
    try:
        start = time.perf_counter()
        found = discover(models, corpus, settings)
        wall = time.perf_counter() - start
    finally:
        discovery_run.aligned_batches, discovery_run.screen, Rotated.__call__ = original
    forward = clock.seconds.get("forward", 0.0)
    return found, {
        "seconds": round(wall, 1),
        "forward_seconds": round(forward, 1),
        "screen_seconds": round(clock.seconds.get("screen", 0.0), 1),
        "null_rotation_seconds": round(clock.seconds.get("null", 0.0), 1),
        "null_tokens": found.matching.get("null_tokens"),  # verified on
        "null_budget": settings.screen.null_tokens if settings.screen else None,
        "forward_share": round(forward / wall, 3),
        "rosetta": len(found.rosetta),
        "units": dict(found.units),
    }


REFERENCES = {
    "exact": replace(Settings(), screen=None),
    "full-null": replace(Settings(), screen=replace(ScreenSettings(), null_tokens=None)),
}


def extrapolated_minutes(timing: dict, tokens: int, target: int) -> float:
    """Minutes for `target` discovery tokens: the screening once, the null's rotation on its
    own token budget only, everything else per token."""
    null_budget = timing.get("null_budget") or target  # None: every token (or no null timed)
    null_seconds = timing.get("null_rotation_seconds", 0.0)
    rest = timing["seconds"] - timing["screen_seconds"] - null_seconds
    null_per_token = null_seconds / max(min(tokens, null_budget), 1)
    seconds = timing["screen_seconds"] + rest / tokens * target
    return (seconds + null_per_token * min(target, null_budget)) / 60


def rosetta_buddies(found) -> dict[int, list[int]]:
    """Each Rosetta neuron's buddy in every partner (what recall compares)."""
    return {int(i): [int(p.matches.buddy[i]) for p in found.partners] for i in found.rosetta}


def recall(wanted: dict[int, list[int]], got: dict[int, list[int]]) -> dict:
    """Share of the exact run's Rosetta neurons the screened run finds with the same buddies."""
    same = sum(1 for i, b in wanted.items() if got.get(i) == b)
    return {
        "exact_rosetta": len(wanted),
        "screened_rosetta": len(got),
        "found_same_buddies": same,
        "recall": round(same / max(len(wanted), 1), 4),
        "screened_only": len(set(got) - set(wanted)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=30_000, help="Discovery tokens (anchor).")
    parser.add_argument("--data", type=Path, default=None, help="Shard dir (default: shared).")
    parser.add_argument("--doc-tokens", type=int, default=128, help="Tokens per document.")
    parser.add_argument(
        "--reference",
        choices=[*sorted(REFERENCES), "none"],
        default="exact",
        help="What the default screened run is checked against: exact all pairs, or the "
        "screened path with the null verified on every token (--null-tokens 0); none: time "
        "the screened run alone (no recall).",
    )
    parser.add_argument(
        "--exact-result",
        type=Path,
        default=None,
        help="JSON file: reuse the reference run recorded there for the same tokens, else "
        "write it.",
    )
    args = parser.parse_args()

    dtype = pick_dtype("auto")
    models = [load_model(name, dtype) for name in ("minilm-l6", "mpnet-base")]
    n_anchor = n_layers(models[0].model, "bert") * mlp_width(models[0].model, "bert")
    width = mlp_width(models[1].model, "mpnet")
    peaks = {d: gemm_peak(n_anchor, 2048, width, d) / 1e9 for d in (torch.float32, torch.bfloat16)}
    print(f"threads {torch.get_num_threads()}, models in {dtype}, GEMM {n_anchor}x2048x{width}:")
    print(f"  fp32 {peaks[torch.float32]:.1f} GFLOP/s, bf16 {peaks[torch.bfloat16]:.1f} GFLOP/s")

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or (SHARED_CORPUS if SHARED_CORPUS.is_dir() else None)
        data = data or build_demo_shards(Path(tmp) / "shards")
        corpus = Corpus(data, models[0], args.tokens, heldout=0.25, doc_tokens=args.doc_tokens)
        screened, fast = timed_discovery(models, corpus, Settings())
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"screened: {fast}")
        reference = None if args.reference == "none" else reference_run(args, models, corpus)
    tokens = screened.units["discovery"]
    minutes_1m = extrapolated_minutes(fast, tokens, 1_000_000)
    # `--max-tokens 1000000` reads 1M corpus tokens, the held-out split's included
    per_corpus_token = tokens / sum(corpus.tokens.values())
    minutes_max_tokens_1m = extrapolated_minutes(fast, tokens, round(1e6 * per_corpus_token))
    # the screen is paid once: at 1M tokens the forward passes' share is the per-token one
    forward_share_1m = 1e6 * fast["forward_seconds"] / tokens / 60 / minutes_1m
    print(f"1M discovery tokens, screened: {minutes_1m:.1f} min extrapolated; peak RSS")
    print(f"{peak_rss_mb:.0f} MB; --max-tokens 1000000 (held-out included): ")
    print(f"{minutes_max_tokens_1m:.1f} min")
    result = {
        "discovery_tokens": tokens,
        "extrapolated_1m_tokens_min": round(minutes_1m, 1),
        "extrapolated_max_tokens_1m_min": round(minutes_max_tokens_1m, 1),
        "forward_share": fast["forward_share"],
        "forward_share_1m_tokens": round(forward_share_1m, 3),
        "peak_rss_mb": round(peak_rss_mb),
        "gemm_fp32_gflops": round(peaks[torch.float32], 1),
        "gemm_bf16_gflops": round(peaks[torch.bfloat16], 1),
    }
    if reference is not None:
        slow, wanted = reference
        matched = recall(wanted, rosetta_buddies(screened))
        ref = args.reference.replace("-", "_")
        minutes_1m_reference = extrapolated_minutes(slow, tokens, 1_000_000)
        print(f"recall vs {args.reference}: {matched}; 1M discovery tokens, {args.reference}: ")
        print(f"{minutes_1m_reference:.1f} min")
        result[f"extrapolated_1m_tokens_min_{ref}"] = round(minutes_1m_reference, 1)
        result[f"speedup_vs_{ref}"] = round(slow["seconds"] / fast["seconds"], 2)
        result.update(matched)
        result[args.reference] = slow
    print(f"data {data}; command: {' '.join(['python', *sys.argv])}")
    print(json.dumps({**result, "screened": fast}))


def reference_run(args, models, corpus: Corpus) -> tuple[dict, dict[int, list[int]]]:
    """The reference's timing and Rosetta buddies: from the cache file when it holds a run on
    the same tokens, else run now (and cache it)."""
    key = {"fingerprint": corpus.fingerprint, "tokens": dict(corpus.tokens)}
    if args.reference != "exact":
        key["reference"] = args.reference
    known = args.exact_result is not None and args.exact_result.is_file()
    cached = json.loads(args.exact_result.read_text()) if known else None
    if cached is not None and cached["key"] == key:
        print(f"{args.reference}: {cached['exact']} (from {args.exact_result}, same tokens)")
        return cached["exact"], {int(k): v for k, v in cached["buddies"].items()}
    found, slow = timed_discovery(models, corpus, REFERENCES[args.reference])
    wanted = rosetta_buddies(found)
    print(f"{args.reference}: {slow}")
    if args.exact_result:
        record = {"key": key, "exact": slow, "buddies": wanted}
        args.exact_result.write_text(json.dumps(record))
    return slow, wanted


if __name__ == "__main__":
    main()
