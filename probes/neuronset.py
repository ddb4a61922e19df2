"""Which neurons to probe, and the neuron-set artifact that discovery writes and probing reads.

A set is a JSON list of [layer, index] pairs or a discovered folder: neurons.safetensors +
meta.json + neurons.tsv, versioned. Tensors hold numbers only (no pickle); meta.json holds
provenance (models and their content hashes, hook names, corpus fingerprint, thresholds, null
rate, tool version, exact command); neurons.tsv is the same Rosetta table for people. Keys
"rosetta.*" have one row per Rosetta neuron, best first; keys "all.*" have one row per anchor
neuron, for population statistics. Reading and writing it needs no discovery code, so probing
and filtering never import it.
"""

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load, load_file, save_file

from probes.atomic import atomic_path
from probes.errors import CurateError
from probes.hooks import hook_name
from probes.storage import as_path, is_remote

FORMAT = "rosetta-curate/neuron-set"
FORMAT_VERSION = 1
TENSORS, META, TABLE = "neurons.safetensors", "meta.json", "neurons.tsv"
STAT_KEYS = ("frequency", "skew", "kurtosis", "selectivity")


@dataclass(frozen=True)
class Neuron:
    layer: int
    index: int
    threshold: float = 0.0  # activation above which the neuron counts as firing
    weight: float = 1.0  # its share in the document score

    @property
    def column(self) -> str:
        """Name of this neuron's column in score side files."""
        return f"L{self.layer}N{self.index}"


@dataclass(frozen=True)
class NeuronSet:
    neurons: tuple[Neuron, ...]
    origin: str  # where it came from (a path, or "inline JSON"), for messages
    model_hash: str | None = None  # content hash of the model it was made for, if known
    model_name: str | None = None  # and that model's name

    def check_model(self, name: str, content_hash: str) -> None:
        """Refuse a model other than the one the set was made for (by weights, not by name)."""
        if self.model_hash and self.model_hash != content_hash:
            made_for = f"{self.model_name} (weights {self.model_hash})"
            raise CurateError(
                f"neuron set {self.origin} was made for {made_for}, but {name} has weights "
                f"{content_hash}; probe with the model it was discovered on"
            )

    def requests(self) -> dict[int, list[int]]:
        """Neuron indices per layer, in the order the score columns use."""
        layers: dict[int, list[int]] = {}
        for neuron in self.neurons:
            layers.setdefault(neuron.layer, []).append(neuron.index)
        return layers

    def ordered(self) -> list[Neuron]:
        """Neurons in capture order (by layer, then as listed): the order of score columns."""
        return [n for layer in sorted(self.requests()) for n in self.neurons if n.layer == layer]

    def check_fits(self, model_name: str, widths: Sequence[int]) -> None:
        """Every neuron exists: `widths` holds the model's neurons per layer."""
        for neuron in self.neurons:
            if not (0 <= neuron.layer < len(widths) and 0 <= neuron.index < widths[neuron.layer]):
                shape = f"{len(widths)} layers of {widths[0]} MLP neurons"
                if len(set(widths)) > 1:
                    shape = f"{len(widths)} layers of {min(widths)} to {max(widths)} neurons"
                raise CurateError(
                    f"neuron [{neuron.layer}, {neuron.index}] from {self.origin} does not exist in "
                    f"{model_name} ({shape})"
                )


def load_neuron_set(spec: str) -> NeuronSet:
    """Read `spec`: a discovered neuron-set folder, or a JSON file or inline JSON holding
    [[layer, index], ...].

    Entries may also be objects {"layer", "index", "threshold", "weight"}. A folder's set carries
    the content hash of the model it was discovered on, so probing another model is refused.
    """
    path = as_path(spec)
    if spec.lstrip().startswith("["):  # before any path check: long JSON is no valid file name
        text, origin = spec, "inline JSON"
    elif path.is_dir():
        return read(path).neuron_set(str(path))
    elif path.is_file():
        text, origin = path.read_text(encoding="utf-8"), str(path)
    else:
        raise CurateError(
            f"neuron set {spec!r} is neither a file nor a JSON list of [layer, index]"
        )
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CurateError(f"{origin}: invalid JSON: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise CurateError(f"{origin}: expected a non-empty JSON list of [layer, index] pairs")
    neurons = tuple(_parse_entry(entry, origin, i) for i, entry in enumerate(entries))
    if len(set((n.layer, n.index) for n in neurons)) != len(neurons):
        raise CurateError(f"{origin}: a neuron is listed twice")
    return NeuronSet(neurons=neurons, origin=origin)


def _parse_entry(entry: object, origin: str, position: int) -> Neuron:
    if isinstance(entry, dict):
        fields = entry
    elif isinstance(entry, list) and len(entry) == 2:
        fields = {"layer": entry[0], "index": entry[1]}
    else:
        fields = None
    ok = (
        fields is not None
        and set(fields) <= {"layer", "index", "threshold", "weight"}
        and all(isinstance(fields.get(key), int) for key in ("layer", "index"))
    )
    if not ok:
        raise CurateError(
            f"{origin}: entry {position} is {json.dumps(entry)}; expected [layer, index] "
            'or {"layer": L, "index": I, "threshold": T, "weight": W}'
        )
    return Neuron(
        layer=fields["layer"],
        index=fields["index"],
        threshold=float(fields.get("threshold", 0.0)),
        weight=float(fields.get("weight", 1.0)),
    )


@dataclass
class NeuronArtifact:
    """A neuron-set folder in memory: meta.json as a dict, neurons.safetensors as tensors."""

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

    def neuron_set(self, origin: str) -> NeuronSet:
        """The Rosetta rows as a probe's neurons, tied to the anchor's weights."""
        neurons = tuple(
            Neuron(row["layer"], row["index"], row["threshold"], row["weight"])
            for row in self.rows()
        )
        if not neurons:
            raise CurateError(f"neuron set {origin} holds no Rosetta neurons")
        anchor = self.meta["models"][0]
        return NeuronSet(neurons, origin, anchor["content_hash"], anchor["name"])


def check_out(out: Path, force: bool) -> None:
    """Refuse a non-empty output folder unless --force replaces a neuron set: checked before the
    expensive work and again when writing."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (force and (out / META).is_file()):
            raise CurateError(f"{out} exists and is not empty; use --force to replace a neuron set")


def write(artifact: NeuronArtifact, out: Path, force: bool = False) -> None:
    """Write the folder atomically: a killed run leaves the previous folder or none (in an
    object store: uploaded from a local folder, its completion marker last)."""
    check_out(out, force)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        tensors = {k: v.contiguous() for k, v in artifact.tensors.items()}
        save_file(tensors, tmp / TENSORS, metadata={"format": FORMAT})
        (tmp / META).write_text(json.dumps(artifact.meta, indent=2) + "\n", encoding="utf-8")
        (tmp / TABLE).write_text(table(artifact), encoding="utf-8")
        for file in tmp.iterdir():  # safetensors creates owner-only files
            file.chmod(0o644)
        if not is_remote(out) and out.exists():
            shutil.rmtree(out)  # --force: a rename cannot replace a folder that holds files


def read(path: Path) -> NeuronArtifact:
    """The set at `path`; another format or version is refused rather than misread."""
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
    tensors = load(tensor_path.read_bytes()) if is_remote(path) else load_file(tensor_path)
    return NeuronArtifact(meta, tensors)


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
