"""`make demo`: the whole pipeline, as far as it exists, on the built-in default corpus."""

from pathlib import Path

import click

from curate.demo_shards import build_demo_shards
from probes.score_shards import probe_directory

DEFAULT_MODEL = "minilm-l6"
DEFAULT_NEURONS = str(Path(__file__).resolve().parents[1] / "probes" / "data" / "default-neurons")


def run_demo(out_dir: Path) -> None:
    shards = build_demo_shards(out_dir / "shards")
    click.echo(f"demo shards: {shards} (Python's own help text)")
    click.echo(f"\n== probe: {DEFAULT_MODEL} x {DEFAULT_NEURONS}")
    stats = probe_directory(shards, DEFAULT_NEURONS, out_dir / "scores", DEFAULT_MODEL, "max_norm")
    click.echo(stats.summary())
