"""`curate zoo train` and `curate scaling`: train a model zoo, then measure the scaling laws."""

from pathlib import Path

import click

from curate import pipeline
from probes.backends import TORCH_DTYPE_CHOICES


@click.group("zoo")
def zoo() -> None:
    """Small language models at several MLP widths x seeds, trained by the tool."""


@zoo.command("train")
@click.option(
    "--config",
    "config",
    default="default",
    show_default=True,
    help="Zoo config: bundled name (default, tiny) or a TOML file.",
)
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Training shards.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
def zoo_train(config: str, data: Path, out_dir: Path) -> None:
    """Train every member not yet complete (an interrupted member resumes)."""
    records = pipeline.train_zoo(pipeline.ZooJob(config, data, out_dir))
    click.echo(f"{'member':18} {'neurons':>8} {'params':>10} {'held-out loss':>13} {'seconds':>8}")
    for r in records:
        name = f"mlp{r['width']}-seed{r['seed']}"
        click.echo(
            f"{name:18} {r['mlp_neurons']:>8,} {r['parameters']:>10,} "
            f"{r['heldout_loss']:>13.3f} {r['train']['seconds']:>8.0f}"
        )
    click.echo(f"zoo: {out_dir} ({len(records)} models)")


@click.command("scaling")
@click.option("--zoo", "zoo_dir", required=True, type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Discovery shards.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Pretrained extra point; repeat it: each is the anchor in turn against the others.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    type=click.Path(path_type=Path),
    help="An existing neuron set as an extra point (e.g. probes/data/default-vision-neurons).",
)
@click.option(
    "--anchors", default=0, show_default=True, help="Anchor seeds per size (0: every seed)."
)
@click.option("--max-tokens", default=100_000, show_default=True, help="Discovery tokens.")
@click.option(
    "--max-null-rate",
    default=0.001,
    show_default=True,
    help="Discovery's floor: the lowest at which at most this share of neurons pass with a "
    "rotated-null buddy on a calibration split.",
)
@click.option("--doc-tokens", default=128, show_default=True)
@click.option("--label-key", default=None, help="Selectivity classes. [default: metadata.source]")
@click.option("--null-rate/--no-null-rate", default=True, show_default=True)
@click.option("--dtype", type=click.Choice(TORCH_DTYPE_CHOICES), default="auto", show_default=True)
@click.option("--replicates", default=2000, show_default=True, help="Bootstrap replicates.")
@click.option("--seed", default=0, show_default=True)
def scaling(
    zoo_dir: Path,
    data: Path,
    out_dir: Path,
    models: tuple[str, ...],
    sets: tuple[Path, ...],
    anchors: int,
    max_tokens: int,
    max_null_rate: float,
    doc_tokens: int,
    label_key: str | None,
    null_rate: bool,
    dtype: str,
    replicates: int,
    seed: int,
) -> None:
    """Rosetta count, fraction and selectivity per zoo size; the power-law fit and its model."""
    summary = pipeline.scaling(
        pipeline.ScalingJob(
            zoo=zoo_dir,
            data=data,
            out=out_dir,
            models=models,
            sets=sets,
            anchors=anchors,
            discover=pipeline.DiscoverJob(
                models=(),
                data=data,
                out=out_dir,
                max_tokens=max_tokens,
                max_null_rate=max_null_rate,
                doc_tokens=doc_tokens,
                label_key=label_key,
                null_rate=null_rate,
                dtype=dtype,
                seed=seed,
            ),
            replicates=replicates,
            command=pipeline.invoked_command(),
        )
    )
    from curate.scaling.report import MARKDOWN, verdicts

    for line in verdicts(summary):
        click.echo(f"- {line}")
    click.echo(f"report: {out_dir / MARKDOWN}")
