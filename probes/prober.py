"""The probe stage: every shard of a directory into row-aligned `.scores.parquet` side files.

A side file is written under a temporary name and renamed when complete, so a killed run
leaves either a whole side file or none; a rerun skips side files whose recorded inputs
(the shard's size and mtime and the probe identity: see probes/sidefile.py) still match.
"""

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from probes import sidefile
from probes.atomic import atomic_path
from probes.backends import backend_settings, load_for
from probes.engine import ProbeEngine, probe_engine
from probes.errors import CurateError
from probes.formats import format_of
from probes.models import model_modality, weights_hash
from probes.neuronset import load_neuron_set
from probes.shards import (
    Document,
    chunked,
    list_shards,
    read_documents,
    shard_root,
    shards_modality,
)
from probes.version import TOOL_VERSION

CHUNK_DOCS = 512


@dataclass
class ProbeStats:
    shards: int = 0
    shards_reused: int = 0
    docs: int = 0
    tokens: int = 0
    truncated: int = 0
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    images: bool = False  # `tokens` counts the pixels of the original images

    def summary(self) -> str:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        skipped = f"{self.docs:,} scored, {sum(self.errors.values()):,} skipped"
        if self.images:
            per_s = self.docs / self.seconds if self.seconds else 0.0
            counts = [
                f"images: {skipped}",
                f"pixels: {self.tokens:,} in {self.seconds:.1f} s ({per_s:,.1f} images/s)",
            ]
        else:
            counts = [
                f"documents: {skipped}, {self.truncated:,} truncated to the model's max length",
                f"tokens: {self.tokens:,} in {self.seconds:.1f} s ({rate:,.0f} tok/s)",
            ]
        lines = [f"shards: {self.shards} scored, {self.shards_reused} already done", *counts]
        lines += [f"  skipped ({n:,}): {reason}" for reason, n in self.errors.most_common()]
        return "\n".join(lines)


@dataclass
class ShardProber:
    """Probes the shards whose side files are missing or stale; loads the model only then."""

    identity: dict  # from sidefile.identity()
    make_engine: Callable[[], ProbeEngine]
    text_key: str = "text"
    id_key: str = "id"
    on_error: str = "fail"
    image_key: str | None = None  # set for an image model: the field holding each image

    def run(self, shard_dir: Path, out_dir: Path, progress: bool = True) -> ProbeStats:
        stats = ProbeStats(images=self.image_key is not None)
        start = time.perf_counter()
        root = shard_root(shard_dir)
        todo = []
        for shard in list_shards(shard_dir):
            target = sidefile.path_for(out_dir, shard_dir, shard)
            meta = self._meta(shard, root)
            if target.exists() and sidefile.same_inputs(sidefile.read_meta(target), meta):
                stats.shards_reused += 1
            else:
                todo.append((shard, target, meta))
        if todo:
            engine = self.make_engine()
            with tqdm(unit="doc", disable=not progress, desc="probe") as bar:
                for shard, target, meta in todo:
                    self._score_shard(engine, shard, root, target, meta, stats, bar, start)
                    stats.shards += 1
        stats.seconds = time.perf_counter() - start
        return stats

    def _meta(self, shard: Path, root: Path) -> dict:
        size, mtime_ns = format_of(shard).signature(shard)
        return {
            "shard": shard.relative_to(root).as_posix(),
            "shard_size": size,
            "shard_mtime_ns": mtime_ns,
            **self.identity,
            "tool_version": TOOL_VERSION,
        }

    def _score_shard(
        self,
        engine: ProbeEngine,
        shard: Path,
        root: Path,
        target: Path,
        meta: dict,
        stats: ProbeStats,
        bar: tqdm,
        start: float,
    ) -> None:
        schema = sidefile.schema([n.column for n in engine.neurons], meta)
        docs = read_documents(
            shard, self.text_key, self.id_key, self.on_error, root=root, image_key=self.image_key
        )
        with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            for chunk in chunked(docs, CHUNK_DOCS):
                writer.write_table(self._score_chunk(engine, shard, chunk, schema, stats))
                bar.update(len(chunk))
                bar.set_postfix(tok_s=f"{stats.tokens / (time.perf_counter() - start):,.0f}")

    def _score_chunk(
        self,
        engine: ProbeEngine,
        shard: Path,
        chunk: list[Document],
        schema: pa.Schema,
        stats: ProbeStats,
    ) -> pa.Table:
        image = self.image_key is not None
        scores = engine.probe([doc.media if image else doc.text for doc in chunk])
        errors = [doc.error for doc in chunk]
        for i, doc in enumerate(chunk):
            if doc.error is None and scores.errors[i] is not None:
                where = _member(doc, self.image_key)
                errors[i] = sidefile.unusable(
                    shard, doc.row, scores.errors[i], self.on_error, where
                )
        ok = [e is None for e in errors]
        stats.docs += sum(ok)
        stats.errors.update(_reason_kind(e) for e in errors if e is not None)
        stats.tokens += int(scores.n_tokens[ok].sum())
        stats.truncated += int(scores.truncated[ok].sum())
        columns = {
            "row": [doc.row for doc in chunk],
            "id": [doc.id for doc in chunk],
            "id_hash": sidefile.id_hashes([doc.id for doc in chunk]),
            "n_tokens": scores.n_tokens,
            "truncated": scores.truncated,
            "score": pa.array(scores.score, mask=~np.array(ok)),
            "error": errors,
        }
        for j, neuron in enumerate(engine.neurons):
            columns[neuron.column] = scores.neurons[:, j]
        return pa.table(columns, schema=schema)


def _member(doc: Document, image_key: str | None) -> str | None:
    """The file name of a row's image (an ImageFolder file, a tar member), for error messages."""
    value = (doc.record or {}).get(image_key) if image_key is not None else None
    return value.get("path") if isinstance(value, dict) else None


def _reason_kind(reason: str) -> str:
    """`invalid JSON: Expecting value...` -> `invalid JSON`: what the summary counts by."""
    return re.split(r":| \(", reason, maxsplit=1)[0]


def probe_directory(
    shard_dir: Path,
    neurons: str,
    out_dir: Path,
    model: str,
    agg: str,
    on_error: str = "fail",
    text_key: str = "text",
    id_key: str = "id",
    dtype: str = "auto",
    tokens_per_batch: int | None = None,  # None: the backend's default
    progress: bool = True,
    image_key: str = "image",
    backend: str = "torch",
) -> ProbeStats:
    """Load the model and neuron set, then score every shard of `shard_dir` into `out_dir`.

    An image model reads each row's image from `image_key` (the Hugging Face `Image` column,
    or the image of an ImageFolder / webdataset sample); a text model reads `text_key`.
    `backend` and `dtype` choose what runs the model (probes/backends/).
    """
    shards = list_shards(shard_dir)  # fail on a bad directory before paying for a model load
    check_modality(model, shards, shard_dir)
    modality = model_modality(model)
    settings = backend_settings(backend, dtype, modality)
    neuron_set = load_neuron_set(neurons)
    model_hash = weights_hash(model)
    neuron_set.check_model(model, model_hash)  # before paying for the model load
    entries = [(n.layer, n.index, n.threshold, n.weight) for n in neuron_set.ordered()]
    images = image_key if modality == "image" else None
    identity = sidefile.identity(
        model, model_hash, entries, agg, text_key, id_key, on_error, settings, image_key=images
    )

    def make_engine() -> ProbeEngine:
        loaded = load_for(settings, model)
        return probe_engine(loaded, neuron_set, agg, tokens_per_batch, settings)

    prober = ShardProber(identity, make_engine, text_key, id_key, on_error, images)
    return prober.run(shard_dir, out_dir, progress)


def check_modality(model: str, shards: list[Path], shard_dir: Path) -> None:
    """Refuse a text model on image shards and the reverse, before any model loads."""
    wanted, found = model_modality(model), shards_modality(shards)
    if wanted != found:
        holds = "images" if found == "image" else "text (no image column)"
        raise CurateError(
            f"model {model!r} reads {wanted}s, but the shards under {shard_dir} hold {holds}"
        )
