"""`curate bench`: parse options, call the pipeline, print where the report is."""

from pathlib import Path

import click

from curate.pipeline import BenchJob, ImageBenchJob, bench, image_bench


@click.command("bench")
@click.option("--pool", required=True, type=click.Path(path_type=Path), help="Pool shards.")
@click.option(
    "--modality",
    type=click.Choice(["text", "image"]),
    default="text",
    show_default=True,
    help="text: CPT of a language model, GLUE tasks; image: an ImageNet model, ImageNet top-1 "
    "and a downstream linear probe.",
)
@click.option(
    "--tasks",
    type=click.Path(path_type=Path),
    help="Text: task folders (train.jsonl, validation.jsonl) in the Hugging Face glue schema.",
)
@click.option(
    "--imagenet-dir",
    type=click.Path(path_type=Path),
    help="Image: an ImageNet-layout folder (<wnid>/<image>, classes.tsv) for top-1.",
)
@click.option(
    "--downstream",
    type=click.Path(path_type=Path),
    help="Image: train-* and test-* image shards with a label (the linear-probe task).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--config",
    "config",
    default=None,
    help="Bench config: bundled name (default, quick, tiny; image-default, image-quick) or a "
    "TOML file.",
)
@click.option("--quick", is_flag=True, help="The bundled quick config (~15 min on 2 cores).")
@click.option(
    "--finetune", is_flag=True, help="Also fine-tune each arm's final checkpoints on every task."
)
@click.option("--report-only", is_flag=True, help="Report on the runs finished so far.")
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Text: where models train and evaluate (cpu, cuda, cuda:1).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Text: runs side by side in this many processes (e.g. 8 on one GPU).",
)
@click.option(
    "--prepare",
    is_flag=True,
    help="Text: make the splits, scores and every run's selection, then stop; a machine "
    "without the probe model (a GPU box) can then train from the same --out.",
)
def bench_cmd(
    pool: Path,
    modality: str,
    tasks: Path | None,
    imagenet_dir: Path | None,
    downstream: Path | None,
    out_dir: Path,
    config: str | None,
    quick: bool,
    finetune: bool,
    report_only: bool,
    device: str,
    workers: int,
    prepare: bool,
) -> None:
    """Continued pre-training on each arm's selection at matched tokens: parity and savings."""
    if quick and config:
        raise click.UsageError("--quick and --config are exclusive")
    if modality == "image":
        if imagenet_dir is None or downstream is None:
            raise click.UsageError("--modality image needs --imagenet-dir and --downstream")
        chosen = config or ("image-quick" if quick else "image-default")
        report = image_bench(
            ImageBenchJob(pool, imagenet_dir, downstream, out_dir, chosen, report_only)
        )
        _show(out_dir, report)
        return
    if tasks is None:
        raise click.UsageError("--modality text needs --tasks")
    report = bench(
        BenchJob(
            pool,
            tasks,
            out_dir,
            config or ("quick" if quick else "default"),
            report_only,
            finetune=finetune,
            device=device,
            workers=workers,
            prepare=prepare,
        )
    )
    if report is None:
        runs = len(list(out_dir.glob("runs/*/T*/seed*/selection.json")))
        click.echo(f"prepared {out_dir}: {runs} selections; train with --device/--workers there")
        return
    _show(out_dir, report)


def _show(out_dir: Path, report: dict) -> None:
    click.echo((out_dir / "report.md").read_text())
    click.echo(f"report: {out_dir}/report.json, report.md, parity.png ({len(report['runs'])} runs)")
