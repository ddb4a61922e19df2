"""`curate bench`: parse options, call the pipeline, print where the report is."""

from pathlib import Path

import click

from curate.pipeline import BenchJob, bench


@click.command("bench")
@click.option("--pool", required=True, type=click.Path(path_type=Path), help="Pool shards.")
@click.option(
    "--tasks",
    required=True,
    type=click.Path(path_type=Path),
    help="Task folders (train.jsonl, validation.jsonl) in the Hugging Face glue schema.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--config",
    "config",
    default=None,
    help="Bench config: bundled name (default, quick, tiny) or a TOML file.",
)
@click.option("--quick", is_flag=True, help="The bundled quick config (~15 min on 2 cores).")
@click.option(
    "--finetune", is_flag=True, help="Also fine-tune each arm's final checkpoints on every task."
)
@click.option("--report-only", is_flag=True, help="Report on the runs finished so far.")
def bench_cmd(
    pool: Path,
    tasks: Path,
    out_dir: Path,
    config: str | None,
    quick: bool,
    finetune: bool,
    report_only: bool,
) -> None:
    """Continued pre-training on each arm's selection at matched tokens: parity and savings."""
    if quick and config:
        raise click.UsageError("--quick and --config are exclusive")
    report = bench(
        BenchJob(
            pool,
            tasks,
            out_dir,
            config or ("quick" if quick else "default"),
            report_only,
            finetune=finetune,
        )
    )
    click.echo((out_dir / "report.md").read_text())
    click.echo(f"report: {out_dir}/report.json, report.md, parity.png ({len(report['runs'])} runs)")
