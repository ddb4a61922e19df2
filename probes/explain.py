"""Why a document scored what it did: each neuron's share of the score, and where it fires.

The probe's score is a weighted mean over the neuron set of each neuron's aggregated activation
(`ProbeEngine`). An explanation recomputes that for one document from the same tokenization
(`tokenize`'s cut to the model's length), capture and aggregation, and keeps what the score
hides: every content token's activation per neuron, with the token's characters in the text.
"""

from dataclasses import dataclass

import numpy as np
import torch

from probes.aggregate import aggregate
from probes.batching import cut, pad, run_tokenizer, trailing_specials
from probes.engine import ProbeEngine
from probes.neuronset import Neuron


@dataclass
class NeuronPart:
    """One neuron's part in a document's score."""

    neuron: Neuron
    weight: float  # normalised: the weights of the set sum to 1
    value: float  # the aggregated activation (a side-file neuron column)
    acts: np.ndarray  # float32 [content tokens]: the activation on each token

    @property
    def contribution(self) -> float:
        return self.weight * self.value


@dataclass
class Explanation:
    doc_id: str
    text: str
    score: float
    n_tokens: int  # content tokens of the whole document
    truncated: bool  # only the first tokens (the model's length) were seen
    spans: list[tuple[int, int]]  # character span of each content token the model saw
    parts: list[NeuronPart]  # in the neuron set's order

    def ranked(self) -> list[NeuronPart]:
        """Neurons by contribution to the score, largest first."""
        return sorted(self.parts, key=lambda p: -p.contribution)

    def top_tokens(self, part: NeuronPart, k: int = 5) -> list[tuple[str, float]]:
        """The `k` tokens where `part`'s neuron fires most (positive activations only)."""
        order = np.argsort(-part.acts, kind="stable")[:k]
        return [
            (self.text[slice(*self.spans[i])], float(part.acts[i]))
            for i in order
            if part.acts[i] > 0
        ]

    def with_values(self, score: float, values: dict[str, float]) -> "Explanation":
        """The same tokens, with the score and per-neuron values taken from a side file (what
        selection used), so that the numbers shown are the side file's own."""
        parts = [
            NeuronPart(p.neuron, p.weight, values[p.neuron.column], p.acts) for p in self.parts
        ]
        return Explanation(
            self.doc_id, self.text, score, self.n_tokens, self.truncated, self.spans, parts
        )


@torch.inference_mode()
def explain(engine: ProbeEngine, doc_id: str, text: str) -> Explanation:
    """The explanation of one document under `engine`'s model, neuron set and aggregation."""
    loaded = engine.loaded
    encoded = run_tokenizer(loaded.tokenizer, [text], offsets=True)
    ids, special = encoded["input_ids"][0], encoded["special_tokens_mask"][0]
    doc = cut(0, ids, special, loaded.max_length)
    if doc.n_tokens == 0:
        raise ValueError(f"document {doc_id!r} has no tokens to explain")
    offsets = encoded["offset_mapping"][0]
    seen = len(doc.ids) - trailing_specials(doc.special)  # what the model saw before the tail
    spans = [tuple(offsets[i]) for i in range(seen) if not special[i]]
    input_ids, attention, content = pad([doc], loaded.pad_id)
    layers = engine.source.capture(input_ids=input_ids, attention_mask=attention)
    acts = torch.cat([layers[layer] for layer in engine.source.requests], dim=-1).float()
    values = aggregate(acts, content, engine.agg, engine.thresholds)[0]
    weights = engine.weights
    per_token = acts[0][content[0]].numpy()  # [content tokens, neurons]
    parts = [
        NeuronPart(n, float(weights[i]), float(values[i]), per_token[:, i])
        for i, n in enumerate(engine.neurons)
    ]
    return Explanation(
        doc_id,
        text,
        float(values @ weights),
        doc.n_tokens,
        doc.truncated,
        spans,
        parts,
    )
