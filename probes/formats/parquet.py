"""Parquet shards: rows are records, written back with the source shard's schema."""

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from probes.errors import ShardError
from probes.formats.base import ShardFormat
from probes.storage import opened

BATCH_ROWS = 1024


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open("rb") as f:
        row = 0
        try:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS):
                for record in batch.to_pylist():
                    yield row, record
                    row += 1
        except (pa.ArrowException, OSError) as e:
            raise ShardError(str(path), row + 1, f"unreadable parquet ({e})") from e


def _write(records: Iterable[dict], source: Path, dest: Path) -> None:
    with opened(source) as f:
        schema = pq.read_schema(f)
    with pq.ParquetWriter(dest, schema) as writer:
        batch: list[dict] = []
        for record in records:
            batch.append(record)
            if len(batch) == BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))


def _modality(path: Path) -> str:
    """ "image" when a column is a Hugging Face `Image` struct (bytes, path); an unreadable file
    counts as text, so the text reader reports the damage."""
    try:
        with opened(path) as f:
            schema = pq.read_schema(f)
    except (pa.ArrowException, OSError):
        return "text"
    images = [f for f in schema if pa.types.is_struct(f.type) and {"bytes", "path"} <= _names(f)]
    return "image" if images else "text"


def _names(field: pa.Field) -> set[str]:
    return {child.name for child in field.type}


FORMAT = ShardFormat(".parquet", _rows, _write, modality=_modality)
