"""Shard formats: one module per format, each reading the physical rows of a shard and writing
a subset of them back in the same format. The shard's file name (its suffix) picks the format,
so adding a format is one module plus one entry in `FORMATS`.
"""

from pathlib import Path

from probes.formats import jsonl, parquet
from probes.formats.base import RawRow, ShardFormat

FORMATS: tuple[ShardFormat, ...] = (*jsonl.FORMATS, parquet.FORMAT)
SHARD_SUFFIXES = tuple(f.suffix for f in FORMATS)
__all__ = ["FORMATS", "SHARD_SUFFIXES", "RawRow", "ShardFormat", "accepted", "format_of"]


def format_of(path: Path) -> ShardFormat:
    """The format of the shard at `path`, by its file name; ValueError if none matches."""
    for shard_format in FORMATS:
        if path.name.endswith(shard_format.suffix):
            return shard_format
    raise ValueError(f"{path} is not a shard (expected a name ending in {accepted()})")


def accepted() -> str:
    """The accepted suffixes, for messages."""
    return ", ".join(SHARD_SUFFIXES[:-1]) + " or " + SHARD_SUFFIXES[-1]
