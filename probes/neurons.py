"""Which neurons to probe: a JSON list of [layer, index] pairs or a discovered neuron-set folder."""

import json
from dataclasses import dataclass
from pathlib import Path

from probes.errors import CurateError


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
    source: str  # where it came from, for manifests and side-file metadata
    model_hash: str | None = None  # content hash of the model it was made for, if known

    def requests(self) -> dict[int, list[int]]:
        """Neuron indices per layer, in the order the score columns use."""
        layers: dict[int, list[int]] = {}
        for neuron in self.neurons:
            layers.setdefault(neuron.layer, []).append(neuron.index)
        return layers

    def ordered(self) -> list[Neuron]:
        """Neurons in capture order (by layer, then as listed): the order of score columns."""
        return [n for layer in sorted(self.requests()) for n in self.neurons if n.layer == layer]

    def check_fits(self, model_name: str, n_layers: int, width: int) -> None:
        for neuron in self.neurons:
            if not (0 <= neuron.layer < n_layers and 0 <= neuron.index < width):
                raise CurateError(
                    f"neuron [{neuron.layer}, {neuron.index}] from {self.source} does not exist in "
                    f"{model_name} ({n_layers} layers of {width} MLP neurons)"
                )


def load_neuron_set(spec: str) -> NeuronSet:
    """Read `spec`: a discovered neuron-set folder, or a JSON file or inline JSON holding
    [[layer, index], ...].

    Entries may also be objects {"layer", "index", "threshold", "weight"}. A folder's set carries
    the content hash of the model it was discovered on, so probing another model is refused.
    """
    path = Path(spec)
    if spec.lstrip().startswith("["):  # before any path check: long JSON is no valid file name
        text, source = spec, "inline JSON"
    elif path.is_dir():
        from probes.artifact import read  # the artifact reader pulls in discovery code

        return read(path).neuron_set(str(path))
    elif path.is_file():
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        raise CurateError(
            f"neuron set {spec!r} is neither a file nor a JSON list of [layer, index]"
        )
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CurateError(f"{source}: invalid JSON: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise CurateError(f"{source}: expected a non-empty JSON list of [layer, index] pairs")
    neurons = tuple(_parse_entry(entry, source, i) for i, entry in enumerate(entries))
    if len(set((n.layer, n.index) for n in neurons)) != len(neurons):
        raise CurateError(f"{source}: a neuron is listed twice")
    return NeuronSet(neurons=neurons, source=source)


def _parse_entry(entry: object, source: str, position: int) -> Neuron:
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
            f"{source}: entry {position} is {json.dumps(entry)}; expected [layer, index] "
            'or {"layer": L, "index": I, "threshold": T, "weight": W}'
        )
    return Neuron(
        layer=fields["layer"],
        index=fields["index"],
        threshold=float(fields.get("threshold", 0.0)),
        weight=float(fields.get("weight", 1.0)),
    )
