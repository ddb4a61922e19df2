"""Proof of a selection: manifest.json (what went in, what was kept, with which settings) and
report.png (score histogram with the cut, tokens kept per source).

Both hold no timestamps or timings, so the same inputs give the same bytes.
"""

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from filters.corpus import DocTable
from filters.plan import CutSpec, Plan
from filters.recipe import Recipe
from filters.write import write_atomic
from probes.version import TOOL_VERSION

MANIFEST = "manifest.json"
REPORT = "report.png"
BINS = 50


def build_manifest(table: DocTable, plan: Plan, recipe: Recipe, tokenizer: str) -> dict:
    kept_by_source = Counter()
    input_by_source = Counter()
    for s, t, k, r in zip(
        table.source.tolist(), table.tokens.tolist(), plan.keep, plan.reason, strict=True
    ):
        if r != "error":
            input_by_source[table.sources[s]] += t
        if k:
            kept_by_source[table.sources[s]] += t
    totals = {
        "input_docs": plan.input_docs,
        "input_tokens": plan.input_tokens,
        "kept_docs": plan.kept_docs,
        "kept_tokens": plan.kept_tokens,
        "budget_tokens": plan.budget_tokens,
        "budget_reached": plan.budget_reached,
        "threshold": plan.threshold,
    }
    dropped = Counter(r for r in plan.reason if r is not None)
    return manifest_from_totals(
        totals,
        dropped,
        {n: (input_by_source[n], kept_by_source[n]) for n in table.sources},
        len(table.shards),
        table.side_meta,
        plan.spec,
        recipe,
        tokenizer,
        "exact",
    )


def manifest_from_totals(
    totals: dict,
    dropped: Counter,
    by_source: dict[str, tuple[int, int]],
    shards: int,
    side_meta: dict | None,
    spec: CutSpec,
    recipe: Recipe,
    tokenizer: str,
    selection: str,
) -> dict:
    """The manifest from a plan's totals; `selection` is "exact" (in memory) or "sketch"."""
    budget_tokens, kept_tokens = totals["budget_tokens"], totals["kept_tokens"]
    error = (kept_tokens - budget_tokens) / budget_tokens if budget_tokens else 0.0
    meta = side_meta or {}
    return {
        "tool_version": TOOL_VERSION,
        "input_docs": totals["input_docs"],
        "input_tokens": totals["input_tokens"],
        "skipped_rows": dropped.get("error", 0),
        "kept_docs": totals["kept_docs"],
        "kept_tokens": kept_tokens,
        "budget": recipe.select.budget,
        "budget_tokens": budget_tokens,
        "budget_error": error,
        "budget_exceeds_corpus": not totals["budget_reached"],
        "threshold": totals["threshold"],
        "selection": selection,
        "dropped": dict(sorted(dropped.items())),
        "tokens_by_source": {
            name: {"input": inp, "kept": kept} for name, (inp, kept) in by_source.items()
        },
        "shards": shards,
        "model": meta.get("model") or recipe.probe.model,
        "model_hash": meta.get("model_hash"),
        "neuron_set": recipe.probe.neurons if recipe.needs_probe else None,
        "neurons": meta.get("neurons"),
        "agg": meta.get("agg"),
        "tokenizer": tokenizer,
        "recipe": recipe.to_dict(),
        "cut": spec.to_dict(),
    }


def write_manifest(out_dir: Path, manifest: dict) -> Path:
    path = out_dir / MANIFEST
    write_atomic(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return path


@dataclass
class KeyHistogram:
    """Selection keys of the usable documents, all and kept, in 50 equal bins (report.png).

    The streaming path fills the counts chunk by chunk from the keys' range, so both paths draw
    the same picture for the same selection.
    """

    edges: np.ndarray
    usable: np.ndarray  # documents per bin
    kept: np.ndarray
    threshold: float | None  # the lowest kept key

    @classmethod
    def empty(cls, lowest: float, highest: float) -> "KeyHistogram":
        edges = np.histogram_bin_edges(np.array([lowest, highest]), bins=BINS)
        return cls(edges, np.zeros(BINS, np.int64), np.zeros(BINS, np.int64), None)

    def add(self, usable_keys: np.ndarray, kept_keys: np.ndarray) -> None:
        self.usable += np.histogram(usable_keys, self.edges)[0]
        self.kept += np.histogram(kept_keys, self.edges)[0]

    @classmethod
    def of(cls, key: np.ndarray, keep: np.ndarray, threshold: float | None) -> "KeyHistogram":
        """From every row's key (NaN: unusable) and keep flag."""
        usable = key[~np.isnan(key)]
        hist = cls.empty(usable.min(), usable.max()) if len(usable) else cls.empty(0.0, 1.0)
        hist.add(usable, key[keep])
        hist.threshold = threshold
        return hist


def write_report(out_dir: Path, hist: KeyHistogram, manifest: dict) -> Path:
    """Two panels: selection-key histogram (all vs kept) with the cut, tokens per source."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    width = np.diff(hist.edges)
    left.bar(hist.edges[:-1], hist.usable, width, align="edge", color="0.75", label="all documents")
    left.bar(hist.edges[:-1], hist.kept, width, align="edge", color="tab:blue", label="kept")
    if hist.threshold is not None:
        left.axvline(hist.threshold, color="tab:red", linestyle="--", label="cut")
    left.set_xlabel("selection key (score; plus Gumbel noise when sampling)")
    left.set_ylabel("documents")
    left.legend()
    by_source = manifest["tokens_by_source"]
    names = list(by_source)
    y = np.arange(len(names))
    right.barh(y, [by_source[n]["input"] for n in names], color="0.75", label="input")
    right.barh(y, [by_source[n]["kept"] for n in names], color="tab:blue", label="kept")
    right.set_yticks(y, names)
    right.set_xlabel("tokens")
    right.legend()
    fig.suptitle(
        f"kept {manifest['kept_tokens']:,} of {manifest['input_tokens']:,} tokens "
        f"(budget {manifest['budget_tokens']:,}) in {manifest['kept_docs']:,} documents"
    )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    path = out_dir / REPORT
    write_atomic(path, buffer.getvalue())
    return path


def summary(manifest: dict) -> str:
    """A few lines for the terminal."""
    kept, budget = manifest["kept_tokens"], manifest["budget_tokens"]
    lines = [
        f"input: {manifest['input_docs']:,} documents, {manifest['input_tokens']:,} tokens "
        f"({manifest['skipped_rows']:,} unusable rows skipped)",
        f"kept: {manifest['kept_docs']:,} documents, {kept:,} tokens "
        f"(budget {budget:,}, {manifest['budget_error'] * 100:+.2f}%)",
    ]
    if manifest["budget_exceeds_corpus"]:
        lines.append("budget exceeds the eligible tokens: every eligible document was kept")
    dropped = ", ".join(f"{k} {v:,}" for k, v in manifest["dropped"].items())
    if dropped:
        lines.append(f"dropped: {dropped}")
    if manifest["threshold"] is not None:
        lines.append(f"cut: selection key >= {manifest['threshold']:.6g}")
    return "\n".join(lines)
