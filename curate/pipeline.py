"""The stages as plain functions: typed job in, typed result out, nothing printed.

`curate probe|filter|discover|neurons top` parse options into these jobs and print the results;
the demo, the datatrove steps, the harness, the benchmarks and the tests call them directly::

    from curate.pipeline import FilterJob, filter
    result = filter(FilterJob(shards=Path("corpus"), recipe="rosetta-default",
                              out=Path("kept"), budget="30%"))
    print(result.summary())

Heavy libraries (torch, transformers) load inside the functions, so importing this module is
cheap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from filters.recipe import Recipe, load_recipe
from probes.errors import CurateError

if TYPE_CHECKING:
    from filters.corpus import DocTable
    from filters.plan import Plan
    from filters.stream import StreamPlan
    from probes.neuronset import NeuronArtifact
    from probes.score_shards import ProbeStats

DEFAULT_MODEL = "minilm-l6"


# ---------------------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class ProbeJob:
    """Score every document of `shards` by a neuron set into side files under `out`."""

    shards: Path
    neurons: str  # a neuron-set folder, a JSON file, or inline JSON [[layer, index], ...]
    out: Path
    model: str = DEFAULT_MODEL
    agg: str = "max_norm"
    on_error: str = "fail"
    text_key: str = "text"
    id_key: str = "id"
    dtype: str = "auto"
    tokens_per_batch: int = 8192
    progress: bool = True


def probe(job: ProbeJob) -> ProbeStats:
    """Write the missing or stale side files; returns what was scored and reused."""
    from probes.score_shards import probe_directory

    return probe_directory(
        job.shards,
        job.neurons,
        job.out,
        model=job.model,
        agg=job.agg,
        on_error=job.on_error,
        text_key=job.text_key,
        id_key=job.id_key,
        dtype=job.dtype,
        tokens_per_batch=job.tokens_per_batch,
        progress=job.progress,
    )


# --------------------------------------------------------------------------------------- filter


@dataclass(frozen=True)
class FilterJob:
    """Cut `shards` to a token budget by a recipe (a bundled name, a TOML path or a Recipe).

    The optional fields override the recipe's own settings when set.
    """

    shards: Path
    recipe: str | Recipe = "rosetta-default"
    out: Path | None = None  # None only with dry_run
    budget: str | None = None  # select.budget: tokens (5M, 2B) or a share (30%)
    scores: Path | None = None  # side files; default: the user cache, keyed by `shards`
    dropped: Path | None = None  # also write the dropped rows here
    dry_run: bool = False
    seed: int | None = None
    tokenizer: str | None = None
    dsir_target: Path | None = None
    max_exact_rows: int | None = None
    on_error: str | None = None
    progress: bool = True

    def resolved_recipe(self) -> Recipe:
        """The recipe with this job's overrides applied (and validated)."""
        recipe = self.recipe if isinstance(self.recipe, Recipe) else load_recipe(self.recipe)
        select = {
            "budget": self.budget,
            "seed": self.seed,
            "tokenizer": self.tokenizer,
            "exact_max_rows": self.max_exact_rows,
        }
        return recipe.replace(
            select={k: v for k, v in select.items() if v is not None},
            probe={"on_error": self.on_error} if self.on_error else {},
            dsir={"target": str(self.dsir_target.resolve())} if self.dsir_target else {},
        )


@dataclass
class FilterResult:
    manifest: dict
    selection: Plan | StreamPlan
    kept_rows: dict[str, np.ndarray]  # relative shard path -> sorted physical rows kept
    written: bool
    probe_stats: ProbeStats | None = None  # side files this run had to (re)score

    def summary(self) -> str:
        from filters.manifest import summary

        return summary(self.manifest)


def default_scores_dir(shards: Path) -> Path:
    """Side files of a corpus live in the user cache, keyed by the shard directory's path."""
    from probes.models import cache_dir

    key = hashlib.sha256(str(shards.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "scores" / key


def filter(job: FilterJob) -> FilterResult:  # noqa: A001 - the stage's name
    """Probe what is missing or stale, select one global token-weighted cut, write it.

    Selection is exact, on a table in memory, up to select.exact_max_rows rows (counted from the
    side files' footers); past that the side files are streamed and the cut found by a sketch.
    """
    from filters.corpus import side_file_rows, side_files
    from filters.stream import check_streamable
    from probes.shards import list_shards

    list_shards(job.shards)  # a bad directory fails before any model load
    if job.out is None and not job.dry_run:
        raise CurateError("give an output folder, or ask for a dry run")
    recipe = job.resolved_recipe()
    if recipe.score.method == "dsir" and not recipe.dsir.target:
        raise CurateError("dsir.target is not set: name the target shard directory in the recipe")
    scores_dir = job.scores or default_scores_dir(job.shards)
    if not recipe.needs_probe:
        return _filter_exact(job, recipe, scores_dir)
    stats = _probe_side_files(job.shards, recipe, scores_dir, job.progress)
    paths, meta, columns = side_files(job.shards, scores_dir)
    rows = side_file_rows(paths)
    limit = recipe.select.exact_max_rows
    if rows > limit:
        check_streamable(recipe, rows, limit)
        result = _filter_streaming(job, recipe, paths, meta, columns)
    else:
        result = _filter_exact(job, recipe, scores_dir)
    result.probe_stats = stats
    return result


def _probe_side_files(shards: Path, recipe: Recipe, scores_dir: Path, progress: bool):
    p = recipe.probe
    return probe(
        ProbeJob(
            shards,
            p.neurons,
            scores_dir,
            model=p.model,
            agg=p.agg,
            on_error=p.on_error,
            text_key=p.text_key,
            id_key=p.id_key,
            progress=progress,
        )
    )


def _filter_exact(job: FilterJob, recipe: Recipe, scores_dir: Path) -> FilterResult:
    from filters.manifest import KeyHistogram, build_manifest
    from filters.plan import make_plan

    table, dsir_score, tokenizer = _build_table(job.shards, recipe, scores_dir)
    plan = make_plan(table, recipe, recipe.budget, dsir_score)
    manifest = build_manifest(table, plan, recipe, tokenizer)
    kept = _rows_by_shard(table, plan.keep)
    if not job.dry_run:
        outputs = [(job.out, kept, "--out")]
        if job.dropped is not None:
            outputs.append((job.dropped, _rows_by_shard(table, ~plan.keep), "--dropped"))
        hist = KeyHistogram.of(plan.key, plan.keep, plan.threshold)
        _write(table.root, outputs, manifest, hist)
    return FilterResult(manifest, plan, kept, written=not job.dry_run)


def _build_table(
    shards: Path, recipe: Recipe, scores_dir: Path
) -> tuple[DocTable, np.ndarray | None, str]:
    """The document table, DSIR scores (or None) and the budget tokenizer's name.

    Side files are known to be fresh here: `filter` probed first.
    """
    from filters.corpus import assign_sources, from_side_files, from_text, iter_shard_docs
    from filters.dsir import NgramModel, log_importance, target_model
    from filters.tokens import token_counter

    p, sel = recipe.probe, recipe.select
    tokenizer = sel.tokenizer or p.model
    dsir_score = None
    if recipe.needs_probe:
        table = from_side_files(shards, scores_dir)
        if sel.tokenizer:
            table.tokens = _recount(shards, recipe, len(table))
    else:
        raw = NgramModel(recipe.dsir.buckets)
        visit = (
            (lambda docs: raw.add(d.text for d in docs)) if recipe.score.method == "dsir" else None
        )
        count = token_counter(tokenizer)
        table = from_text(shards, p.text_key, p.id_key, p.on_error, count, visit)
        if recipe.score.method == "dsir":
            target = target_model(
                Path(recipe.dsir.target), recipe.dsir.text_key, recipe.dsir.buckets
            )
            dsir_score = np.concatenate(
                [
                    log_importance([d.text for d in docs], raw, target)
                    for _, docs in iter_shard_docs(shards, p.text_key, p.id_key, p.on_error)
                ]
            )
    assign_sources(table, recipe.quotas.source)
    return table, dsir_score, tokenizer


def _recount(shards: Path, recipe: Recipe, rows: int) -> np.ndarray:
    from filters.corpus import iter_shard_docs
    from filters.tokens import token_counter

    p = recipe.probe
    count = token_counter(recipe.select.tokenizer)
    counts = [
        count([d.text if d.error is None else "" for d in docs])
        for _, docs in iter_shard_docs(shards, p.text_key, p.id_key, "skip")
    ]
    tokens = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    if len(tokens) != rows:
        raise CurateError(f"{shards}: shards changed since scoring; rerun to rescore them")
    return tokens


def _rows_by_shard(table: DocTable, mask: np.ndarray) -> dict[str, np.ndarray]:
    return {
        rel: np.sort(table.row[(table.shard == i) & mask]) for i, rel in enumerate(table.shards)
    }


def _filter_streaming(
    job: FilterJob, recipe: Recipe, paths: list[Path], meta: dict, columns: list[str]
) -> FilterResult:
    """`filter` past select.exact_max_rows: stream the side files, cut with the sketch."""
    from filters.corpus import directory_source
    from filters.manifest import manifest_from_totals
    from filters.stream import stream_plan
    from probes.shards import list_shards, shard_root

    root = shard_root(job.shards)
    rels = [s.relative_to(root).as_posix() for s in list_shards(job.shards)]
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
    if not job.dry_run:
        outputs = [(job.out, plan.kept_rows, "--out")]
        if job.dropped is not None:
            outputs.append((job.dropped, plan.dropped_rows, "--dropped"))
        _write(root, outputs, manifest, plan.histogram)
    return FilterResult(manifest, plan, plan.kept_rows, written=not job.dry_run)


_TOTALS = (
    "input_docs",
    "input_tokens",
    "kept_docs",
    "kept_tokens",
    "budget_tokens",
    "budget_reached",
    "threshold",
)


def _write(root: Path, outputs: list[tuple], manifest: dict, hist) -> None:
    """Write each output's rows, then the report and the manifest."""
    from filters.manifest import write_manifest, write_report
    from filters.write import plan_digest, prepare_output, write_rows

    for folder, rows, option in outputs:
        prepare_output(folder, plan_digest(rows, manifest["recipe"]), option)
        write_rows(root, rows, folder)
    out_dir = outputs[0][0]
    write_report(out_dir, hist, manifest)
    write_manifest(out_dir, manifest)


# ------------------------------------------------------------------------------------- discover


@dataclass(frozen=True)
class DiscoverJob:
    """Find the Rosetta neurons of models[0] (the anchor) with a buddy in every other model."""

    models: tuple[str, ...]
    data: Path
    out: Path
    max_tokens: int = 50_000
    min_corr: float = 0.5
    seed: int = 0
    top_k: int = 1
    heldout: float = 0.2
    replicate: float = 0.75
    null_quantile: float = 0.99
    null_rate: bool = True  # rerun against a random-init copy of the first partner
    layers: tuple[int, ...] | None = None
    doc_tokens: int = 128
    label_key: str = "metadata.source"
    text_key: str = "text"
    id_key: str = "id"
    on_error: str = "fail"
    dtype: str = "auto"
    tokens_per_batch: int = 4096
    force: bool = False  # replace an existing neuron set at `out`
    command: str = ""  # recorded in the artifact (the CLI passes its command line)


def discover(job: DiscoverJob) -> NeuronArtifact:
    """Run discovery (and its null-rate control) and write the neuron-set folder."""
    from probes import discovery as disc
    from probes import neuronset
    from probes.engine import pick_dtype
    from probes.models import load_model

    if len(job.models) < 2:
        raise CurateError("give at least two models: the anchor and a partner")
    if job.heldout <= 0:
        raise CurateError("--heldout must be above 0: replication needs held-out documents")
    neuronset.check_out(job.out, job.force)
    loaded = [load_model(name, pick_dtype(job.dtype)) for name in job.models]
    corpus = disc.Corpus(
        job.data,
        loaded[0],
        job.max_tokens,
        job.heldout,
        job.seed,
        job.label_key,
        job.text_key,
        job.id_key,
        job.on_error,
        job.doc_tokens,
    )
    settings = disc.Settings(
        min_corr=job.min_corr,
        top_k=job.top_k,
        replicate=job.replicate,
        null_quantile=job.null_quantile,
        seed=job.seed,
        tokens_per_batch=job.tokens_per_batch,
        layers=job.layers,
    )
    found = disc.discover(loaded, corpus, settings)
    null = disc.null_rate(found, corpus) if job.null_rate else None
    result = disc.to_artifact(found, corpus, job.command, null)
    neuronset.write(result, job.out, force=job.force)
    return result


# ----------------------------------------------------------------------------------- neurons top


@dataclass(frozen=True)
class TopJob:
    """Keep the k neurons of a set most selective for `target` versus `background` text."""

    neurons: Path
    target: Path
    background: Path
    out: Path
    k: int = 10
    max_tokens: int = 20_000  # per side
    dtype: str = "auto"
    force: bool = False
    command: str = ""


@dataclass
class TopResult:
    artifact: NeuronArtifact
    selectivity: list[float] = field(default_factory=list)  # Cohen's d per kept neuron, best first


def top(job: TopJob) -> TopResult:
    """Rank a set's neurons by Cohen's d of their activation, target versus background tokens."""
    from probes import neuronset
    from probes.discovery import Corpus, Moments, aligned_batches
    from probes.discovery.selectivity import domain_selectivity

    if job.k < 1:
        raise CurateError(f"-k must be at least 1, not {job.k}")
    neuronset.check_out(job.out, job.force)
    result = neuronset.read(job.neurons)
    if result.size == 0:
        raise CurateError(f"{job.neurons} holds no Rosetta neurons")
    source, columns = anchor_source(result, job.dtype)
    sides = {}
    for name, root in (("target", job.target), ("background", job.background)):
        corpus = Corpus(root, source.loaded, job.max_tokens, heldout=0.0)
        moments = Moments(len(columns))
        for acts, _ in aligned_batches(corpus, [source], False, 4096, name):
            moments.update(acts[0][:, columns])
        if moments.count < 2:
            raise CurateError(f"--{name} {root} has fewer than 2 tokens")
        sides[name] = (moments, corpus)
    (t, t_corpus), (b, b_corpus) = sides["target"], sides["background"]
    d = domain_selectivity(t.mean, t.var, b.mean, b.var).float()
    ranks = d.argsort(descending=True)[: min(job.k, result.size)]
    extra = {
        "command": job.command,
        "derived_from": {"path": str(job.neurons), "command": result.meta["command"]},
        "top": {
            "selectivity": "Cohen's d of the anchor activation, target versus background tokens",
            "target": {
                "root": str(job.target),
                "fingerprint": t_corpus.fingerprint,
                "tokens": t.count,
            },
            "background": {
                "root": str(job.background),
                "fingerprint": b_corpus.fingerprint,
                "tokens": b.count,
            },
            "d": [float(d[r]) for r in ranks],
        },
    }
    subset = result.subset(ranks, d[ranks].clamp(min=1e-6), extra)
    neuronset.write(subset, job.out, force=job.force)
    return TopResult(subset, [float(d[r]) for r in ranks])


def anchor_source(result: NeuronArtifact, dtype: str):
    """The anchor model's capture for a set's neurons, and their columns in rank order."""
    import torch

    from probes.capture import ActivationSource
    from probes.engine import pick_dtype
    from probes.models import load_model

    anchor = result.meta["models"][0]
    loaded = load_model(anchor["name"], pick_dtype(dtype))
    if loaded.content_hash != anchor["content_hash"]:
        raise CurateError(
            f"the neuron set was discovered on weights {anchor['content_hash']}, but "
            f"{anchor['name']} now has {loaded.content_hash}"
        )
    neuron_set = result.neuron_set("artifact")
    ordered = [(n.layer, n.index) for n in neuron_set.ordered()]
    columns = torch.tensor([ordered.index((n.layer, n.index)) for n in neuron_set.neurons])
    return ActivationSource(loaded, neuron_set.requests()), columns


# ----------------------------------------------------------------------------------- neurons atlas


@dataclass(frozen=True)
class AtlasJob:
    """A static HTML page: one card per neuron with its top-activating snippets from `data`."""

    neurons: Path
    data: Path
    out: Path  # the .html file
    max_tokens: int = 20_000
    snippets: int = 5  # per neuron
    limit: int = 50  # neurons shown, best first
    dtype: str = "auto"


def atlas(job: AtlasJob) -> int:
    """Write the page; returns how many neurons it shows."""
    from curate.atlas import build_atlas
    from probes.atomic import atomic_path
    from probes.neuronset import read

    result = read(job.neurons)
    if result.size == 0:
        raise CurateError(f"{job.neurons} holds no Rosetta neurons")
    source, columns = anchor_source(result, job.dtype)
    html = build_atlas(result, source, columns, job.data, job.max_tokens, job.snippets, job.limit)
    with atomic_path(job.out) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return min(job.limit, result.size)


# ----------------------------------------------------------------------------------------- bench


@dataclass(frozen=True)
class BenchJob:
    """Continued pre-training on each arm's selection of `pool` at matched tokens, evaluated on
    the tasks in `tasks` (Hugging Face glue schema); the report goes to `out`."""

    pool: Path
    tasks: Path
    out: Path
    config: str = "default"  # a bundled bench config name or a TOML path
    report_only: bool = False  # report on the runs finished so far; train nothing
    progress: bool = True


def bench(job: BenchJob) -> dict:
    """Run (or resume) the bench and write report.json, report.md and the plots; returns the
    report."""
    from curate.cpt.bench import Bench, run_bench
    from curate.cpt.config import load_config
    from curate.cpt.report import write_report
    from probes.shards import list_shards

    config = load_config(job.config)
    list_shards(job.pool)  # a bad pool fails before any work
    if job.report_only:
        return write_report(Bench(config, job.pool, job.tasks, job.out), list(config.arms.names))
    return run_bench(config, job.pool, job.tasks, job.out, job.progress)
