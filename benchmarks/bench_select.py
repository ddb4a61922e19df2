"""Selection of 10M synthetic (score, n_tokens) rows to a budget: time, peak RSS, budget error.

Rows mimic a web corpus: normal scores, log-normal document lengths (median ~400 tokens).
Both paths run: the exact in-memory cut and the streaming sketch (which must agree).
Last line: one JSON object with rows, seconds, peak_rss_mb, budget_error (exact path).
"""

import argparse
import json
import resource
import time

import numpy as np

from filters.select import select, sketch_cut


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--fraction", type=float, default=0.3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    key = rng.normal(size=args.rows)
    tie = rng.integers(0, 2**63, size=args.rows, dtype=np.uint64)
    tokens = np.clip(rng.lognormal(6.0, 1.0, size=args.rows), 1, 100_000).astype(np.int64)
    budget = int(tokens.sum() * args.fraction)
    start = time.perf_counter()
    chosen = select(key, tie, tokens, budget)
    seconds = time.perf_counter() - start
    error = (chosen.kept_tokens - budget) / budget

    step = 1_000_000

    def chunks():
        return (
            (key[i : i + step], tie[i : i + step], tokens[i : i + step])
            for i in range(0, args.rows, step)
        )

    start = time.perf_counter()
    sketched = sketch_cut(chunks, budget)
    sketch_seconds = time.perf_counter() - start
    assert sketched.cut == chosen.cuts[(0, 0)], "sketch and exact cuts differ"
    print(f"exact:  {seconds:.2f} s, kept {chosen.kept_tokens:,} of budget {budget:,}")
    print(f"sketch: {sketch_seconds:.2f} s in {sketched.passes} passes, same cut")
    print(
        json.dumps(
            {
                "rows": args.rows,
                "seconds": round(seconds, 3),
                "sketch_seconds": round(sketch_seconds, 3),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "budget_error": error,
            }
        )
    )


if __name__ == "__main__":
    main()
