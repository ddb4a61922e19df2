"""The probe engine: texts (or images) in, per-document neuron scores out (batched, no wasted
padding)."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from probes.aggregate import DEFAULT_AGGREGATION, aggregate
from probes.backends import Settings, open_backend, torch_settings
from probes.backends import tokens_per_batch as default_batch
from probes.batching import length_sorted_batches, pad, tokenize
from probes.hooks import layer_widths
from probes.images import decode, prepare
from probes.models import LoadedModel
from probes.neuronset import NeuronSet
from probes.sidefile import NO_TOKENS


@dataclass
class Probed:
    """One probe of some documents, per document in input order (unusable: NaN values)."""

    n_tokens: np.ndarray  # int64 [docs]: content tokens before truncation (images: pixels)
    truncated: np.ndarray  # bool [docs]
    neurons: np.ndarray  # float32 [docs, neurons], columns in NeuronSet.ordered() order
    score: np.ndarray  # float32 [docs]: weighted mean over neurons
    errors: list[str | None]  # why a document could not be probed (no tokens, no image)


class ProbeEngine:
    """Probes texts: the aggregated activations of a neuron set in one model, per document.

    `probe_engine` picks this or `ImageProbeEngine` by the model's modality. `backend` is the
    settings of what runs the model (probes/backends/; default: torch, in the model's dtype).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        neuron_set: NeuronSet,
        agg: str = DEFAULT_AGGREGATION,
        tokens_per_batch: int | None = None,
        backend: Settings | None = None,
    ):
        neuron_set.check_fits(loaded.name, layer_widths(loaded.model, loaded.model_type))
        neuron_set.check_model(loaded.name, loaded.content_hash)
        self.loaded = loaded
        self.agg = agg
        self.neurons = neuron_set.ordered()
        self.backend = backend or torch_settings(loaded)
        self.tokens_per_batch = tokens_per_batch or default_batch(self.backend, loaded.modality)
        self.source = open_backend(self.backend, loaded, neuron_set.requests())
        self.thresholds = torch.tensor([n.threshold for n in self.neurons])
        weights = torch.tensor([n.weight for n in self.neurons])
        self.weights = weights / weights.sum()

    def probe(self, texts: Sequence[str]) -> Probed:
        docs = tokenize(self.loaded.tokenizer, texts, self.loaded.max_length)
        values = self._empty(len(docs))
        scorable = [doc for doc in docs if doc.n_tokens > 0]
        for batch in length_sorted_batches(scorable, self.tokens_per_batch):
            input_ids, attention, content = pad(batch, self.loaded.pad_id)
            layers = self.source.capture(input_ids=input_ids, attention_mask=attention)
            values[[doc.pos for doc in batch]] = self._aggregate(layers, content)
        n_tokens = np.array([doc.n_tokens for doc in docs], dtype=np.int64)
        truncated = np.array([doc.truncated for doc in docs], dtype=bool)
        errors = [None if n else NO_TOKENS for n in n_tokens]
        return self._probed(n_tokens, truncated, values, errors)

    def _empty(self, n_docs: int) -> np.ndarray:
        return np.full((n_docs, len(self.neurons)), np.nan, dtype=np.float32)

    def _aggregate(self, layers: dict[int, torch.Tensor], content: torch.Tensor) -> np.ndarray:
        acts = torch.cat([layers[layer] for layer in self.source.requests], dim=-1)
        return aggregate(acts, content, self.agg, self.thresholds).numpy()

    def _probed(self, n_tokens, truncated, values: np.ndarray, errors) -> Probed:
        score = (values @ self.weights.numpy()).astype(np.float32)
        return Probed(n_tokens, truncated, values, score, errors)


class ImageProbeEngine(ProbeEngine):
    """Probes encoded images: every spatial position (or patch) of a map is one of its tokens.

    `tokens_per_batch` counts input pixels over a batch's images, so a batch holds about the
    same work whatever the model's input size.
    """

    def probe(self, images: Sequence[bytes]) -> Probed:
        decoded = [decode(data) for data in images]
        values = self._empty(len(decoded))
        spec = self.loaded.image
        per_batch = max(1, self.tokens_per_batch * 64 // (spec.size * spec.size))
        usable = [i for i, d in enumerate(decoded) if d.image is not None]
        for start in range(0, len(usable), per_batch):
            batch = usable[start : start + per_batch]
            pixels = prepare([decoded[i].image for i in batch], spec).to(self._dtype)
            layers = self.source.capture(pixel_values=pixels)
            positions = next(iter(layers.values())).shape[1]
            content = torch.ones((len(batch), positions), dtype=torch.bool)
            values[batch] = self._aggregate(layers, content)
        n_pixels = np.array([d.pixels for d in decoded], dtype=np.int64)
        return self._probed(
            n_pixels, np.zeros(len(decoded), bool), values, [d.error for d in decoded]
        )

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.loaded.model.parameters()).dtype


def probe_engine(
    loaded: LoadedModel,
    neuron_set: NeuronSet,
    agg: str = DEFAULT_AGGREGATION,
    tokens_per_batch: int | None = None,
    backend: Settings | None = None,
) -> ProbeEngine:
    """The engine for the model's modality: texts or encoded images in, scores out."""
    engine = ImageProbeEngine if loaded.modality == "image" else ProbeEngine
    return engine(loaded, neuron_set, agg, tokens_per_batch, backend)
