"""The explain page: a document's score taken apart by neuron, with the text it saw shaded.

Each neuron links to its card in the atlas (`atlas#L{layer}N{index}`) when an atlas is given.
"""

import html

from curate.highlight import STYLE, shaded
from probes.explain import Explanation, NeuronPart

SHOWN = 5  # neurons whose activations are drawn on the text


def explain_page(explanation: Explanation, facts: list[str], atlas: str | None) -> str:
    ranked = explanation.ranked()
    rows = "\n".join(_row(explanation, rank, part, atlas) for rank, part in enumerate(ranked, 1))
    cards = "\n".join(_card(explanation, part, atlas) for part in ranked[:SHOWN])
    title = f"Why {explanation.doc_id} scored {explanation.score:.4f}"
    head = "".join(f"<li>{html.escape(line)}</li>" for line in facts)
    return _PAGE.format(
        style=STYLE,
        title=html.escape(title),
        facts=head,
        rows=rows,
        shown=min(SHOWN, len(ranked)),
        cards=cards,
    )


def _name(part: NeuronPart, atlas: str | None) -> str:
    name = part.neuron.column
    return f'<a href="{html.escape(atlas)}#{name}">{name}</a>' if atlas else name


def _row(explanation: Explanation, rank: int, part: NeuronPart, atlas: str | None) -> str:
    share = part.contribution / explanation.score if explanation.score else float("nan")
    tokens = ", ".join(
        f"{html.escape(repr(text))} {act:.2f}" for text, act in explanation.top_tokens(part)
    )
    return (
        f"<tr><td>{rank}</td><td>{_name(part, atlas)}</td><td>{part.weight:.4f}</td>"
        f"<td>{part.value:.4f}</td><td>{part.contribution:.4f}</td><td>{share:.1%}</td>"
        f'<td class="tokens">{tokens}</td></tr>'
    )


def _card(explanation: Explanation, part: NeuronPart, atlas: str | None) -> str:
    spans = explanation.spans
    end = spans[-1][1] if spans else 0
    text = shaded(explanation.text, spans, part.acts.tolist(), 0, end, float(part.acts.max()))
    tail = "..." if end < len(explanation.text) else ""
    return (
        f'<section class="card"><h2>{_name(part, atlas)} <small>value {part.value:.4f}, '
        f"contribution {part.contribution:.4f}</small></h2>"
        f"<blockquote>{text}{tail}</blockquote></section>"
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head>
<body><h1>{title}</h1><ul class="meta">{facts}</ul>
<h2>Neurons by contribution to the score</h2>
<table><thead><tr><th>rank</th><th>neuron</th><th>weight</th><th>value</th>
<th>contribution</th><th>share</th><th>fires most on</th></tr></thead>
<tbody>
{rows}
</tbody></table>
<h2>Where the top {shown} fire</h2>
{cards}
</body></html>
"""
