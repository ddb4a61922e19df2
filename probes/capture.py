"""Activation capture: run a model only as deep as needed and keep only the requested neurons."""

from collections.abc import Mapping

import torch

from probes.hooks import (
    ActivationFn,
    hook_name,
    n_layers,
    register_mlp_hook,
    register_partial_mlp_hook,
)
from probes.models import LoadedModel


class _StopForward(Exception):
    """Raised inside the deepest hook: the layers after it are never computed."""


class ActivationCapture:
    """A model plus the named hook points (and neuron indices) to read from it.

    `requests` maps a layer to the neuron indices wanted there (None = the whole layer).
    """

    def __init__(self, loaded: LoadedModel, requests: Mapping[int, list[int] | None]):
        if not requests:
            raise ValueError("no layers requested")
        depth = n_layers(loaded.model, loaded.model_type)
        bad = [layer for layer in requests if not 0 <= layer < depth]
        if bad:
            raise ValueError(f"layers {bad} out of range for {loaded.name} ({depth} layers)")
        self.loaded = loaded
        self.requests = dict(sorted(requests.items()))
        self.deepest = max(self.requests)
        self._index = {
            layer: None if idx is None else torch.tensor(idx, dtype=torch.long)
            for layer, idx in self.requests.items()
        }

    def _hook(self, layer: int, keep: ActivationFn) -> torch.utils.hooks.RemovableHandle:
        model, model_type, index = self.loaded.model, self.loaded.model_type, self._index[layer]
        if layer == self.deepest and index is not None:
            return register_partial_mlp_hook(model, model_type, layer, index, keep)
        return register_mlp_hook(model, model_type, layer, keep)

    @property
    def hook_names(self) -> list[str]:
        return [hook_name(layer) for layer in self.requests]

    @torch.inference_mode()
    def capture(self, **inputs: torch.Tensor) -> dict[int, torch.Tensor]:
        """Activations per requested layer, each [batch, positions, n_requested], model dtype.

        `inputs` are the model's keyword inputs: input_ids and attention_mask for text,
        pixel_values for images.
        """
        return self.run(**inputs)

    def run(self, **inputs: torch.Tensor) -> dict[int, torch.Tensor]:
        """`capture` without its inference mode: what an exporter traces (probes/backends/)."""
        captured: dict[int, torch.Tensor] = {}

        def keeper(layer: int):
            index = self._index[layer]

            def keep(acts: torch.Tensor) -> None:
                selected = index is None or layer == self.deepest  # the partial hook selected
                captured[layer] = acts if selected else acts.index_select(-1, index)
                if layer == self.deepest:
                    raise _StopForward

            return keep

        handles = [self._hook(layer, keeper(layer)) for layer in self.requests]
        try:
            self.loaded.model(**inputs)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return captured
