"""The neuron atlas: a static HTML page with one card per neuron, for people to read.

Each card shows the neuron's buddies and statistics and the documents where it fires most,
cut to a snippet around the strongest token, with every firing token shaded by its activation.
"""

import html
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from probes.batching import length_sorted_batches, pad
from probes.capture import ActivationCapture
from probes.discovery.align import EncodedDoc
from probes.discovery.corpus import Corpus, anchor_encodings
from probes.hooks import hook_name
from probes.neuronset import NeuronArtifact

CONTEXT_CHARS = 160
DOCS_PER_CHUNK = 64


@dataclass
class Snippet:
    peak: float
    doc_id: str
    text: str
    spans: list[tuple[int, int]]  # content tokens
    acts: list[float]  # this neuron's activation per content token


def build_atlas(
    result: NeuronArtifact,
    capture: ActivationCapture,
    columns: torch.Tensor,
    data: Path,
    max_tokens: int,
    snippets: int,
    limit: int,
) -> str:
    """The whole HTML page for the first `limit` neurons of `result`."""
    columns = columns[:limit]
    best = _top_snippets(capture, columns, data, max_tokens, snippets)
    cards = [_card(row, best[i], result.meta) for i, row in enumerate(result.rows()[:limit])]
    title = f"Neuron atlas: {html.escape(result.meta['models'][0]['name'])}"
    return _PAGE.format(
        title=title,
        subtitle=html.escape(f"{data} - {result.meta['command']}"),
        cards="\n".join(cards),
    )


def _top_snippets(
    capture: ActivationCapture, columns: torch.Tensor, data: Path, max_tokens: int, n: int
) -> list[list[Snippet]]:
    """Per neuron, the `n` documents with the highest single-token activation (best first)."""
    best: list[list[Snippet]] = [[] for _ in columns]
    loaded = capture.loaded
    corpus = Corpus(data, loaded, max_tokens, heldout=0.0)
    docs = iter(tqdm(corpus, desc="atlas", unit="doc", leave=False))
    while True:
        chunk = [doc for _, doc in zip(range(DOCS_PER_CHUNK), docs, strict=False)]
        if not chunk:
            break
        encoded = anchor_encodings(chunk)  # encoded at the model's full length
        for batch in length_sorted_batches([e.doc for e in encoded], 4096):
            input_ids, attention, content = pad(batch, loaded.pad_id)
            layers = capture.capture(input_ids, attention)
            acts = torch.cat([layers[layer].float() for layer in capture.requests], dim=-1)
            acts = acts[..., columns].masked_fill(~content.unsqueeze(-1), float("-inf"))
            peaks = acts.amax(dim=1)  # [docs, neurons]
            for row, doc in enumerate(batch):
                for i in range(len(columns)):
                    peak = float(peaks[row, i])
                    if len(best[i]) == n and peak <= best[i][-1].peak:
                        continue
                    best[i].append(
                        _snippet(peak, chunk[doc.pos], encoded[doc.pos], acts[row, :, i])
                    )
                    best[i] = sorted(best[i], key=lambda s: -s.peak)[:n]
    return best


def _snippet(peak: float, doc, enc: EncodedDoc, acts: torch.Tensor) -> Snippet:
    kept = [(span, float(acts[i])) for i, span in enumerate(enc.spans) if span is not None]
    return Snippet(peak, doc.id, doc.text, [s for s, _ in kept], [a for _, a in kept])


def _card(row: dict, snippets: list[Snippet], meta: dict) -> str:
    buddies = "".join(
        f"<li>{html.escape(b['model'])}: L{b['layer']}N{b['index']} corr {b['corr']:.3f}, "
        f"held-out {b['heldout_corr']:.3f}, null {b['null_corr']:.3f}</li>"
        for b in row["buddies"]
    )
    stats = (
        f"fires on {row['frequency']:.1%} of tokens, skew {row['skew']:.2f}, "
        f"kurtosis {row['kurtosis']:.1f}, class selectivity {row['selectivity']:.2f}"
        + (f" (most: {html.escape(row['top_class'])})" if row["top_class"] else "")
    )
    shown = "".join(_render(s) for s in snippets) or "<p>no activating text in --data</p>"
    return (
        f'<section class="card"><h2>#{row["rank"]} L{row["layer"]}N{row["index"]} '
        f"<small>{hook_name(row['layer'])}[{row['index']}] - mean corr "
        f"{row['mean_corr']:.3f}, threshold {row['threshold']:.3f}</small></h2>"
        f"<ul>{buddies}</ul><p>{stats}</p>{shown}</section>"
    )


def _render(snippet: Snippet) -> str:
    """The text around the strongest token; tokens with positive activation shaded."""
    peak_at = max(range(len(snippet.acts)), key=snippet.acts.__getitem__)
    center = snippet.spans[peak_at]
    start = max(0, center[0] - CONTEXT_CHARS)
    end = min(len(snippet.text), center[1] + CONTEXT_CHARS)
    scale = max(snippet.peak, 1e-6)
    parts, pos = [], start
    for (s, e), act in zip(snippet.spans, snippet.acts, strict=True):
        if s < pos or e > end or act <= 0:
            continue
        alpha = min(act / scale, 1.0)
        parts.append(html.escape(snippet.text[pos:s]))
        parts.append(
            f'<mark style="background:rgba(255,120,0,{alpha:.2f})" title="{act:.3f}">'
            f"{html.escape(snippet.text[s:e])}</mark>"
        )
        pos = e
    parts.append(html.escape(snippet.text[pos:end]))
    lead = "..." if start > 0 else ""
    tail = "..." if end < len(snippet.text) else ""
    return (
        f'<blockquote><div class="meta">{html.escape(snippet.doc_id)} - peak '
        f"{snippet.peak:.3f}</div>{lead}{''.join(parts)}{tail}</blockquote>"
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: 0.5rem 1rem; margin: 1rem 0; }}
h2 small {{ font-weight: normal; color: #666; font-size: 0.7em; }}
blockquote {{ white-space: pre-wrap; margin: 0.5rem 0; padding: 0.5rem;
  background: #fafafa; border-left: 3px solid #f80; }}
.meta {{ color: #888; font-size: 0.8em; }}
mark {{ color: inherit; border-radius: 2px; }}
</style></head>
<body><h1>{title}</h1><p class="meta">{subtitle}</p>
{cards}
</body></html>
"""
