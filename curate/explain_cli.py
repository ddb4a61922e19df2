"""`curate explain`: which Rosetta neurons drive one document's score, and on which tokens."""

from pathlib import Path

import click

from curate import pipeline
from probes.aggregate import AGGREGATIONS

TOKENS_SHOWN = 4  # per neuron on the terminal


@click.command("explain")
@click.argument("shard_dir", type=click.Path(path_type=Path))
@click.option("--id", "doc_id", required=True, help="The document's id (its --id-key field).")
@click.option(
    "--scores",
    type=click.Path(path_type=Path),
    default=None,
    help="Side files; default: those `curate filter` keeps for SHARD_DIR. With side files the "
    "model, neurons and aggregation are theirs and the numbers shown are theirs.",
)
@click.option("--neurons", default="default-neurons", show_default=True, help="Without side files.")
@click.option("--model", default=pipeline.DEFAULT_MODEL, show_default=True, help="Without them.")
@click.option("--agg", type=click.Choice(AGGREGATIONS), default=None, help="Without them.")
@click.option("--text-key", default="text", show_default=True)
@click.option("--id-key", default="id", show_default=True)
@click.option("--top", default=10, show_default=True, help="Neurons listed on the terminal.")
@click.option("--html", "html_out", type=click.Path(path_type=Path), default=None)
@click.option("--atlas", default=None, help="Atlas page the HTML links each neuron to.")
def explain_cmd(
    shard_dir: Path,
    doc_id: str,
    scores: Path | None,
    neurons: str,
    model: str,
    agg: str | None,
    text_key: str,
    id_key: str,
    top: int,
    html_out: Path | None,
    atlas: str | None,
) -> None:
    """Show which neurons drive a document's score and the tokens they fire on."""
    result = pipeline.explain(
        pipeline.ExplainJob(
            shard_dir,
            doc_id,
            scores=scores,
            neurons=neurons,
            model=model,
            agg=agg or "",
            text_key=text_key,
            id_key=id_key,
            html=html_out,
            atlas=atlas,
        )
    )
    for line in result.facts():
        click.echo(line)
    e = result.explanation
    click.echo(
        f"{'rank':>4}  {'neuron':<10} {'weight':>7} {'value':>8} {'contrib':>8} {'share':>6}  "
        "fires most on"
    )
    for rank, part in enumerate(e.ranked()[:top], 1):
        share = part.contribution / e.score if e.score else float("nan")
        tokens = ", ".join(f"{t!r} {a:.2f}" for t, a in e.top_tokens(part, TOKENS_SHOWN))
        click.echo(
            f"{rank:>4}  {part.neuron.column:<10} {part.weight:>7.4f} {part.value:>8.4f} "
            f"{part.contribution:>8.4f} {share:>6.1%}  {tokens}"
        )
    if html_out is not None:
        click.echo(f"page: {html_out}")
