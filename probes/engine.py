"""The probe engine: texts in, per-document neuron scores out (batched, no wasted padding)."""

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from probes.aggregate import DEFAULT_AGGREGATION, aggregate
from probes.batching import length_sorted_batches, pad, tokenize
from probes.capture import ActivationCapture
from probes.hooks import mlp_width, n_layers
from probes.models import LoadedModel
from probes.neuronset import NeuronSet

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.cache
def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_fast_bf16() -> bool:
    """True where bf16 matrix products run in hardware (AMX or AVX512-BF16)."""
    return "amx_bf16" in _cpu_flags() or "avx512_bf16" in _cpu_flags()


def cpu_has_amx() -> bool:
    """True where the CPU has AMX bf16 tiles (several times AVX512-BF16's matmul rate)."""
    return "amx_bf16" in _cpu_flags()


def pick_dtype(name: str) -> torch.dtype:
    """`auto` means bf16 where the hardware does it fast, else fp32."""
    if name == "auto":
        fast = torch.cuda.is_available() or cpu_has_fast_bf16()
        return torch.bfloat16 if fast else torch.float32
    return DTYPES[name]


@dataclass
class Probed:
    """One probe of some texts, per document in input order (no tokens: NaN values)."""

    n_tokens: np.ndarray  # int64 [docs]: content tokens before truncation
    truncated: np.ndarray  # bool [docs]
    neurons: np.ndarray  # float32 [docs, neurons], columns in NeuronSet.ordered() order
    score: np.ndarray  # float32 [docs]: weighted mean over neurons


class ProbeEngine:
    """Probes texts: the aggregated activations of a neuron set in one model, per document."""

    def __init__(
        self,
        loaded: LoadedModel,
        neuron_set: NeuronSet,
        agg: str = DEFAULT_AGGREGATION,
        tokens_per_batch: int = 8192,
    ):
        neuron_set.check_fits(
            loaded.name,
            n_layers(loaded.model, loaded.model_type),
            mlp_width(loaded.model, loaded.model_type),
        )
        neuron_set.check_model(loaded.name, loaded.content_hash)
        self.loaded = loaded
        self.agg = agg
        self.tokens_per_batch = tokens_per_batch
        self.neurons = neuron_set.ordered()
        self.source = ActivationCapture(loaded, neuron_set.requests())
        self.thresholds = torch.tensor([n.threshold for n in self.neurons])
        weights = torch.tensor([n.weight for n in self.neurons])
        self.weights = weights / weights.sum()

    def probe(self, texts: Sequence[str]) -> Probed:
        docs = tokenize(self.loaded.tokenizer, texts, self.loaded.max_length)
        values = np.full((len(docs), len(self.neurons)), np.nan, dtype=np.float32)
        scorable = [doc for doc in docs if doc.n_tokens > 0]
        for batch in length_sorted_batches(scorable, self.tokens_per_batch):
            input_ids, attention, content = pad(batch, self.loaded.pad_id)
            layers = self.source.capture(input_ids, attention)
            acts = torch.cat([layers[layer] for layer in self.source.requests], dim=-1)
            per_doc = aggregate(acts, content, self.agg, self.thresholds)
            values[[doc.pos for doc in batch]] = per_doc.numpy()
        return Probed(
            n_tokens=np.array([doc.n_tokens for doc in docs], dtype=np.int64),
            truncated=np.array([doc.truncated for doc in docs], dtype=bool),
            neurons=values,
            score=(values @ self.weights.numpy()).astype(np.float32),
        )
