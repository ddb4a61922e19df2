"""`make demo`: the whole pipeline, as far as it exists, on the built-in default corpus.

Demo shards (Python's own help text) -> probe with the default model and the shipped
discovered neuron set -> filter to 30 % of the tokens by the default recipe and by the random
baseline at the same budget, so the two selections can be compared side by side.
"""

from pathlib import Path

import click

from curate.demo_shards import build_demo_shards
from curate.filter_cli import run_filter
from filters.manifest import summary
from filters.recipe import load_recipe
from probes.score_shards import probe_directory


def run_demo(out_dir: Path, docs_per_shard: int | None = None) -> None:
    """Build the demo shards (at most `docs_per_shard` documents each; None: all), probe them,
    then filter by the default recipe and by the random baseline."""
    shards = build_demo_shards(out_dir / "shards", docs_per_shard)
    size = "" if docs_per_shard is None else f", at most {docs_per_shard} documents per shard"
    click.echo(f"demo shards: {shards} (Python's own help text{size})")
    recipe = load_recipe("rosetta-default")
    probe = recipe.probe
    click.echo(f"\n== probe: {probe.model} x {probe.neurons}")
    stats = probe_directory(shards, probe.neurons, out_dir / "scores", probe.model, probe.agg)
    click.echo(stats.summary())
    for name in ("rosetta-default", "random"):
        click.echo(f"\n== filter: recipe {name}, budget {recipe.select.budget}")
        manifest, _ = run_filter(
            shards, load_recipe(name), out_dir / name, scores_dir=out_dir / "scores"
        )
        click.echo(summary(manifest))
        click.echo(f"wrote {out_dir / name} (manifest.json, report.png)")
