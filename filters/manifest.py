"""manifest.json: what went in, what was kept, with which settings, and why the rest was not.

It holds no timestamps or timings, so the same inputs give the same bytes.
"""

import json
from pathlib import Path

from filters.recipe import Recipe
from filters.selection import Selection
from probes.atomic import write_atomic
from probes.version import TOOL_VERSION

MANIFEST = "manifest.json"


def build_manifest(
    selection: Selection,
    recipe: Recipe,
    tokenizer: str,
    side_meta: dict | None,
    shards: int,
    unit: str = "tokens",
) -> dict:
    """The manifest of a selection, from either path."""
    s = selection
    error = (s.kept_tokens - s.budget_tokens) / s.budget_tokens if s.budget_tokens else 0.0
    meta = side_meta or {}
    return {
        "tool_version": TOOL_VERSION,
        "input_docs": s.input_docs,
        "input_tokens": s.input_tokens,
        "skipped_rows": s.dropped.get("error", 0),
        "kept_docs": s.kept_docs,
        "kept_tokens": s.kept_tokens,
        "budget": recipe.select.budget,
        "budget_tokens": s.budget_tokens,
        "budget_unit": unit,  # what every *_tokens figure counts
        "budget_error": error,
        "budget_exceeds_corpus": not s.budget_reached,
        "threshold": s.threshold,
        "selection": s.path,
        "dropped": dict(sorted(s.dropped.items())),
        "tokens_by_source": {
            name: {"input": inp, "kept": kept} for name, (inp, kept) in s.tokens_by_source.items()
        },
        "shards": shards,
        "model": meta.get("model") or recipe.probe.model,
        "model_hash": meta.get("model_hash"),
        "neuron_set": recipe.probe.neurons if recipe.needs_probe else None,
        "neurons": meta.get("neurons"),
        "agg": meta.get("agg"),
        "backend": meta.get("backend"),  # what ran the model, at which precision
        "tokenizer": tokenizer,
        "recipe": recipe.to_dict(),
        "cut": s.spec.to_dict(),
    }


def write_manifest(out_dir: Path, manifest: dict) -> None:
    write_atomic(
        out_dir / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    )


def summary(manifest: dict) -> str:
    """A few lines for the terminal."""
    kept, budget = manifest["kept_tokens"], manifest["budget_tokens"]
    unit = manifest["budget_unit"]
    lines = [
        f"input: {manifest['input_docs']:,} documents, {manifest['input_tokens']:,} {unit} "
        f"({manifest['skipped_rows']:,} unusable rows skipped)",
        f"kept: {manifest['kept_docs']:,} documents, {kept:,} {unit} "
        f"(budget {budget:,}, {manifest['budget_error'] * 100:+.2f}%)",
    ]
    if manifest["budget_exceeds_corpus"]:
        lines.append(f"budget exceeds the eligible {unit}: every eligible document was kept")
    dropped = ", ".join(f"{k} {v:,}" for k, v in manifest["dropped"].items())
    if dropped:
        lines.append(f"dropped: {dropped}")
    if manifest["threshold"] is not None:
        lines.append(f"cut: selection key >= {manifest['threshold']:.6g}")
    return "\n".join(lines)
