"""datatrove steps for Rosetta scoring and budgeted selection, from a laptop to Slurm or Ray.

A budget is global, but datatrove tasks see one slice of the corpus each, so selection runs as
a two-stage plan:

1. scoring stage (many tasks): `ShardReader` (or any reader) -> `RosettaScorer` ->
   `ScoreStats` (one parquet of per-document statistics per rank) -> a writer of the tagged docs;
2. `BudgetPlan` (one task): reads every rank's statistics and makes the same selection as
   `curate filter`, written as plan.json (one (key, tie) threshold per source/cluster cell);
3. filter stage (many tasks): reader of the tagged docs -> `BudgetFilter` -> writer.

Every step holds only plain settings, so executors can pickle it to workers; the model and the
plan load lazily in the worker. Paths are local or fsspec URLs (s3://...) that all workers
reach.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline, Media, MediaType
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from filters.methods import METHODS
from filters.recipe import Recipe, load_recipe
from filters.rows import Corpus, Rows, directory_source
from filters.rule import KEPT, CutSpec
from filters.select import REASONS
from probes import sidefile
from probes.atomic import atomic_path, write_atomic
from probes.errors import CurateError
from probes.prober import CHUNK_DOCS
from probes.shards import dotted, list_shards, read_documents, shard_root
from probes.storage import as_path, opened

PLAN_FILE = "plan.json"
# One rank's statistics; typed, so a rank that got no documents concatenates with the others.
STATS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("n_tokens", pa.int64()),
        ("source", pa.string()),
        ("score", pa.float64()),
        ("neurons", pa.string()),
    ]
)


def _recipe(recipe: str | Recipe) -> Recipe:
    """The recipe, refused at once if its method cannot decide a document on its own."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if METHODS[recipe.score.method].needs_text:
        raise CurateError(
            f"score.method = {recipe.score.method!r} needs features of the whole corpus's text "
            "and runs in `curate filter` only, not in datatrove steps"
        )
    return recipe


def doc_source(doc: Document, how: str) -> str:
    """A document's source, as `curate filter` names it (quotas.source)."""
    if how == "directory":
        return directory_source(doc.metadata.get("file_path", ""))
    return dotted({"metadata": doc.metadata}, how) or "(unknown)"


def image_bytes(doc: Document) -> bytes | None:
    """A document's image: the bytes of its first image `Media`, or the local file its `path`
    names; None when it has neither (scored as unreadable)."""
    for media in doc.media:
        if media.type != MediaType.IMAGE:
            continue
        if media.media_bytes is not None:
            return media.media_bytes
        if media.path:
            try:
                return as_path(media.path).read_bytes()
            except OSError:
                return None
    return None


class ShardReader(PipelineStep):
    """Reads rosetta-curate shards (jsonl, .gz, multi-frame .zst, parquet; with `image_key`
    image shards: parquet `Image` columns, webdataset tars, ImageFolder folders, each image an
    image `Media` of the document) with the same parser and ids as `curate filter`; task `rank`
    takes shards rank, rank + world_size, ..."""

    name = "Rosetta shards"
    type = "📖 - READER"

    def __init__(
        self,
        shard_dir: str,
        text_key: str = "text",
        id_key: str = "id",
        image_key: str | None = None,
    ):
        super().__init__()
        self.shard_dir = str(shard_dir)
        self.text_key = text_key
        self.id_key = id_key
        self.image_key = image_key

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        shard_dir = as_path(self.shard_dir)
        root = shard_root(shard_dir)
        for shard in list_shards(shard_dir)[rank::world_size]:
            rel = shard.relative_to(root).as_posix()
            keys = (self.text_key, self.id_key, "skip")
            for doc in read_documents(shard, *keys, root=root, image_key=self.image_key):
                if doc.error is not None:
                    self.stat_update("skipped_rows")
                    continue
                self.stat_update("documents")
                media = [] if doc.media is None else [_image_media(doc, rel)]
                yield Document(
                    text=doc.text,
                    id=doc.id,
                    media=media,
                    metadata={"file_path": rel, "row": doc.row},
                )


def _backend_settings(recipe: Recipe, backend: str | None, dtype: str | None) -> dict:
    """The scorer's backend settings (None: the recipe's), resolved once where the pipeline is
    built: every rank then scores at the same precision, whatever CPU it lands on."""
    from probes.backends import backend_settings
    from probes.models import model_modality

    p = recipe.probe
    return backend_settings(backend or p.backend, dtype or p.dtype, model_modality(p.model))


def _image_media(doc, rel: str) -> Media:
    return Media(id=doc.id, type=MediaType.IMAGE, url=f"{rel}:{doc.row}", media_bytes=doc.media)


class RosettaScorer(PipelineStep):
    """Adds metadata rosetta_score, n_tokens, truncated and rosetta_neurons (per neuron column).

    Documents are scored in chunks of up to `chunk_docs` consecutive documents of one file, as the
    probe stage does, so scores match the side files of `curate probe` with the same backend
    settings bit for bit. `backend` and `dtype` (None: the recipe's probe.backend and
    probe.dtype) are resolved once, here, and every rank scores with them. `threads` caps the
    CPU threads of each worker's model (None: torch's default, every core), so N workers on one
    node can share its cores instead of each taking all of them.
    """

    name = "Rosetta scorer"
    type = "🔢 - TAGGER"

    def __init__(
        self,
        recipe: str | Recipe = "rosetta-default",
        dtype: str | None = None,
        tokens_per_batch: int | None = None,
        chunk_docs: int = CHUNK_DOCS,
        backend: str | None = None,
        threads: int | None = None,
    ):
        super().__init__()
        self.recipe = _recipe(recipe)
        self.threads = threads
        self.settings = _backend_settings(self.recipe, backend, dtype)
        self.tokens_per_batch = tokens_per_batch
        self.chunk_docs = chunk_docs
        self._engine = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_engine": None}  # workers load their own model

    @property
    def engine(self):
        if self._engine is None:
            from probes.backends import load_for
            from probes.engine import probe_engine
            from probes.neuronset import load_neuron_set

            p, settings = self.recipe.probe, self.settings
            if self.threads is not None:
                import torch

                torch.set_num_threads(self.threads)
            neurons = load_neuron_set(p.neurons)
            loaded = load_for(settings, p.model)
            self._engine = probe_engine(loaded, neurons, p.agg, self.tokens_per_batch, settings)
        return self._engine

    def _chunks(self, data: DocumentsPipeline) -> Iterator[list[Document]]:
        chunk: list[Document] = []
        for doc in data:
            same_file = not chunk or chunk[0].metadata.get("file_path") == doc.metadata.get(
                "file_path"
            )
            if chunk and (len(chunk) == self.chunk_docs or not same_file):
                yield chunk
                chunk = []
            chunk.append(doc)
        if chunk:
            yield chunk

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        if not data:
            return
        images = self.engine.loaded.modality == "image"
        for chunk in self._chunks(data):
            with self.track_time("batch"):
                inputs = [image_bytes(doc) if images else doc.text for doc in chunk]
                scores = self.engine.probe(inputs)
            columns = [n.column for n in self.engine.neurons]
            for i, doc in enumerate(chunk):
                n = int(scores.n_tokens[i])
                doc.metadata["n_tokens"] = n
                doc.metadata["truncated"] = bool(scores.truncated[i])
                doc.metadata["rosetta_score"] = float(scores.score[i]) if n else None
                doc.metadata["rosetta_neurons"] = (
                    {c: float(v) for c, v in zip(columns, scores.neurons[i], strict=True)}
                    if n
                    else None
                )
                self.stat_update("scored" if n else ("unreadable" if images else "no_tokens"))
                yield doc


class ScoreStats(PipelineStep):
    """Writes this rank's per-document statistics (id, tokens, source, neuron values) to
    `stats_dir/<rank>.parquet` and passes documents on. Written whole or not at all."""

    name = "Rosetta score stats"
    type = "📊 - STATS"

    def __init__(self, stats_dir: str, recipe: str | Recipe = "rosetta-default"):
        super().__init__()
        self.stats_dir = str(stats_dir)
        self.recipe = _recipe(recipe)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        rows: dict[str, list] = {"id": [], "n_tokens": [], "source": [], "score": [], "neurons": []}
        for doc in data or ():
            neurons = doc.metadata.get("rosetta_neurons")
            rows["id"].append(doc.id)
            rows["n_tokens"].append(doc.metadata["n_tokens"])
            rows["source"].append(doc_source(doc, self.recipe.quotas.source))
            rows["score"].append(doc.metadata.get("rosetta_score"))
            rows["neurons"].append(json.dumps(neurons) if neurons else None)
            yield doc
        with atomic_path(as_path(self.stats_dir) / f"{rank:05d}.parquet") as tmp:
            pq.write_table(pa.table(rows, schema=STATS_SCHEMA), tmp)


class BudgetPlan(PipelineStep):
    """Merges every rank's statistics into one global cut and writes `plan_dir/plan.json`.

    Run it as its own stage with one task, after the scoring stage has finished.
    """

    name = "Rosetta budget plan"
    type = "📐 - PLAN"

    def __init__(self, stats_dir: str, plan_dir: str, recipe: str | Recipe = "rosetta-default"):
        super().__init__()
        self.stats_dir = str(stats_dir)
        self.plan_dir = str(plan_dir)
        self.recipe = _recipe(recipe)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        if rank != 0:
            return
        from filters.selection import select_exact

        corpus, rows = stats_rows(as_path(self.stats_dir), self.recipe)
        chosen = select_exact(corpus, rows, self.recipe)
        result = {
            "input_docs": chosen.input_docs,
            "input_tokens": chosen.input_tokens,
            "kept_docs": chosen.kept_docs,
            "kept_tokens": chosen.kept_tokens,
            "budget_tokens": chosen.budget_tokens,
            "budget_exceeds_corpus": not chosen.budget_reached,
            "threshold": chosen.threshold,
            "cut": chosen.spec.to_dict(),
        }
        write_atomic(as_path(self.plan_dir) / PLAN_FILE, json.dumps(result, indent=2).encode())
        self.stat_update("kept_docs", value=chosen.kept_docs)


def _read_table(path: Path) -> pa.Table:
    with opened(path) as f:
        return pq.read_table(f)


def stats_rows(stats_dir: Path, recipe: Recipe) -> tuple[Corpus, Rows]:
    """All ranks' statistics as one corpus of rows, the shape `select_exact` takes."""
    files = sorted(stats_dir.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no rank statistics in {stats_dir}: run the scoring stage first")
    table = pa.concat_tables([_read_table(f) for f in files])
    neurons = [json.loads(n) if n else None for n in table.column("neurons").to_pylist()]
    columns = list(next((n for n in neurons if n), {}))
    matrix = np.array(
        [[n[c] for c in columns] if n else [np.nan] * len(columns) for n in neurons], np.float32
    ).reshape(len(neurons), len(columns))
    tokens = np.array(table.column("n_tokens").to_pylist(), np.int64)
    sources = table.column("source").to_pylist()
    names = sorted(set(sources))
    corpus = Corpus(
        root=stats_dir,
        shards=[f.name for f in files],
        columns=columns,
        side_meta={"neurons": _neuron_entries(recipe, columns)},
        sources=names,
    )
    scores = table.column("score").to_pylist()
    rows = Rows(
        shard=np.zeros(len(tokens), np.int32),
        row=np.arange(len(tokens)),
        tie=sidefile.id_hashes(table.column("id").to_pylist()),
        tokens=tokens,
        ok=tokens > 0,
        neurons=matrix,
        probe_score=np.array([np.nan if x is None else x for x in scores], np.float64),
        source=np.array([names.index(x) for x in sources], np.int32),
    )
    return corpus, rows


def _neuron_entries(recipe: Recipe, columns: list[str]) -> list[list]:
    """[layer, index, threshold, weight] per column, as side-file metadata records them."""
    from probes.neuronset import load_neuron_set

    by_column = {n.column: n for n in load_neuron_set(recipe.probe.neurons).neurons}
    return [
        [by_column[c].layer, by_column[c].index, by_column[c].threshold, by_column[c].weight]
        for c in columns
    ]


class BudgetFilter(BaseFilter):
    """Keeps a document iff it falls above its cell's cut in plan.json; else drops it with the
    reason (too_short, too_long, below_threshold, budget). Decides a batch at a time."""

    name = "Rosetta budget filter"

    def __init__(
        self,
        plan_dir: str,
        recipe: str | Recipe = "rosetta-default",
        batch_size: int = 1024,
        exclusion_writer=None,
    ):
        super().__init__(exclusion_writer=exclusion_writer, batch_size=batch_size)
        self.plan_dir = str(plan_dir)
        self.recipe = _recipe(recipe)
        self._spec: CutSpec | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_spec": None}

    @property
    def spec(self) -> CutSpec:
        if self._spec is None:
            plan = json.loads((as_path(self.plan_dir) / PLAN_FILE).read_text())
            self._spec = CutSpec.from_dict(plan["cut"])
        return self._spec

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        spec = self.spec
        columns = list(spec.rule.zparams.columns) if spec.rule.zparams else []
        neurons = np.array(
            [
                [(d.metadata.get("rosetta_neurons") or {}).get(c, np.nan) for c in columns]
                for d in batch
            ],
            np.float32,
        ).reshape(len(batch), len(columns))
        tokens = np.array([d.metadata.get("n_tokens", 0) for d in batch], np.int64)
        rows = Rows(
            shard=np.zeros(len(batch), np.int32),
            row=np.arange(len(batch)),
            tie=sidefile.id_hashes([d.id for d in batch]),
            tokens=tokens,
            ok=tokens > 0,
            neurons=neurons,
            probe_score=np.array(
                [_float(d.metadata.get("rosetta_score")) for d in batch], np.float64
            ),
        )
        sources = [doc_source(d, self.recipe.quotas.source) for d in batch]
        reasons = spec.decide(rows, sources)
        return [True if r == KEPT else (False, REASONS[r]) for r in reasons.tolist()]


def _float(value: float | None) -> float:
    return np.nan if value is None else float(value)


def plan_stages(shards: str, work: str, recipe: Recipe, **scorer) -> list[list[PipelineStep]]:
    """The plan's three stages as docs/datatrove.md lays them out, for any executor: score
    (`ShardReader` of `shards`, `RosettaScorer(recipe, **scorer)`, statistics, tagged documents),
    plan (one task), filter (kept documents). Everything is written under `work` (a path or
    URL): stats/, tagged/, plan/, kept/."""
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    stats, tagged, plan = f"{work}/stats", f"{work}/tagged", f"{work}/plan"
    return [
        [
            ShardReader(str(shards)),
            RosettaScorer(recipe, **scorer),
            ScoreStats(stats, recipe),
            JsonlWriter(tagged),
        ],
        [BudgetPlan(stats, plan, recipe)],
        [JsonlReader(tagged), BudgetFilter(plan, recipe), JsonlWriter(f"{work}/kept")],
    ]
