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
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from filters.recipe import Recipe, budget_unit, load_recipe
from probes.atomic import output_folders, write_atomic
from probes.errors import CurateError
from probes.storage import resolved

if TYPE_CHECKING:
    from curate.cpt.config import BenchConfig
    from filters.selection import Selection
    from probes.explain import Explanation
    from probes.neuronset import NeuronArtifact
    from probes.prober import ProbeStats

DEFAULT_MODEL = "minilm-l6"
DEFAULT_RECIPES = {"text": "rosetta-default", "image": "rosetta-image"}  # by shard modality


def invoked_command() -> str:
    """The `curate ...` command line this process runs, as artifacts record it."""
    return shlex.join(["curate", *sys.argv[1:]])


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
    tokens_per_batch: int | None = None  # None: the backend's default
    progress: bool = True
    image_key: str = "image"  # an image model's input field
    backend: str = "torch"  # what runs the model (probes/backends/)


def probe(job: ProbeJob) -> ProbeStats:
    """Write the missing or stale side files; returns what was scored and reused."""
    with output_folders((job.out, "--out")):
        return _probe(job)


def _probe(job: ProbeJob) -> ProbeStats:
    from probes.prober import probe_directory

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
        image_key=job.image_key,
        backend=job.backend,
    )


# --------------------------------------------------------------------------------------- filter


@dataclass(frozen=True)
class FilterJob:
    """Cut `shards` to a token budget by a recipe (a bundled name, a TOML path or a Recipe).

    The optional fields override the recipe's own settings when set.
    """

    shards: Path
    recipe: str | Recipe | None = None  # None: the default recipe of the shards' modality
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
    backend: str | None = None  # probe.backend
    dtype: str | None = None  # probe.dtype
    progress: bool = True
    modality: str | None = None  # "text" or "image"; None: detected from the shards
    unit: str | None = None  # select.unit: tokens, pixels, documents or images

    def resolved_modality(self) -> str:
        from probes.shards import list_shards, shards_modality

        return self.modality or shards_modality(list_shards(self.shards))

    def resolved_recipe(self, modality: str = "text") -> Recipe:
        """The recipe (by default the one for `modality`) with this job's overrides applied
        (and validated)."""
        chosen = self.recipe or DEFAULT_RECIPES[modality]
        recipe = chosen if isinstance(chosen, Recipe) else load_recipe(chosen)
        select = {
            "budget": self.budget,
            "seed": self.seed,
            "tokenizer": self.tokenizer,
            "exact_max_rows": self.max_exact_rows,
            "unit": self.unit,
        }
        probe = {"on_error": self.on_error, "backend": self.backend, "dtype": self.dtype}
        return recipe.replace(
            select={k: v for k, v in select.items() if v is not None},
            probe={k: v for k, v in probe.items() if v is not None},
            dsir={"target": resolved(self.dsir_target)} if self.dsir_target else {},
        )


@dataclass
class FilterResult:
    manifest: dict
    selection: Selection  # kept rows per shard; the exact path also per-row keep/reason/key
    written: bool
    probe_stats: ProbeStats | None = None  # side files this run had to (re)score

    @property
    def kept_rows(self) -> dict[str, np.ndarray]:
        """Relative shard path -> sorted physical rows kept."""
        return self.selection.kept_rows

    def summary(self) -> str:
        from filters.manifest import summary

        return summary(self.manifest)


def default_scores_dir(shards: Path) -> Path:
    """Side files of a corpus live in the user cache, keyed by the shard directory's path."""
    from probes.models import cache_dir

    key = hashlib.sha256(resolved(shards).encode()).hexdigest()[:16]
    return cache_dir() / "scores" / key


def filter(job: FilterJob) -> FilterResult:  # noqa: A001 - the stage's name
    """Probe what is missing or stale, select one global token-weighted cut, write it.

    Selection is exact, on rows in memory, up to select.exact_max_rows rows (counted from the
    side files' footers); past that the side files are streamed and the cut found by a sketch.
    """
    from filters.methods import METHODS
    from probes.shards import list_shards

    list_shards(job.shards)  # a bad directory fails before any model load
    if job.out is None and not job.dry_run:
        raise CurateError("give an output folder, or ask for a dry run")
    modality = job.resolved_modality()
    recipe = job.resolved_recipe(modality)
    budget_unit(recipe, modality)  # a unit of the other modality fails before any work
    if METHODS[recipe.score.method].needs_target and not recipe.dsir.target:
        raise CurateError("dsir.target is not set: name the target shard directory in the recipe")
    scores_dir = job.scores or default_scores_dir(job.shards)
    outputs = [(None if job.dry_run else job.out, "--out"), (job.dropped, "--dropped")]
    with output_folders(*outputs, (scores_dir, "--scores")):
        return _filter(job, recipe, scores_dir, modality)


def _filter(job: FilterJob, recipe: Recipe, scores_dir: Path, modality: str) -> FilterResult:
    from filters.recipe import PER_ROW_UNITS
    from filters.rows import open_side_files, side_file_rows
    from filters.selection import check_streamable, select_exact, select_streaming

    stats = None
    if recipe.needs_probe:
        stats = _probe_side_files(job.shards, recipe, scores_dir, job.progress)
        corpus = open_side_files(job.shards, scores_dir, recipe.select.unit in PER_ROW_UNITS)
        rows = side_file_rows(corpus)
        if rows > recipe.select.exact_max_rows:
            check_streamable(recipe, rows, recipe.select.exact_max_rows)
            selection = select_streaming(corpus, recipe)
            counter = _budget_counter(recipe, modality)
            result = _finish(job, recipe, corpus, selection, counter, modality)
            result.probe_stats = stats
            return result
    corpus, rows, tokenizer = _read_rows(job.shards, recipe, scores_dir, modality)
    result = _finish(job, recipe, corpus, select_exact(corpus, rows, recipe), tokenizer, modality)
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
            image_key=p.image_key,
            backend=p.backend,
            dtype=p.dtype,
        )
    )


def _read_rows(shards: Path, recipe: Recipe, scores_dir: Path, modality: str):
    """(corpus, every row, what the budget counts in: a tokenizer, or pixels / images) for exact
    selection.

    Side files are fresh here (`filter` probed first); a recipe that never probes reads the
    shards once (token or pixel counts, DSIR features).
    """
    from filters.methods import method
    from filters.recipe import PER_ROW_UNITS
    from filters.rows import (
        assign_sources,
        image_pixels,
        iter_shard_docs,
        open_side_files,
        read_side_files,
        scan_shards,
    )

    p, sel = recipe.probe, recipe.select
    images = modality == "image"
    per_row = sel.unit in PER_ROW_UNITS
    counted_in = _budget_counter(recipe, modality)
    if recipe.needs_probe:
        corpus = open_side_files(shards, scores_dir, per_row)
        rows = read_side_files(corpus)
        if sel.tokenizer:
            rows.tokens = _recount(shards, recipe, len(rows))
    else:
        scorer = method(recipe.score.method).text_scorer(recipe)
        visit = scorer.visit if scorer is not None else None
        image_key = p.image_key if images else None
        count = image_pixels if images else _text_counter(recipe)
        keys = (p.text_key, p.id_key, p.on_error)
        corpus, rows = scan_shards(shards, *keys, count, visit, image_key=image_key)
        if per_row:
            rows.count_rows()
        if scorer is not None:
            docs = iter_shard_docs(shards, p.text_key, p.id_key, p.on_error)
            rows.external = scorer.scores(batch for _, batch in docs)
    assign_sources(corpus, rows, recipe.quotas.source)
    return corpus, rows, counted_in


def _budget_counter(recipe: Recipe, modality: str) -> str:
    """What the manifest names as the budget's counter: the tokenizer, or the unit."""
    unit = budget_unit(recipe, modality)
    return (recipe.select.tokenizer or recipe.probe.model) if unit == "tokens" else unit


def _text_counter(recipe: Recipe):
    from filters.tokens import token_counter

    count = token_counter(recipe.select.tokenizer or recipe.probe.model)
    return lambda docs: count([d.text if d.error is None else "" for d in docs])


def _recount(shards: Path, recipe: Recipe, rows: int) -> np.ndarray:
    from filters.rows import iter_shard_docs

    p = recipe.probe
    count = _text_counter(recipe)
    counts = [count(docs) for _, docs in iter_shard_docs(shards, p.text_key, p.id_key, "skip")]
    tokens = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    if len(tokens) != rows:
        raise CurateError(f"{shards}: shards changed since scoring; rerun to rescore them")
    return tokens


def _finish(
    job: FilterJob, recipe: Recipe, corpus, selection: Selection, tokenizer: str, modality: str
) -> FilterResult:
    """The manifest, and (unless a dry run) the kept and dropped shards, report and manifest."""
    from filters.manifest import build_manifest, write_manifest
    from filters.report import write_report
    from filters.write import prepare_output, selection_digest, write_rows

    unit = budget_unit(recipe, modality)
    manifest = build_manifest(
        selection, recipe, tokenizer, corpus.side_meta, len(corpus.shards), unit
    )
    if not job.dry_run:
        outputs = [(job.out, selection.kept_rows, "--out")]
        if job.dropped is not None:
            outputs.append((job.dropped, selection.dropped_rows, "--dropped"))
        for folder, rows, option in outputs:
            prepare_output(folder, selection_digest(rows, manifest["recipe"]), option)
            write_rows(corpus.root, rows, folder)
        write_report(job.out, selection.histogram, manifest)
        write_manifest(job.out, manifest)
    return FilterResult(manifest, selection, written=not job.dry_run)


# ------------------------------------------------------------------------------------- discover


@dataclass(frozen=True)
class DiscoverJob:
    """Find the Rosetta neurons of models[0] (the anchor) with a buddy in every other model."""

    models: tuple[str, ...]
    data: Path
    out: Path
    max_tokens: int = 50_000
    min_corr: float = 0.5
    max_null_rate: float | None = None  # instead of min_corr: the floor from a calibration null
    calibration: float = 0.2  # share of documents for that calibration (with max_null_rate)
    seed: int = 0
    top_k: int = 1
    heldout: float = 0.2
    replicate: float = 0.75
    null_quantile: float = 0.99
    null_rate: bool = True  # rerun against a random-init copy of each partner in turn
    layers: tuple[int, ...] | None = None
    doc_tokens: int = 128
    label_key: str | None = None  # None: "label" for images, "metadata.source" for text
    grid: int = 7  # images: every model's feature maps resampled to grid x grid cells
    image_key: str = "image"
    text_key: str = "text"
    id_key: str = "id"
    on_error: str = "fail"
    dtype: str = "auto"
    tokens_per_batch: int = 4096
    exact: bool = False  # all pairs on every token (the reference) instead of screen-then-verify
    screen_tokens: int = 8192  # aligned tokens correlated all-pairs to find candidate buddies
    screen_layers: int = 2  # best partner layers kept per anchor neuron
    screen_per_layer: int = 4  # candidates per anchor neuron per layer, and per partner neuron
    null_tokens: int | None = 131_072  # tokens the rotated null is verified on (None: all)
    force: bool = False  # replace an existing neuron set at `out`
    command: str = ""  # recorded in the artifact (the CLI passes its command line)


def discover(job: DiscoverJob) -> NeuronArtifact:
    """Run discovery (and its null-rate control) and write the neuron-set folder."""
    from probes import neuronset

    if len(job.models) < 2:
        raise CurateError("give at least two models: the anchor and a partner")
    if job.heldout <= 0:
        raise CurateError("--heldout must be above 0: replication needs held-out documents")
    if job.max_null_rate is not None and not 0 <= job.max_null_rate < 1:
        raise CurateError(f"--max-null-rate must be in [0, 1), not {job.max_null_rate}")
    neuronset.check_out(job.out, job.force)
    with output_folders((job.out, "--out")):
        return _discover(job)


def _discover(job: DiscoverJob) -> NeuronArtifact:
    from probes import discovery as disc
    from probes import neuronset
    from probes.cpu import pick_dtype
    from probes.models import load_model

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
        job.calibration if job.max_null_rate is not None else 0.0,
        grid=job.grid,
        image_key=job.image_key,
    )
    settings = disc.Settings(
        min_corr=job.min_corr,
        top_k=job.top_k,
        replicate=job.replicate,
        null_quantile=job.null_quantile,
        seed=job.seed,
        tokens_per_batch=job.tokens_per_batch,
        layers=job.layers,
        max_null_rate=job.max_null_rate,
        screen=None
        if job.exact
        else disc.ScreenSettings(
            job.screen_tokens, job.screen_layers, job.screen_per_layer, job.null_tokens
        ),
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

    if job.k < 1:
        raise CurateError(f"-k must be at least 1, not {job.k}")
    neuronset.check_out(job.out, job.force)
    with output_folders((job.out, "--out")):
        return _top(job)


def _top(job: TopJob) -> TopResult:
    from probes import neuronset
    from probes.discovery import Corpus, Moments, aligned_batches
    from probes.discovery.selectivity import domain_selectivity

    result = neuronset.read(job.neurons)
    if result.size == 0:
        raise CurateError(f"{job.neurons} holds no Rosetta neurons")
    capture, columns = anchor_capture(result, job.dtype)
    sides = {}
    for name, root in (("target", job.target), ("background", job.background)):
        corpus = Corpus(root, capture.loaded, job.max_tokens, heldout=0.0)
        moments = Moments(len(columns))
        for acts, _ in aligned_batches(corpus, [capture], "discovery", 4096, name):
            moments.update(acts[0][columns])
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


def anchor_capture(result: NeuronArtifact, dtype: str):
    """The anchor model's capture for a set's neurons, and their columns in rank order."""
    import torch

    from probes.capture import ActivationCapture
    from probes.cpu import pick_dtype
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
    return ActivationCapture(loaded, neuron_set.requests()), columns


# ----------------------------------------------------------------------------------- neurons atlas


@dataclass(frozen=True)
class AtlasJob:
    """A static HTML page: one card per neuron with its top-activating snippets from `data`."""

    neurons: Path
    data: Path
    out: Path  # the .html file
    max_tokens: int = 20_000  # documents read until this many tokens (images: this many)
    snippets: int = 5  # per neuron (images: crops)
    limit: int = 50  # neurons shown, best first
    dtype: str = "auto"


def atlas(job: AtlasJob) -> int:
    """Write the page and its documents' explain pages; returns how many neurons it shows."""
    from curate.atlas import build_atlas
    from probes.engine import ProbeEngine
    from probes.families import family
    from probes.neuronset import read

    result = read(job.neurons)
    if result.size == 0:
        raise CurateError(f"{job.neurons} holds no Rosetta neurons")
    if family(result.meta["models"][0]["family"]).modality == "image":
        from curate.image_atlas import build_image_atlas

        with output_folders((job.out, "--out"), file=True):
            capture, columns = anchor_capture(result, job.dtype)
            page = build_image_atlas(
                result, capture, columns, job.data, job.max_tokens, job.snippets, job.limit
            )
            write_atomic(job.out, page.encode("utf-8"))
        return min(job.limit, result.size)
    with output_folders((job.out, "--out"), file=True):
        capture, columns = anchor_capture(result, job.dtype)
        engine = ProbeEngine(capture.loaded, result.neuron_set("artifact"))
        page, explained = build_atlas(
            result,
            engine,
            columns,
            job.data,
            job.max_tokens,
            job.snippets,
            job.limit,
            job.out.name,
        )
        for href, html in explained.items():  # the links' targets first, the atlas last
            (job.out.parent / href).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(job.out.parent / href, html.encode("utf-8"))
        write_atomic(job.out, page.encode("utf-8"))
    return min(job.limit, result.size)


# ----------------------------------------------------------------------------------------- explain


@dataclass(frozen=True)
class ExplainJob:
    """Why one document of `shards` scored what it did.

    With side files (`scores`, or those `curate filter` keeps for `shards`), the model, neuron
    set, aggregation and keys come from them and the numbers shown are theirs; otherwise the
    document is probed now with `neurons` on `model`.
    """

    shards: Path
    doc_id: str
    scores: Path | None = None
    neurons: str = "default-neurons"  # the neuron set when there are no side files
    model: str = DEFAULT_MODEL
    agg: str = ""  # "": the default aggregation
    text_key: str = "text"
    id_key: str = "id"
    dtype: str = "auto"
    html: Path | None = None  # also write an HTML page here
    atlas: str | None = None  # the atlas page (href from the HTML) its neurons link to


@dataclass
class ExplainResult:
    explanation: Explanation
    shard: Path
    row: int
    side_file: Path | None  # where the shown numbers come from (None: probed now)
    recomputed: float  # the score recomputed from the tokens
    settings: dict  # model, aggregation, neurons (origin), backend (name and precision)

    def facts(self) -> list[str]:
        """Where the document and its numbers come from, a line each."""
        e, s = self.explanation, self.settings
        source = (
            f"from side file {self.side_file} (recomputed from the tokens: {self.recomputed:.4f})"
            if self.side_file
            else "probed now (no side file)"
        )
        seen = f", the first {len(e.spans):,} seen" if e.truncated else ""
        return [
            f"document {e.doc_id!r}: {self.shard} row {self.row + 1}",
            f"score {e.score:.4f} {source}",
            f"model {s['model']} ({s['backend']}), aggregation {s['agg']}, neurons {s['neurons']}",
            f"{e.n_tokens:,} content tokens{seen}",
        ]


def explain(job: ExplainJob) -> ExplainResult:
    """Find the document, explain it, write the page if asked."""
    with output_folders((job.html, "--html"), file=True):
        return _explain(job)


def _explain(job: ExplainJob) -> ExplainResult:
    from probes import sidefile
    from probes.explain import explain as explain_doc

    scores = job.scores if job.scores is not None else default_scores_dir(job.shards)
    shard, row, text = _find_document(job, scores)
    side = sidefile.path_for(scores, job.shards, shard)
    side = side if side.is_file() else None
    engine, settings = _explain_engine(job, side)
    explanation = explain_doc(engine, job.doc_id, text)
    recomputed = explanation.score
    if side is not None:
        explanation = _side_values(explanation, side, row)
    result = ExplainResult(explanation, shard, row, side, recomputed, settings)
    if job.html is not None:
        from curate.explain_page import explain_page

        page = explain_page(result.explanation, result.facts(), job.atlas)
        write_atomic(job.html, page.encode("utf-8"))
    return result


def _find_document(job: ExplainJob, scores: Path) -> tuple[Path, int, str]:
    """(shard, row, text) of the document `job.doc_id`, read with the side files' keys."""
    from probes import sidefile
    from probes.shards import list_shards, read_documents, shard_root

    root = shard_root(job.shards)
    for shard in list_shards(job.shards):
        side = sidefile.path_for(scores, job.shards, shard)
        keys = sidefile.read_meta(side) if side.is_file() else vars(job)
        docs = read_documents(shard, keys["text_key"], keys["id_key"], "skip", root)
        for doc in docs:
            if doc.id == job.doc_id:
                if doc.error:
                    raise CurateError(f"{shard}:{doc.row + 1}: {job.doc_id!r}: {doc.error}")
                return shard, doc.row, doc.text
    raise CurateError(f"no document with id {job.doc_id!r} in {job.shards}")


def _explain_engine(job: ExplainJob, side: Path | None):
    """The probe engine of the side file's settings (refusing other weights), or the job's."""
    from probes import sidefile
    from probes.aggregate import DEFAULT_AGGREGATION
    from probes.backends import backend_settings, load_for
    from probes.engine import ProbeEngine
    from probes.models import weights_hash
    from probes.neuronset import Neuron, NeuronSet, load_neuron_set

    settings = backend_settings("torch", job.dtype)
    if side is not None:
        meta = sidefile.read_meta(side)
        model, agg, origin = meta["model"], meta["agg"], f"side file {side}"
        settings = meta.get("backend", settings)  # side files before format 3: torch
        neurons = tuple(Neuron(*n) for n in meta["neurons"])
        neuron_set = NeuronSet(neurons, origin, meta["model_hash"], model)
        neuron_set.check_model(model, weights_hash(model))
    else:
        from filters.recipe import resolve_neurons

        model, agg = job.model, job.agg or DEFAULT_AGGREGATION
        neuron_set = load_neuron_set(resolve_neurons(job.neurons, Path.cwd()))
        neuron_set.check_model(model, weights_hash(model))
        origin = neuron_set.origin
    engine = ProbeEngine(load_for(settings, model), neuron_set, agg=agg, backend=settings)
    backend = f"{settings['name']} {settings['dtype']}"
    return engine, {"model": model, "agg": agg, "neurons": origin, "backend": backend}


def _side_values(explanation: Explanation, side: Path, row: int) -> Explanation:
    """`explanation` with the score and neuron values of the side file's row."""
    import pyarrow.parquet as pq

    from probes import sidefile

    table = pq.read_table(side)
    columns = [c for c in table.column_names if sidefile.is_column(c)]
    values = {c: float(table.column(c)[row].as_py()) for c in columns}
    return explanation.with_values(float(table.column("score")[row].as_py()), values)


# ----------------------------------------------------------------------------------------- bench


@dataclass(frozen=True)
class BenchJob:
    """Continued pre-training on each arm's selection of `pool` at matched tokens, evaluated on
    the tasks in `tasks` (Hugging Face glue schema); the report goes to `out`."""

    pool: Path
    tasks: Path
    out: Path
    config: str | BenchConfig = "default"  # a bundled config name, a TOML path, or a config
    report_only: bool = False  # report on the runs finished so far; train nothing
    progress: bool = True
    finetune: bool = False  # also fine-tune the final checkpoints (sets eval.finetune)
    device: str = "cpu"  # where models train and evaluate: cpu or cuda[:N]
    workers: int = 1  # processes running runs side by side
    prepare: bool = False  # make splits, scores and every run's selection, then stop


def bench(job: BenchJob) -> dict | None:
    """Run (or resume) the bench and write report.json, report.md and the plots; returns the
    report (None for `prepare`, which stops before any training)."""
    from curate.cpt.config import load_config
    from probes.shards import list_shards

    config = load_config(job.config) if isinstance(job.config, str) else job.config
    if job.finetune:
        config = replace(config, eval=replace(config.eval, finetune=True))
    list_shards(job.pool)  # a bad pool fails before any work
    with output_folders((job.out, "--out")):
        return _bench(job, config)


def _bench(job: BenchJob, config) -> dict | None:
    from curate.cpt.bench import Bench, BenchSetup, run_bench
    from curate.cpt.report import write_report

    if job.report_only:
        return write_report(Bench(config, job.pool, job.tasks, job.out), list(config.arms.names))
    setup = BenchSetup(job.device, job.workers, job.prepare)
    return run_bench(config, job.pool, job.tasks, job.out, job.progress, setup)


@dataclass(frozen=True)
class ImageBenchJob:
    """Continued training of an ImageNet model on each arm's selection of the image `pool` at
    matched image counts and steps, evaluated by ImageNet top-1 on `imagenet` (an ImageFolder)
    and a frozen-feature linear probe on `downstream` (train-* / test-* image shards)."""

    pool: Path
    imagenet: Path
    downstream: Path
    out: Path
    config: str = "image-default"  # a bundled config name or a TOML path
    report_only: bool = False
    progress: bool = True


def image_bench(job: ImageBenchJob) -> dict:
    """Run (or resume) the image bench; writes report.json, report.md and parity.png."""
    from curate.cpt.image_bench import (
        ImageBench,
        load_image_config,
        run_image_bench,
        write_image_report,
    )
    from probes.shards import list_shards

    config = load_image_config(job.config)
    for folder in (job.pool, job.imagenet, job.downstream):
        list_shards(folder)  # a bad folder fails before any work
    with output_folders((job.out, "--out")):
        if job.report_only:
            bench = ImageBench(config, job.pool, job.imagenet, job.downstream, job.out)
            return write_image_report(bench, list(config.arms.names))
        return run_image_bench(
            config, job.pool, job.imagenet, job.downstream, job.out, job.progress
        )


# ---------------------------------------------------------------------------- zoo and scaling


@dataclass(frozen=True)
class ZooJob:
    """Train the zoo of `config` (bundled name or TOML) on the shards at `data` into `out`."""

    config: str
    data: Path
    out: Path
    progress: bool = True


def train_zoo(job: ZooJob) -> list[dict]:
    """Train (or resume) every member; returns each member's record (zoo.json)."""
    from curate.scaling.zoo import load_zoo_config
    from curate.scaling.zoo import train_zoo as train
    from probes.shards import list_shards

    config = load_zoo_config(job.config)
    list_shards(job.data)  # a bad folder fails before any work
    with output_folders((job.out, "--out")):
        return train(config, job.data, job.out, job.progress)


@dataclass(frozen=True)
class ScalingJob:
    """Per zoo size, discovery across the seeds (each of the first `anchors` seeds the anchor in
    turn; 0: every seed); extra points from pretrained `models` (each the anchor in turn) and
    existing neuron `sets`; then the power-law fit, the capacity-utility model and the report."""

    zoo: Path
    data: Path
    out: Path
    models: tuple[str, ...] = ()
    sets: tuple[Path, ...] = ()
    anchors: int = 0
    discover: DiscoverJob | None = None  # discovery's settings (its models, data, out unused)
    replicates: int = 2000
    level: float = 0.95
    command: str = ""


def scaling(job: ScalingJob) -> dict:
    """Run (or resume: neuron sets found before are reused) the study; writes scaling.json,
    scaling.md and the plots into `out`."""
    from curate.scaling.report import write_study
    from curate.scaling.study import extra_points, zoo_points
    from probes.shards import list_shards

    list_shards(job.data)
    if len(job.models) == 1:
        raise CurateError("--model needs two pretrained models or more (each is an anchor)")
    with output_folders((job.out, "--out")):
        zoo = zoo_points(job)
        extras = extra_points(job)
        return write_study(zoo, extras, job.out, job.replicates, job.level, job.command)
