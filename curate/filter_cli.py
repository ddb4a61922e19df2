"""`curate filter` and `curate recipes`: parse options, call the pipeline, print.

Scoring and selection stay separate: `curate filter` probes only shards whose side files are
missing or stale, then selects from the side files, so re-selecting at another budget never
runs the model again. Side files live in --scores, by default in the user cache keyed by the
shard directory's absolute path ($ROSETTA_CURATE_CACHE/scores/<hash>), so every later
`curate filter` of the same corpus finds them.
"""

from pathlib import Path

import click

from curate.locations import LOCATION
from curate.pipeline import FilterJob, filter
from filters.recipe import bundled_recipes, load_recipe
from probes.backends import BACKENDS, DTYPE_CHOICES


@click.command("filter")
@click.argument("shard_dir", type=LOCATION)
@click.option(
    "--recipe",
    "recipe_name",
    default=None,
    help="Bundled recipe name (see `curate recipes ls`) or a TOML file. "
    "[default: rosetta-default, or rosetta-image for image shards]",
)
@click.option(
    "--unit",
    type=click.Choice(["tokens", "pixels", "documents", "images"]),
    default=None,
    help="Override select.unit: what the budget counts. [default: tokens, or pixels for images]",
)
@click.option(
    "--modality",
    type=click.Choice(["text", "image"]),
    default=None,
    help="What the shards hold. [default: detected from the shards]",
)
@click.option("--out", "out_dir", required=True, type=LOCATION)
@click.option(
    "--budget",
    default=None,
    help="Override select.budget: an amount in select.unit (5M, 2B) or a share (30%).",
)
@click.option(
    "--scores",
    "scores_dir",
    type=LOCATION,
    default=None,
    help="Score side files (default: the user cache, keyed by SHARD_DIR).",
)
@click.option(
    "--dropped",
    "dropped_dir",
    type=LOCATION,
    default=None,
    help="Also write the dropped rows here, in the same layout.",
)
@click.option("--dry-run", is_flag=True, help="Select and report; write nothing.")
@click.option("--seed", type=int, default=None, help="Override select.seed.")
@click.option("--tokenizer", default=None, help="Override select.tokenizer (alias or folder).")
@click.option(
    "--dsir-target",
    type=LOCATION,
    default=None,
    help="Override dsir.target (dsir recipes).",
)
@click.option(
    "--max-exact-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Override select.exact_max_rows: past this many rows, select by streaming sketch.",
)
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default=None,
    help="Override probe.on_error: stop at a bad row, or skip and count it.",
)
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    default=None,
    help="Override probe.backend: what runs the model (torch, onnx, vllm).",
)
@click.option(
    "--dtype", type=click.Choice(DTYPE_CHOICES), default=None, help="Override probe.dtype."
)
def filter_cmd(
    shard_dir: Path,
    recipe_name: str | None,
    out_dir: Path,
    budget: str | None,
    scores_dir: Path | None,
    dropped_dir: Path | None,
    dry_run: bool,
    seed: int | None,
    tokenizer: str | None,
    dsir_target: Path | None,
    on_error: str | None,
    backend: str | None,
    dtype: str | None,
    max_exact_rows: int | None,
    modality: str | None,
    unit: str | None,
) -> None:
    """Cut SHARD_DIR to a budget (tokens, or pixels / images) by a recipe; write kept documents,
    manifest and report."""
    result = filter(
        FilterJob(
            shards=shard_dir,
            recipe=recipe_name,
            out=out_dir,
            budget=budget,
            scores=scores_dir,
            dropped=dropped_dir,
            dry_run=dry_run,
            seed=seed,
            tokenizer=tokenizer,
            dsir_target=dsir_target,
            max_exact_rows=max_exact_rows,
            on_error=on_error,
            backend=backend,
            dtype=dtype,
            modality=modality,
            unit=unit,
        )
    )
    if result.probe_stats is not None and result.probe_stats.shards:
        click.echo(result.probe_stats.summary(), err=True)
    click.echo(result.summary())
    click.echo("dry run: nothing written" if dry_run else f"wrote {out_dir}")


@click.group("recipes")
def recipes() -> None:
    """List and check filter recipes."""


@recipes.command("ls")
def recipes_ls() -> None:
    """Bundled recipes, usable by name with `curate filter --recipe NAME`."""
    for path in bundled_recipes():
        recipe = load_recipe(str(path))
        click.echo(f"{path.stem:18} {recipe.description}")


@recipes.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
def recipes_validate(file: Path) -> None:
    """Load FILE with its includes and check every key and value."""
    recipe = load_recipe(str(file))
    sel = recipe.select
    click.echo(
        f"ok: {recipe.name}: score {recipe.score.method}, mode {sel.mode}, budget {sel.budget}, "
        f"model {recipe.probe.model}"
    )
