"""The neuron-set artifact: a versioned folder of neurons.safetensors + meta.json + neurons.tsv.

Tensors hold numbers only (no pickle); meta.json holds provenance (models and their content
hashes, hook names, corpus fingerprint, thresholds, null rate, tool version, exact command);
neurons.tsv is the same Rosetta table for people. Keys "rosetta.*" have one row per Rosetta
neuron, best first; keys "all.*" have one row per anchor neuron, for population statistics.
"""

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from probes.discover import Corpus, Discovery
from probes.errors import CurateError
from probes.hooks import hook_name
from probes.neurons import Neuron, NeuronSet
from probes.version import TOOL_VERSION

FORMAT = "rosetta-curate/neuron-set"
FORMAT_VERSION = 1
TENSORS, META, TABLE = "neurons.safetensors", "meta.json", "neurons.tsv"
STAT_KEYS = ("frequency", "skew", "kurtosis", "selectivity")
THRESHOLD_STDS = 2.0  # a Rosetta neuron's probe threshold: mean + 2 std of its activation


@dataclass
class NeuronArtifact:
    meta: dict
    tensors: dict[str, torch.Tensor]

    @property
    def size(self) -> int:
        return len(self.tensors["rosetta.layer"])

    def rows(self) -> list[dict]:
        """One dict per Rosetta neuron, in rank order (what show/tsv/atlas print)."""
        t = {k: v.tolist() for k, v in self.tensors.items() if k.startswith("rosetta.")}
        partners = [m["name"] for m in self.meta["models"][1:]]
        classes = self.meta["corpus"]["classes"]
        rows = []
        for r in range(self.size):
            top = t["rosetta.top_class"][r]
            rows.append(
                {
                    "rank": r + 1,
                    "layer": t["rosetta.layer"][r],
                    "index": t["rosetta.index"][r],
                    "mean_corr": t["rosetta.mean_corr"][r],
                    "threshold": t["rosetta.threshold"][r],
                    "weight": t["rosetta.weight"][r],
                    "buddies": [
                        {
                            "model": name,
                            "layer": t["rosetta.buddy_layer"][r][p],
                            "index": t["rosetta.buddy_index"][r][p],
                            "corr": t["rosetta.corr"][r][p],
                            "heldout_corr": t["rosetta.heldout_corr"][r][p],
                            "null_corr": t["rosetta.null_corr"][r][p],
                        }
                        for p, name in enumerate(partners)
                    ],
                    **{key: t[f"rosetta.{key}"][r] for key in STAT_KEYS},
                    "top_class": classes[top] if 0 <= top < len(classes) else "",
                }
            )
        return rows

    def subset(self, ranks: torch.Tensor, weights: torch.Tensor, extra: dict) -> "NeuronArtifact":
        """The Rosetta rows at `ranks` (0-based, in that order) with new weights."""
        tensors = {
            k: (v[ranks] if k.startswith("rosetta.") else v).clone()
            for k, v in self.tensors.items()
        }
        tensors["rosetta.weight"] = weights.float()
        meta = {**self.meta, **extra, "neurons": len(ranks)}
        return NeuronArtifact(meta, tensors)

    def neuron_set(self, source: str) -> NeuronSet:
        neurons = tuple(
            Neuron(row["layer"], row["index"], row["threshold"], row["weight"])
            for row in self.rows()
        )
        if not neurons:
            raise CurateError(f"neuron set {source} holds no Rosetta neurons")
        return NeuronSet(neurons, source, model_hash=self.meta["models"][0]["content_hash"])


def from_discovery(
    discovery: Discovery, corpus: Corpus, command: str, null: dict | None
) -> NeuronArtifact:
    d = discovery
    r = d.rosetta
    partners = d.partners
    n_anchor = len(d.mean_corr)
    flat = torch.arange(n_anchor)
    anchor_layers = torch.tensor(d.anchor_layers)[flat // d.anchor_width]

    def per_partner(get) -> torch.Tensor:
        return torch.stack([get(p) for p in partners], dim=1)

    buddy = per_partner(lambda p: p.matches.buddy)
    buddy_layer = torch.full_like(buddy, -1)
    buddy_index = torch.full_like(buddy, -1)
    for i, p in enumerate(partners):
        has = buddy[:, i] >= 0
        buddy_layer[has, i] = torch.tensor(p.layers)[buddy[has, i] // p.width]
        buddy_index[has, i] = buddy[has, i] % p.width
    corr = per_partner(lambda p: p.matches.corr)
    stats = {key: d.stats[key] for key in STAT_KEYS}
    top_class = d.stats["top_class"].long() if d.classes else torch.full((n_anchor,), -1)
    rosetta_mask = torch.zeros(n_anchor, dtype=torch.bool)
    rosetta_mask[r] = True
    tensors = {
        "rosetta.layer": anchor_layers[r],
        "rosetta.index": (flat % d.anchor_width)[r],
        "rosetta.threshold": (d.anchor_mean + THRESHOLD_STDS * d.anchor_std)[r],
        "rosetta.weight": d.mean_corr[r],
        "rosetta.mean_corr": d.mean_corr[r],
        "rosetta.buddy_layer": buddy_layer[r],
        "rosetta.buddy_index": buddy_index[r],
        "rosetta.corr": corr[r],
        "rosetta.heldout_corr": per_partner(lambda p: p.heldout_corr)[r],
        "rosetta.null_corr": per_partner(lambda p: p.null.best)[r],
        "rosetta.top_class": top_class[r],
        **{f"rosetta.{key}": value[r] for key, value in stats.items()},
        "all.layer": anchor_layers,
        "all.index": flat % d.anchor_width,
        "all.mean": d.anchor_mean,
        "all.std": d.anchor_std,
        "all.buddy_corr": corr,
        "all.best_corr": per_partner(lambda p: p.matches.best),
        "all.null_best_corr": per_partner(lambda p: p.null.best),
        "all.rosetta": rosetta_mask,
        "all.top_class": top_class,
        "all.class_means": d.stats["class_means"],
        **{f"all.{key}": value for key, value in stats.items()},
    }
    models = [
        _model_meta(d.anchor, d.anchor_layers, d.anchor_width, "anchor"),
        *(_model_meta(p.model, p.layers, p.width, "partner") for p in partners),
    ]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": TOOL_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "models": models,
        "corpus": {
            "root": str(corpus.base),
            "fingerprint": corpus.fingerprint,
            "fingerprint_of": "sha256: shard relpaths and sizes, then ids of the documents used",
            "shards": len(corpus.shards),
            "documents": dict(corpus.docs),
            "tokens": dict(d.tokens),
            "aligned_tokens": dict(d.units),
            "skipped_rows": corpus.skipped,
            "doc_tokens": corpus.doc_tokens,
            "heldout_fraction": corpus.heldout,
            "split_seed": corpus.seed,
            "label_key": ".".join(corpus.label_key),
            "classes": d.classes,
        },
        "thresholds": {
            "min_corr": d.settings.min_corr,
            "top_k": d.settings.top_k,
            "null": "mutual top-k against each partner layer's neurons after a random rotation",
            "null_quantile": d.settings.null_quantile,
            "null_threshold": [p.null_threshold for p in partners],
            "replicate": d.settings.replicate,
            "seed": d.settings.seed,
            "activation_threshold": f"mean + {THRESHOLD_STDS:g} std of the anchor activation",
        },
        "counts": {
            "anchor_neurons": n_anchor,
            "mutual_buddies": [int((p.matches.buddy >= 0).sum()) for p in partners],
            "pass_floor": [int(p.passes_floor.sum()) for p in partners],
            "pass_null": [int(p.passes_null.sum()) for p in partners],
            "pass_replication": [int(p.passes_replication.sum()) for p in partners],
            "rosetta": len(r),
        },
        "null_rate": null,
        "populations": {
            "rosetta": _population(stats, rosetta_mask),
            "other": _population(stats, ~rosetta_mask),
        },
        "neurons": len(r),
    }
    return NeuronArtifact(meta, tensors)


def _model_meta(loaded, layers: list[int], width: int, role: str) -> dict:
    return {
        "name": loaded.name,
        "role": role,
        "family": loaded.family,
        "content_hash": loaded.content_hash,
        "layers": layers,
        "width": width,
        "hook_names": [hook_name(layer) for layer in layers],
    }


def _population(stats: dict[str, torch.Tensor], mask: torch.Tensor) -> dict:
    """Mean of each statistic over one population (NaN-free neurons), for the polarization view."""
    out: dict = {"neurons": int(mask.sum())}
    for key, value in stats.items():
        v = value[mask]
        v = v[torch.isfinite(v)]
        out[key] = float(v.mean()) if len(v) else None
    return out


def check_out(out: Path, force: bool) -> None:
    """Refuse a non-empty output folder unless --force replaces a neuron set: checked before the
    expensive work and again when writing."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (force and (out / META).is_file()):
            raise CurateError(f"{out} exists and is not empty; use --force to replace a neuron set")


def write(artifact: NeuronArtifact, out: Path, force: bool = False) -> None:
    """Write the folder atomically: a killed run leaves the previous folder or none."""
    check_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        tensors = {k: v.contiguous() for k, v in artifact.tensors.items()}
        save_file(tensors, tmp / TENSORS, metadata={"format": FORMAT})
        (tmp / META).write_text(json.dumps(artifact.meta, indent=2) + "\n", encoding="utf-8")
        (tmp / TABLE).write_text(table(artifact), encoding="utf-8")
        for file in tmp.iterdir():  # mkdtemp and safetensors create owner-only files
            file.chmod(0o644)
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read(path: Path) -> NeuronArtifact:
    meta_path, tensor_path = path / META, path / TENSORS
    if not meta_path.is_file() or not tensor_path.is_file():
        raise CurateError(f"{path} is not a neuron set (needs {META} and {TENSORS})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CurateError(f"{meta_path}: invalid JSON: {err}") from err
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CurateError(
            f"{path}: neuron-set format {meta.get('format')!r} version "
            f"{meta.get('format_version')!r}; this tool reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    return NeuronArtifact(meta, load_file(tensor_path))


def table(artifact: NeuronArtifact) -> str:
    """neurons.tsv: one line per Rosetta neuron."""
    partners = len(artifact.meta["models"]) - 1
    head = ["rank", "hook", "layer", "index", "mean_corr", "threshold", "weight"]
    for p in range(1, partners + 1):
        head += [f"p{p}_layer", f"p{p}_index", f"p{p}_corr", f"p{p}_heldout", f"p{p}_null"]
    head += [*STAT_KEYS, "top_class"]
    lines = ["\t".join(head)]
    for row in artifact.rows():
        cells = [row["rank"], hook_name(row["layer"]), row["layer"], row["index"]]
        cells += [_num(row[k]) for k in ("mean_corr", "threshold", "weight")]
        for b in row["buddies"]:
            cells += [
                b["layer"],
                b["index"],
                *map(_num, (b["corr"], b["heldout_corr"], b["null_corr"])),
            ]
        cells += [*(_num(row[k]) for k in STAT_KEYS), row["top_class"]]
        lines.append("\t".join(map(str, cells)))
    return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    return "nan" if x is None or math.isnan(x) else f"{x:.4f}"
