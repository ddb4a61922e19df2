"""Token alignment across tokenizers: the unit of correlation is a span of text both models cut at.

Two models only see the same "token" where both tokenizers put a boundary at the same place in
the text. Units are the spans between consecutive shared boundaries; a model's activation for a
unit is the mean over its tokens inside that span. Offsets are character offsets, whose boundaries
are a subset of UTF-8 byte boundaries; byte-level tokens that split one character share that
character's span and so fall into one unit. Whitespace at the edges of a token is not part of its
span (byte-level BPE glues a leading space to words, WordPiece does not), and tokens that cover only
whitespace are dropped. When every model cuts the text identically, units are simply the tokens.
"""

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from probes.batching import TokenizedDoc, cut, run_tokenizer
from probes.discovery.stream import transpose_into

Span = tuple[int, int]


@dataclass(frozen=True)
class EncodedDoc:
    doc: TokenizedDoc
    spans: list[Span | None]  # per input position: stripped character span, None if not content


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> list[EncodedDoc]:
    """One fast-tokenizer call: the model input, cut as `batching.tokenize` cuts it, plus the
    text span of every content token that survived truncation."""
    batch = run_tokenizer(tokenizer, texts, offsets=True)
    columns = zip(
        texts,
        batch["input_ids"],
        batch["special_tokens_mask"],
        batch["offset_mapping"],
        strict=True,
    )
    encoded = []
    for pos, (text, ids, special, offsets) in enumerate(columns):
        doc = cut(pos, ids, special, max_length)
        # The cut keeps a prefix of the positions (plus trailing specials), so position i of the
        # model input is position i of the full encoding wherever it is content.
        spans = [None if s else _strip(text, *offsets[i]) for i, s in enumerate(doc.special)]
        encoded.append(EncodedDoc(doc, spans))
    return encoded


def _strip(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


@dataclass
class Alignment:
    """How to turn each model's flat [batch * tokens] activations into shared units."""

    rows: list[torch.Tensor]  # per model: flat positions of the tokens that belong to a unit
    units: list[torch.Tensor]  # per model: unit of each of those tokens
    n_units: int
    unit_doc: torch.Tensor  # index of the document (in the batch) of each unit
    identical: bool  # every model cut every document the same: rows map 1:1 to units

    def pool(self, model: int, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        """[neurons of all `layers`, n_units] float32: the mean activation of `model`'s tokens in
        each unit, neuron-major (what every streaming sum reads row by row).

        `layers` holds the model's [batch, tokens, width] activations per layer, in any dtype;
        each is gathered, pooled and transposed on its own, so nothing holds every layer twice.
        """
        out = torch.empty((sum(a.shape[-1] for a in layers), self.n_units), dtype=torch.float32)
        lo = 0
        for acts in layers:
            picked = acts.reshape(-1, acts.shape[-1]).index_select(0, self.rows[model])
            if not self.identical:
                picked = self._unit_means(model, picked.float())
            transpose_into(out[lo : lo + picked.shape[1]], picked)
            lo += picked.shape[1]
        return out

    def _unit_means(self, model: int, picked: torch.Tensor) -> torch.Tensor:
        units = self.units[model]
        sums = torch.zeros((self.n_units, picked.shape[1]), dtype=picked.dtype)
        sums.index_add_(0, units, picked)
        counts = torch.bincount(units, minlength=self.n_units).to(picked.dtype)
        return sums / counts.unsqueeze(1)


def align(per_model: Sequence[Sequence[EncodedDoc]], widths: Sequence[int]) -> Alignment:
    """Align one batch, documents in the same order for every model.

    `widths[m]` is the padded sequence length of model m's batch, so that flat positions are
    `doc * width + position`.
    """
    rows: list[list[int]] = [[] for _ in per_model]
    units: list[list[int]] = [[] for _ in per_model]
    unit_doc: list[int] = []
    identical = True
    for d, docs in enumerate(zip(*per_model, strict=True)):
        content = [[(i, s) for i, s in enumerate(doc.spans) if s is not None] for doc in docs]
        if all([s for _, s in c] == [s for _, s in content[0]] for c in content[1:]):
            for m, c in enumerate(content):
                rows[m] += [d * widths[m] + i for i, _ in c]
                units[m] += range(len(unit_doc), len(unit_doc) + len(c))
            unit_doc += [d] * len(content[0])
            continue
        identical = False
        per_model_units, n_doc_units = _span_units(content)
        for m, (doc_rows, doc_units) in enumerate(per_model_units):
            rows[m] += [d * widths[m] + i for i in doc_rows]
            units[m] += [len(unit_doc) + u for u in doc_units]
        unit_doc += [d] * n_doc_units
    return Alignment(
        rows=[torch.tensor(r, dtype=torch.long) for r in rows],
        units=[torch.tensor(u, dtype=torch.long) for u in units],
        n_units=len(unit_doc),
        unit_doc=torch.tensor(unit_doc, dtype=torch.long),
        identical=identical,
    )


def _span_units(
    content: list[list[tuple[int, Span]]],
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Per model (positions, unit) of the tokens inside units every model covers; unit count."""
    # Only text that every model saw (truncation differs between models) can form units.
    end = min(max((s[1] for _, s in c), default=0) for c in content)
    content = [[(i, s) for i, s in c if s[1] <= end] for c in content]
    shared = set.intersection(*({b for _, s in c for b in s} for c in content))
    cuts = sorted(shared)
    # A unit is the span between consecutive shared boundaries; keep those all models fill.
    member = [[(i, bisect_right(cuts, s[0]) - 1) for i, s in c] for c in content]
    member = [[(i, u) for i, u in m if 0 <= u < len(cuts) - 1] for m in member]
    filled = set.intersection(*({u for _, u in m} for m in member))
    renumber = {u: k for k, u in enumerate(sorted(filled))}
    per_model = [
        ([i for i, u in m if u in renumber], [renumber[u] for _, u in m if u in renumber])
        for m in member
    ]
    return per_model, len(renumber)
