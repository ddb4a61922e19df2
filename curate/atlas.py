"""The neuron atlas: a static HTML page with one card per neuron, for people to read.

Each card shows the neuron's buddies and statistics and the documents where it fires most,
cut to a snippet around the strongest token, with every firing token shaded by its activation.
Each snippet's document links to its explain page (written beside the atlas), which links back
to the cards of the neurons that drive its score.
"""

import hashlib
import html
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from curate.explain_page import explain_page
from curate.highlight import STYLE, shaded
from probes.batching import length_sorted_batches, pad
from probes.capture import ActivationCapture
from probes.discovery.align import EncodedDoc
from probes.discovery.corpus import Corpus, anchor_encodings
from probes.engine import ProbeEngine
from probes.explain import explain
from probes.hooks import hook_name
from probes.neuronset import NeuronArtifact

CONTEXT_CHARS = 160
IMAGE_STYLE = ".crops{display:flex;flex-wrap:wrap;gap:8px}.crops figure{margin:0;font-size:11px}"
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
    engine: ProbeEngine,
    columns: torch.Tensor,
    data: Path,
    max_tokens: int,
    snippets: int,
    limit: int,
    page_name: str,
) -> tuple[str, dict[str, str]]:
    """The HTML page for the first `limit` neurons of `result`, and the explain pages of its
    snippets' documents ({path relative to the page: HTML}); `page_name` is the page's file
    name, which the explain pages link back to."""
    columns = columns[:limit]
    best = _top_snippets(engine.source, columns, data, max_tokens, snippets)
    texts = {s.doc_id: s.text for shown in best for s in shown}
    folder = Path(page_name).stem + "-explain"
    hrefs = {doc_id: f"{folder}/{_slug(doc_id)}.html" for doc_id in texts}
    explained = {}
    for doc_id, text in tqdm(texts.items(), desc="explain", unit="doc", leave=False):
        facts = [f"document {doc_id!r} from {data}", f"aggregation {engine.agg}"]
        page = explain_page(explain(engine, doc_id, text), facts, f"../{page_name}")
        explained[hrefs[doc_id]] = page
    shown = [
        "".join(_render(s, hrefs[s.doc_id]) for s in snippets)
        or "<p>no activating text in --data</p>"
        for snippets in best
    ]
    return atlas_page(result, data, shown[:limit]), explained


def atlas_page(result: NeuronArtifact, data: Path, shown: list[str]) -> str:
    """The page: one card per neuron of `result` (best first) with its `shown` examples."""
    cards = [card(row, examples) for row, examples in zip(result.rows(), shown, strict=False)]
    title = f"Neuron atlas: {html.escape(result.meta['models'][0]['name'])}"
    return _PAGE.format(
        style=STYLE + IMAGE_STYLE,
        title=title,
        subtitle=html.escape(f"{data} - {result.meta['command']}"),
        cards="\n".join(cards),
    )


def _slug(doc_id: str) -> str:
    """A file name for a document id: readable, and unique by a hash of the whole id."""
    digest = hashlib.blake2b(doc_id.encode(), digest_size=4).hexdigest()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", doc_id)[:48] + "-" + digest


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
            layers = capture.capture(input_ids=input_ids, attention_mask=attention)
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


def card(row: dict, shown: str) -> str:
    """One neuron's card: its buddies, its statistics and its examples (`shown`, HTML)."""
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
    return (
        f'<section class="card" id="L{row["layer"]}N{row["index"]}">'
        f"<h2>#{row['rank']} L{row['layer']}N{row['index']} "
        f"<small>{hook_name(row['layer'])}[{row['index']}] - mean corr "
        f"{row['mean_corr']:.3f}, threshold {row['threshold']:.3f}</small></h2>"
        f"<ul>{buddies}</ul><p>{stats}</p>{shown}</section>"
    )


def _render(snippet: Snippet, explain_href: str) -> str:
    """The text around the strongest token; tokens with positive activation shaded."""
    peak_at = max(range(len(snippet.acts)), key=snippet.acts.__getitem__)
    center = snippet.spans[peak_at]
    start = max(0, center[0] - CONTEXT_CHARS)
    end = min(len(snippet.text), center[1] + CONTEXT_CHARS)
    body = shaded(snippet.text, snippet.spans, snippet.acts, start, end, snippet.peak)
    lead = "..." if start > 0 else ""
    tail = "..." if end < len(snippet.text) else ""
    doc = f'<a href="{html.escape(explain_href)}">{html.escape(snippet.doc_id)}</a>'
    return (
        f'<blockquote><div class="meta">{doc} - peak '
        f"{snippet.peak:.3f}</div>{lead}{body}{tail}</blockquote>"
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head>
<body><h1>{title}</h1><p class="meta">{subtitle}</p>
{cards}
</body></html>
"""
