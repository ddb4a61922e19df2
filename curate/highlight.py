"""Text with its tokens shaded by activation: the one renderer of the atlas and explain pages."""

import html
from collections.abc import Sequence


def shaded(
    text: str,
    spans: Sequence[tuple[int, int]],
    acts: Sequence[float],
    start: int,
    end: int,
    scale: float,
) -> str:
    """HTML of `text[start:end]`; every token with a positive activation is a <mark> shaded by
    its activation over `scale`, its value in the title."""
    scale = max(scale, 1e-6)
    parts, pos = [], start
    for (s, e), act in zip(spans, acts, strict=True):
        if s < pos or e > end or act <= 0:
            continue
        parts.append(html.escape(text[pos:s]))
        parts.append(
            f'<mark style="background:rgba(255,120,0,{min(act / scale, 1.0):.2f})" '
            f'title="{act:.3f}">{html.escape(text[s:e])}</mark>'
        )
        pos = e
    parts.append(html.escape(text[pos:end]))
    return "".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.5rem 1rem; margin: 1rem 0; }
h2 small { font-weight: normal; color: #666; font-size: 0.7em; }
blockquote { white-space: pre-wrap; margin: 0.5rem 0; padding: 0.5rem;
  background: #fafafa; border-left: 3px solid #f80; }
.meta { color: #888; font-size: 0.8em; }
mark { color: inherit; border-radius: 2px; }
table { border-collapse: collapse; }
td, th { padding: 0.15rem 0.6rem; text-align: right; border-bottom: 1px solid #eee; }
td:first-child, th:first-child, td.tokens, th:last-child { text-align: left; }
"""
