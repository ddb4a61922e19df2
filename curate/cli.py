"""The `curate` command line."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights only ever come from packages or folders
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import click  # noqa: E402

from curate import __version__  # noqa: E402
from curate.locations import LOCATION  # noqa: E402
from probes.aggregate import AGGREGATIONS, DEFAULT_AGGREGATION  # noqa: E402
from probes.backends import BACKENDS, DEFAULT_BACKEND, DTYPE_CHOICES  # noqa: E402
from probes.errors import CurateError  # noqa: E402

DEFAULT_MODEL = "minilm-l6"


class CurateGroup(click.Group):
    """Turns user-input errors into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CurateError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except PermissionError as exc:  # a store that let the checks through refused a write
            click.echo(f"error: permission denied: {exc}", err=True)
            sys.exit(2)


@click.group(cls=CurateGroup)
@click.version_option(__version__, prog_name="curate")
def main() -> None:
    """Cut a corpus to a token budget by the documents that most activate Rosetta neurons."""


@main.command()
@click.argument("shard_dir", type=LOCATION)
@click.option("--neurons", "neurons", required=True, help="Neuron set: JSON file or inline list.")
@click.option("--out", "out_dir", required=True, type=LOCATION)
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Alias or model folder.")
@click.option(
    "--agg", type=click.Choice(AGGREGATIONS), default=DEFAULT_AGGREGATION, show_default=True
)
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True)
@click.option("--text-key", default="text", show_default=True)
@click.option("--id-key", default="id", show_default=True)
@click.option("--image-key", default="image", show_default=True, help="An image model's input.")
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    default=DEFAULT_BACKEND,
    show_default=True,
    help="What runs the model: torch, onnx (ONNX Runtime, exported once and cached), or vllm "
    "(decoders; needs vLLM).",
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPE_CHOICES),
    default="auto",
    show_default=True,
    help="Precision: torch runs fp32/bf16, onnx fp32/int8; auto picks for this CPU.",
)
@click.option(
    "--tokens-per-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Padded tokens per batch. [default: 2048 for torch fp32 text, else 8192]",
)
def probe(
    shard_dir: Path,
    neurons: str,
    out_dir: Path,
    model: str,
    agg: str,
    on_error: str,
    text_key: str,
    id_key: str,
    image_key: str,
    backend: str,
    dtype: str,
    tokens_per_batch: int | None,
) -> None:
    """Score every document of SHARD_DIR into row-aligned .scores.parquet side files (images
    with a vision --model)."""
    from curate.pipeline import ProbeJob
    from curate.pipeline import probe as run_probe

    stats = run_probe(
        ProbeJob(
            shard_dir,
            neurons,
            out_dir,
            model=model,
            agg=agg,
            on_error=on_error,
            text_key=text_key,
            id_key=id_key,
            dtype=dtype,
            tokens_per_batch=tokens_per_batch,
            image_key=image_key,
            backend=backend,
        )
    )
    click.echo(stats.summary())
    click.echo(f"side files: {out_dir}")


@main.command()
@click.option(
    "--out", "out_dir", default="demo-out", show_default=True, type=click.Path(path_type=Path)
)
@click.option(
    "--docs-per-shard",
    type=click.IntRange(min=1),
    default=None,
    help="Build the demo shards with at most N documents each (a quick run). [default: all]",
)
def demo(out_dir: Path, docs_per_shard: int | None) -> None:
    """Run the whole pipeline on the built-in default: demo shards, default model and neurons."""
    from curate.demo import run_demo

    run_demo(out_dir, docs_per_shard)


@main.command("top1")
@click.argument("imagenet_dir", type=click.Path(path_type=Path))
@click.option("--model", default="efficientnet-lite0", show_default=True, help="Vision model.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
def top1_cmd(imagenet_dir: Path, model: str, dtype: str) -> None:
    """ImageNet top-1 of MODEL on an ImageNet-layout folder (<wnid>/<image>)."""
    import torch

    from curate.cpt.imagenet import top1
    from probes.models import load_model

    loaded = load_model(model, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)
    result = top1(loaded, imagenet_dir)
    skipped = f" ({result.unreadable} unreadable images left out)" if result.unreadable else ""
    click.echo(f"{model}: top-1 {result.accuracy:.3f} on {result.images} images{skipped}")


@main.command("models")
def list_models() -> None:
    """List the model aliases that load offline."""
    from probes.models import ALIASES, model_modality

    for alias in ALIASES.values():
        kind = model_modality(alias.name)
        click.echo(f"{alias.name:19} {alias.model_type:17} {kind:5} {alias.description}")


def _register_stage_commands() -> None:
    from curate.bench_cli import bench_cmd
    from curate.discover_cli import discover, neurons
    from curate.explain_cli import explain_cmd
    from curate.filter_cli import filter_cmd, recipes
    from curate.scaling_cli import scaling, zoo

    for command in (discover, neurons, filter_cmd, recipes, bench_cmd, explain_cmd, zoo, scaling):
        main.add_command(command)


_register_stage_commands()

if __name__ == "__main__":
    main()
