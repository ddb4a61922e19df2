"""`make demo`: the whole pipeline, as far as it exists, on the built-in default corpus.

Demo shards (Python's own help text) -> probe with the default model and the shipped
discovered neuron set -> filter to 30 % of the tokens by the default recipe and by the random
baseline at the same budget, so the two selections can be compared side by side -> a tiny
`curate bench` (every arm, a small BERT, a built-in task) that shows the harness end to end.
"""

import dataclasses
from pathlib import Path

import click

from curate.cpt.config import BenchConfig, load_config
from curate.demo_shards import build_demo_shards
from curate.demo_tasks import TASK, build_demo_tasks
from curate.pipeline import BenchJob, FilterJob, ProbeJob, bench, filter, probe
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
    scores = out_dir / "scores"
    settings = {"model": p.model, "agg": p.agg, "backend": p.backend, "dtype": p.dtype}
    stats = probe(ProbeJob(shards, p.neurons, scores, **settings))
    click.echo(stats.summary())
    for name in ("rosetta-default", "random"):
        click.echo(f"\n== filter: recipe {name}, budget {recipe.select.budget}")
        result = filter(
            FilterJob(shards, recipe=name, out=out_dir / name, scores=out_dir / "scores")
        )
        click.echo(result.summary())
        click.echo(f"wrote {out_dir / name} (manifest.json, report.png)")
    tasks = build_demo_tasks(shards, out_dir / "tasks")
    config = _tiny_bench(result.manifest["input_tokens"])
    click.echo(
        f"\n== bench: CPT of a tiny BERT on each arm's selection, B = {config.grid.budget:,} "
        f"tokens; task {tasks / TASK} (which help text a sentence is from)"
    )
    bench(BenchJob(shards, tasks, out_dir / "bench", config))
    click.echo((out_dir / "bench" / "report.md").read_text())
    click.echo(f"wrote {out_dir / 'bench'} (report.json, report.md, parity.png)")


def _tiny_bench(corpus_tokens: int) -> BenchConfig:
    """The bundled tiny bench, its budget shrunk to fit a small demo corpus: the largest token
    count must fit in the selection pool (about half the corpus after the task's documents and
    the generic split are set aside)."""
    config = load_config("tiny")
    largest = max(config.grid.multiples)
    budget = min(config.grid.budget, int(corpus_tokens * 0.4 / largest))
    return dataclasses.replace(config, grid=dataclasses.replace(config.grid, budget=budget))
