"""`curate filter` and `curate recipes`: cut a corpus to a token budget by a recipe.

Scoring and selection stay separate: `curate filter` probes only shards whose side files are
missing or stale, then selects from the side files, so re-selecting at another budget never
runs the model again. Side files live in --scores, by default in the user cache keyed by the
shard directory's absolute path ($ROSETTA_CURATE_CACHE/scores/<hash>), so every later
`curate filter` of the same corpus finds them.
"""

import hashlib
from pathlib import Path

import click
import numpy as np

from filters.corpus import (
    DocTable,
    assign_sources,
    directory_source,
    from_side_files,
    from_text,
    iter_shard_docs,
    side_file_rows,
    side_files,
)
from filters.dsir import NgramModel, log_importance, target_model
from filters.manifest import (
    KeyHistogram,
    build_manifest,
    manifest_from_totals,
    summary,
    write_manifest,
    write_report,
)
from filters.plan import Plan, make_plan
from filters.recipe import Recipe, bundled_recipes, load_recipe
from filters.stream import StreamPlan, check_streamable, stream_plan
from filters.tokens import token_counter
from filters.write import plan_digest, prepare_output, write_rows
from probes.errors import CurateError
from probes.models import cache_dir
from probes.score_shards import probe_directory
from probes.shards import list_shards, shard_root


def default_scores_dir(shard_dir: Path) -> Path:
    key = hashlib.sha256(str(shard_dir.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "scores" / key


def probe_side_files(shard_dir: Path, recipe: Recipe, scores_dir: Path, progress: bool) -> None:
    """Score the shards whose side files are missing or stale."""
    p = recipe.probe
    stats = probe_directory(
        shard_dir,
        p.neurons,
        scores_dir,
        model=p.model,
        agg=p.agg,
        on_error=p.on_error,
        text_key=p.text_key,
        id_key=p.id_key,
        progress=progress,
    )
    if stats.shards and progress:
        click.echo(stats.summary(), err=True)


def build_table(
    shard_dir: Path, recipe: Recipe, scores_dir: Path, progress: bool = True, probe: bool = True
) -> tuple[DocTable, np.ndarray | None, str]:
    """The document table, DSIR scores (or None) and the budget tokenizer's name.

    probe=False: the side files are known to be fresh (run_filter probed already).
    """
    p, sel = recipe.probe, recipe.select
    tokenizer = sel.tokenizer or p.model
    dsir_score = None
    if recipe.needs_probe:
        if probe:
            probe_side_files(shard_dir, recipe, scores_dir, progress)
        table = from_side_files(shard_dir, scores_dir)
        if sel.tokenizer:
            table.tokens = _recount(shard_dir, recipe, len(table))
    else:
        raw = NgramModel(recipe.dsir.buckets)
        visit = (
            (lambda docs: raw.add(d.text for d in docs)) if recipe.score.method == "dsir" else None
        )
        count = token_counter(tokenizer)
        table = from_text(shard_dir, p.text_key, p.id_key, p.on_error, count, visit)
        if recipe.score.method == "dsir":
            target = target_model(
                Path(recipe.dsir.target), recipe.dsir.text_key, recipe.dsir.buckets
            )
            dsir_score = np.concatenate(
                [
                    log_importance([d.text for d in docs], raw, target)
                    for _, docs in iter_shard_docs(shard_dir, p.text_key, p.id_key, p.on_error)
                ]
            )
    assign_sources(table, recipe.quotas.source)
    return table, dsir_score, tokenizer


def _recount(shard_dir: Path, recipe: Recipe, rows: int) -> np.ndarray:
    p = recipe.probe
    count = token_counter(recipe.select.tokenizer)
    counts = [
        count([d.text if d.error is None else "" for d in docs])
        for _, docs in iter_shard_docs(shard_dir, p.text_key, p.id_key, "skip")
    ]
    tokens = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    if len(tokens) != rows:
        raise CurateError(f"{shard_dir}: shards changed since scoring; rerun to rescore them")
    return tokens


def rows_by_shard(table: DocTable, mask: np.ndarray) -> dict[str, np.ndarray]:
    return {
        rel: np.sort(table.row[(table.shard == i) & mask]) for i, rel in enumerate(table.shards)
    }


def run_filter(
    shard_dir: Path,
    recipe: Recipe,
    out_dir: Path,
    scores_dir: Path | None = None,
    dropped_dir: Path | None = None,
    dry_run: bool = False,
    progress: bool = True,
) -> tuple[dict, Plan | StreamPlan]:
    """Select and (unless dry_run) write; returns the manifest and the plan.

    Selection is exact, on a table in memory, up to select.exact_max_rows rows (counted from the
    side files' footers); past that the side files are streamed and the cut found by a sketch.
    """
    list_shards(shard_dir)  # a bad directory fails before any model load
    if recipe.score.method == "dsir" and not recipe.dsir.target:
        raise CurateError("dsir.target is not set: name the target shard directory in the recipe")
    scores_dir = scores_dir or default_scores_dir(shard_dir)
    if recipe.needs_probe:
        probe_side_files(shard_dir, recipe, scores_dir, progress)
        paths, meta, columns = side_files(shard_dir, scores_dir)
        rows = side_file_rows(paths)
        limit = recipe.select.exact_max_rows
        if rows > limit:
            check_streamable(recipe, rows, limit)
            return _filter_streaming(
                shard_dir, recipe, paths, meta, columns, out_dir, dropped_dir, dry_run
            )
    table, dsir_score, tokenizer = build_table(shard_dir, recipe, scores_dir, progress, probe=False)
    plan = make_plan(table, recipe, recipe.budget, dsir_score)
    manifest = build_manifest(table, plan, recipe, tokenizer)
    if dry_run:
        return manifest, plan
    outputs = [(out_dir, rows_by_shard(table, plan.keep), "--out")]
    if dropped_dir is not None:
        outputs.append((dropped_dir, rows_by_shard(table, ~plan.keep), "--dropped"))
    _write(table.root, outputs, manifest, KeyHistogram.of(plan.key, plan.keep, plan.threshold))
    return manifest, plan


def _filter_streaming(
    shard_dir: Path,
    recipe: Recipe,
    paths: list[Path],
    meta: dict,
    columns: list[str],
    out_dir: Path,
    dropped_dir: Path | None,
    dry_run: bool,
) -> tuple[dict, StreamPlan]:
    """run_filter past select.exact_max_rows: stream the side files, cut with the sketch."""
    root = shard_root(shard_dir)
    rels = [s.relative_to(root).as_posix() for s in list_shards(shard_dir)]
    plan = stream_plan(paths, columns, meta, rels, recipe)
    manifest = manifest_from_totals(
        {k: getattr(plan, k) for k in _TOTALS},
        plan.dropped,
        {
            n: (plan.input_by_source[n], plan.kept_by_source[n])
            for n in sorted({directory_source(r) for r in rels})
        },
        len(rels),
        meta,
        plan.spec,
        recipe,
        recipe.probe.model,  # the budget tokenizer: select.tokenizer does not stream
        "sketch",
    )
    outputs = [(out_dir, plan.kept_rows, "--out")]
    if dropped_dir is not None:
        outputs.append((dropped_dir, plan.dropped_rows, "--dropped"))
    if not dry_run:
        _write(root, outputs, manifest, plan.histogram)
    return manifest, plan


_TOTALS = (
    "input_docs",
    "input_tokens",
    "kept_docs",
    "kept_tokens",
    "budget_tokens",
    "budget_reached",
    "threshold",
)


def _write(
    root: Path,
    outputs: list[tuple[Path, dict[str, np.ndarray], str]],
    manifest: dict,
    hist: KeyHistogram,
) -> None:
    """Write each output's rows, then the report and the manifest."""
    for folder, rows, option in outputs:
        prepare_output(folder, plan_digest(rows, manifest["recipe"]), option)
        write_rows(root, rows, folder)
    out_dir = outputs[0][0]
    write_report(out_dir, hist, manifest)
    write_manifest(out_dir, manifest)


@click.command("filter")
@click.argument("shard_dir", type=click.Path(path_type=Path))
@click.option(
    "--recipe",
    "recipe_name",
    default="rosetta-default",
    show_default=True,
    help="Bundled recipe name (see `curate recipes ls`) or a TOML file.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--budget", default=None, help="Override select.budget: tokens (5M, 2B) or 30%.")
@click.option(
    "--scores",
    "scores_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Score side files (default: the user cache, keyed by SHARD_DIR).",
)
@click.option(
    "--dropped",
    "dropped_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the dropped rows here, in the same layout.",
)
@click.option("--dry-run", is_flag=True, help="Select and report; write nothing.")
@click.option("--seed", type=int, default=None, help="Override select.seed.")
@click.option("--tokenizer", default=None, help="Override select.tokenizer (alias or folder).")
@click.option(
    "--dsir-target",
    type=click.Path(path_type=Path),
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
def filter_cmd(
    shard_dir: Path,
    recipe_name: str,
    out_dir: Path,
    budget: str | None,
    scores_dir: Path | None,
    dropped_dir: Path | None,
    dry_run: bool,
    seed: int | None,
    tokenizer: str | None,
    dsir_target: Path | None,
    on_error: str | None,
    max_exact_rows: int | None,
) -> None:
    """Cut SHARD_DIR to a token budget by a recipe; write kept documents, manifest and report."""
    recipe = load_recipe(recipe_name)
    select = {
        "budget": budget,
        "seed": seed,
        "tokenizer": tokenizer,
        "exact_max_rows": max_exact_rows,
    }
    recipe = recipe.replace(
        select={k: v for k, v in select.items() if v is not None},
        probe={"on_error": on_error} if on_error else {},
        dsir={"target": str(dsir_target.resolve())} if dsir_target else {},
    )
    manifest, _ = run_filter(shard_dir, recipe, out_dir, scores_dir, dropped_dir, dry_run)
    click.echo(summary(manifest))
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
