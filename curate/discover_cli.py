"""`curate discover` and `curate neurons show|top|atlas`: find, inspect, specialise neuron sets."""

import json
from pathlib import Path

import click

from curate import pipeline
from curate.locations import LOCATION
from probes.backends import TORCH_DTYPE_CHOICES
from probes.errors import CurateError

DTYPE_CHOICE = click.Choice(TORCH_DTYPE_CHOICES)


def _layers(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise CurateError(f"--layers must be comma-separated integers, not {value!r}") from None


@click.command()
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Alias or model folder; repeat it. The first is the anchor, the rest are partners.",
)
@click.option("--data", "data", required=True, type=click.Path(path_type=Path), help="Shards.")
@click.option("--out", "out_dir", required=True, type=LOCATION)
@click.option(
    "--max-tokens",
    default=50_000,
    show_default=True,
    help="Anchor tokens read (for images: grid cells, --grid squared per image).",
)
@click.option("--min-corr", default=0.5, show_default=True, help="Correlation floor.")
@click.option(
    "--max-null-rate",
    type=float,
    default=None,
    help="Set the floor instead: the lowest at which at most this share of neurons pass with "
    "a rotated-null buddy, measured on a calibration split the final counts do not use.",
)
@click.option(
    "--calibration", default=0.2, show_default=True, help="Share of documents for that split."
)
@click.option("--seed", default=0, show_default=True, help="Null rotations, split, random init.")
@click.option("--top-k", default=1, show_default=True, help="Mutual top-k matching.")
@click.option("--heldout", default=0.2, show_default=True, help="Share of documents held out.")
@click.option(
    "--replicate", default=0.75, show_default=True, help="Held-out corr / discovery corr."
)
@click.option("--null-quantile", default=0.99, show_default=True, help="Of null buddy corrs.")
@click.option(
    "--null-rate/--no-null-rate",
    default=True,
    show_default=True,
    help="Rerun against a random-init copy of each partner in turn (one rerun per partner).",
)
@click.option("--layers", default=None, help="Comma-separated layers used in every model.")
@click.option(
    "--doc-tokens", default=128, show_default=True, help="Tokens read per document (its start)."
)
@click.option(
    "--label-key",
    default=None,
    help="Field that labels a document for selectivity. [default: label for images, "
    "metadata.source for text]",
)
@click.option("--grid", default=7, show_default=True, help="Images: cells per side of the map.")
@click.option("--image-key", default="image", show_default=True, help="Images: the image field.")
@click.option("--text-key", default="text", show_default=True)
@click.option("--id-key", default="id", show_default=True)
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True)
@click.option("--dtype", type=DTYPE_CHOICE, default="auto", show_default=True)
@click.option("--tokens-per-batch", default=4096, show_default=True)
@click.option("--exact", is_flag=True, help="All pairs on every token (the reference path).")
@click.option("--screen-tokens", default=8192, show_default=True, help="Tokens screened all-pairs.")
@click.option("--screen-layers", default=2, show_default=True, help="Partner layers per neuron.")
@click.option("--screen-per-layer", default=4, show_default=True, help="Candidates per layer.")
@click.option(
    "--null-tokens",
    default=131_072,
    show_default=True,
    help="Tokens the rotated null's pairs are verified on (the first ones); 0: every token.",
)
@click.option("--force", is_flag=True, help="Replace an existing neuron set at --out.")
def discover(
    models: tuple[str, ...],
    data: Path,
    out_dir: Path,
    max_tokens: int,
    min_corr: float,
    max_null_rate: float | None,
    calibration: float,
    seed: int,
    top_k: int,
    heldout: float,
    replicate: float,
    null_quantile: float,
    null_rate: bool,
    layers: str | None,
    doc_tokens: int,
    label_key: str | None,
    grid: int,
    image_key: str,
    text_key: str,
    id_key: str,
    on_error: str,
    dtype: str,
    tokens_per_batch: int,
    exact: bool,
    screen_tokens: int,
    screen_layers: int,
    screen_per_layer: int,
    null_tokens: int,
    force: bool,
) -> None:
    """Find Rosetta neurons of the first --model that have a buddy in every other one."""
    from probes import neuronset

    if len(models) < 2:
        raise CurateError("give at least two --model options: the anchor and a partner")
    result = pipeline.discover(
        pipeline.DiscoverJob(
            models=models,
            data=data,
            out=out_dir,
            max_tokens=max_tokens,
            min_corr=min_corr,
            max_null_rate=max_null_rate,
            calibration=calibration,
            seed=seed,
            top_k=top_k,
            heldout=heldout,
            replicate=replicate,
            null_quantile=null_quantile,
            null_rate=null_rate,
            layers=_layers(layers),
            doc_tokens=doc_tokens,
            label_key=label_key,
            grid=grid,
            image_key=image_key,
            text_key=text_key,
            id_key=id_key,
            on_error=on_error,
            dtype=dtype,
            tokens_per_batch=tokens_per_batch,
            exact=exact,
            screen_tokens=screen_tokens,
            screen_layers=screen_layers,
            screen_per_layer=screen_per_layer,
            null_tokens=null_tokens or None,
            force=force,
            command=pipeline.invoked_command(),
        )
    )
    click.echo(_summary(result))
    click.echo(f"neuron set: {out_dir} ({neuronset.TENSORS}, {neuronset.META}, {neuronset.TABLE})")


def _summary(result) -> str:
    meta = result.meta
    models, corpus, counts = meta["models"], meta["corpus"], meta["counts"]
    unit = "cells" if "grid" in corpus else "tokens"  # an image set counts grid cells
    lines = [
        f"anchor {models[0]['name']} ({len(models[0]['layers'])} layers x {models[0]['width']}); "
        + "partners: "
        + ", ".join(f"{m['name']} ({len(m['layers'])} x {m['width']})" for m in models[1:]),
        f"{unit}: discovery {corpus['tokens'].get('discovery', 0):,} "
        f"(aligned {corpus['aligned_tokens'].get('discovery', 0):,}), "
        f"held-out {corpus['tokens'].get('heldout', 0):,} in {sum(corpus['documents'].values()):,} "
        f"documents; corpus {corpus['fingerprint'][:16]}",
    ]
    if matching := meta.get("matching"):  # absent from sets made before screening existed
        line = f"matching: {matching['method']}"
        if "verified_pairs" in matching:
            pairs = ", ".join(f"{n:,}" for n in matching["verified_pairs"])
            line += f" ({matching['screen_tokens']:,} {unit} screened; pairs verified: {pairs}"
            if "null_tokens" in matching:  # sets made before the null had its own budget
                line += f"; the null's on {matching['null_tokens']:,} {unit}"
            line += ")"
        lines.append(line)
    if isinstance(floor_from := meta["thresholds"].get("floor_from"), dict):
        lines.append(
            f"floor {floor_from['floor']:.3f} from the null on the calibration split "
            f"({corpus['tokens'].get('calibration', 0):,} {unit}): "
            f"{floor_from['null_rate']:.2%} of neurons pass with a null buddy "
            f"(--max-null-rate {floor_from['max_null_rate']:g})"
        )
    alone = counts.get("rosetta_per_partner")  # absent from sets made before it was counted
    for p, m in enumerate(models[1:]):
        lines.append(
            f"{m['name']}: mutual buddies {counts['mutual_buddies'][p]:,}, "
            f">= floor {meta['thresholds']['min_corr']:.3f}: {counts['pass_floor'][p]:,}, "
            f"> null {meta['thresholds']['null_threshold'][p]:.3f}: {counts['pass_null'][p]:,}, "
            f"replicated: {counts['pass_replication'][p]:,}"
            + (f"; passing all three: {alone[p]:,}" if alone else "")
        )
    every = " (a buddy in every partner)" if len(models) > 2 else ""
    lines.append(
        f"Rosetta neurons{every}: {counts['rosetta']:,} of {counts['anchor_neurons']:,} "
        f"({counts['rosetta'] / counts['anchor_neurons']:.2%})"
    )
    lines += null_rate_lines(meta["null_rate"])
    for name, pop in meta["populations"].items():
        values = ", ".join(
            f"{k} {pop[k]:.3f}" if pop[k] is not None else f"{k} n/a"
            for k in ("frequency", "skew", "kurtosis", "selectivity")
        )
        lines.append(f"{name:8} ({pop['neurons']:,} neurons): {values}")
    lines.append(_table(result.rows()[:10], [m["name"] for m in models[1:]]))
    return "\n".join(lines)


def null_rate_lines(null: dict | None) -> list[str]:
    """One line per random-init partner the null rate was measured against (sets made before
    every partner was measured hold only the first)."""
    if null is None:
        return []
    return [
        f"null rate: {run['rosetta']} neurons against {run['partner']} "
        f"= {run['rate']:.2%} of the Rosetta count"
        for run in null.get("partners", [null])
    ]


def _table(rows: list[dict], partners: list[str]) -> str:
    head = f"{'rank':>4} {'neuron':>10} {'corr':>6} " + " ".join(
        f"{'buddy in ' + name[:14]:>24} {'held':>5} {'null':>5}" for name in partners
    )
    head += f" {'freq':>5} {'skew':>6} {'kurt':>7} {'CSI':>5}  top class"
    lines = [head]
    for row in rows:
        line = f"{row['rank']:>4} {_name(row):>10} "
        line += f"{row['mean_corr']:>6.3f} "
        line += " ".join(
            f"{_name(b):>17} {b['corr']:.3f} {b['heldout_corr']:>5.2f} {b['null_corr']:>5.2f}"
            for b in row["buddies"]
        )
        line += f" {row['frequency']:>5.2f} {row['skew']:>6.2f} {row['kurtosis']:>7.1f}"
        line += f" {row['selectivity']:>5.2f}  {row['top_class']}"
        lines.append(line)
    return "\n".join(lines)


def _name(neuron: dict) -> str:
    return f"L{neuron['layer']}N{neuron['index']}"


@click.group()
def neurons() -> None:
    """Inspect and specialise discovered neuron sets."""


@neurons.command()
@click.argument("set_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Metadata and rows as JSON.")
@click.option("--limit", default=0, help="Show only the first N neurons (0: all).")
def show(set_dir: Path, as_json: bool, limit: int) -> None:
    """Print a neuron set: provenance and one row per Rosetta neuron."""
    from probes.neuronset import read

    result = read(set_dir)
    rows = result.rows()[: limit or None]
    if as_json:
        click.echo(json.dumps({"meta": result.meta, "neurons": rows}, indent=2))
        return
    meta = result.meta
    click.echo(f"{set_dir}: {meta['neurons']} neurons, tool {meta['tool_version']}")
    for m in meta["models"]:
        click.echo(f"  {m['role']:7} {m['name']} ({m['family']}, weights {m['content_hash']})")
    corpus = meta["corpus"]
    click.echo(f"  corpus {corpus['root']} fingerprint {corpus['fingerprint']}")
    click.echo(f"  tokens {corpus['tokens']}")
    for line in null_rate_lines(meta["null_rate"]):
        click.echo(f"  {line}")
    click.echo(f"  command: {meta['command']}")
    click.echo(_table(rows, [m["name"] for m in meta["models"][1:]]))


@neurons.command()
@click.argument("set_dir", type=click.Path(path_type=Path))
@click.option("--target", required=True, type=click.Path(path_type=Path), help="Domain shards.")
@click.option("--background", required=True, type=click.Path(path_type=Path), help="Shards.")
@click.option("-k", "k", default=10, show_default=True, help="Neurons to keep.")
@click.option("--out", "out_dir", required=True, type=LOCATION)
@click.option("--max-tokens", default=20_000, show_default=True, help="Per side.")
@click.option("--dtype", type=DTYPE_CHOICE, default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing neuron set at --out.")
def top(
    set_dir: Path,
    target: Path,
    background: Path,
    k: int,
    out_dir: Path,
    max_tokens: int,
    dtype: str,
    force: bool,
) -> None:
    """Keep the K Rosetta neurons most selective for TARGET versus BACKGROUND (Cohen's d)."""
    result = pipeline.top(
        pipeline.TopJob(
            neurons=set_dir,
            target=target,
            background=background,
            out=out_dir,
            k=k,
            max_tokens=max_tokens,
            dtype=dtype,
            force=force,
            command=pipeline.invoked_command(),
        )
    )
    subset = result.artifact
    partners = [m["name"] for m in subset.meta["models"][1:]]
    click.echo(f"{subset.size} neurons most selective for {target} versus {background}:")
    for row, d in zip(subset.rows(), result.selectivity, strict=True):
        click.echo(f"  d={d:+.2f}  L{row['layer']}N{row['index']}  corr {row['mean_corr']:.3f}")
    click.echo(_table(subset.rows(), partners))
    click.echo(f"neuron set: {out_dir}")


@neurons.command()
@click.argument("set_dir", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Shards to show.")
@click.option("--out", "out_file", required=True, type=click.Path(path_type=Path))
@click.option(
    "--max-tokens",
    default=20_000,
    show_default=True,
    help="Tokens read (a vision set: grid cells, as discovery counts them).",
)
@click.option("--snippets", default=5, show_default=True, help="Per neuron (images: crops).")
@click.option("--limit", default=50, show_default=True, help="Neurons shown (best first).")
@click.option("--dtype", type=DTYPE_CHOICE, default="auto", show_default=True)
def atlas(
    set_dir: Path,
    data: Path,
    out_file: Path,
    max_tokens: int,
    snippets: int,
    limit: int,
    dtype: str,
) -> None:
    """Write a static HTML page: one card per neuron with its top-activating snippets."""
    shown = pipeline.atlas(
        pipeline.AtlasJob(set_dir, data, out_file, max_tokens, snippets, limit, dtype)
    )
    click.echo(f"atlas of {shown} neurons: {out_file}")
