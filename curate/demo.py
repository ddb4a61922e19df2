"""`make demo`: the whole pipeline, as far as it exists, on the built-in default corpus.

Demo shards (Python's own help text) -> probe with the default model and the shipped
discovered neuron set -> filter to 30 % of the tokens by the default recipe and by the random
baseline at the same budget, so the two selections can be compared side by side.
"""

from pathlib import Path

import click

from curate.demo_shards import build_demo_shards
from curate.pipeline import FilterJob, ProbeJob, filter, probe
from filters.recipe import load_recipe
from probes.atomic import output_folders


def run_demo(out_dir: Path, docs_per_shard: int | None = None) -> None:
    """Build the demo shards (at most `docs_per_shard` documents each; None: all), probe them,
    then filter by the default recipe and by the random baseline."""
    with output_folders((out_dir, "--out")):
        _run(out_dir, docs_per_shard)


def _run(out_dir: Path, docs_per_shard: int | None) -> None:
    shards = build_demo_shards(out_dir / "shards", docs_per_shard)
    size = "" if docs_per_shard is None else f", at most {docs_per_shard} documents per shard"
    click.echo(f"demo shards: {shards} (Python's own help text{size})")
    recipe = load_recipe("rosetta-default")
    p = recipe.probe
    click.echo(f"\n== probe: {p.model} x {p.neurons}")
    stats = probe(ProbeJob(shards, p.neurons, out_dir / "scores", model=p.model, agg=p.agg))
    click.echo(stats.summary())
    for name in ("rosetta-default", "random"):
        click.echo(f"\n== filter: recipe {name}, budget {recipe.select.budget}")
        result = filter(
            FilterJob(shards, recipe=name, out=out_dir / name, scores=out_dir / "scores")
        )
        click.echo(result.summary())
        click.echo(f"wrote {out_dir / name} (manifest.json, report.png)")
