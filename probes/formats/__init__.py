"""Shard formats: one module per format, each reading the physical rows of a shard and writing
a subset of them back in the same format. A shard file's name (its suffix) picks the format; a
folder format (ImageFolder) claims folders by what they hold. Adding a format is one module plus
one entry in `FORMATS`.
"""

from pathlib import Path

from probes.formats import imagefolder, jsonl, parquet, webdataset
from probes.formats.base import IMAGE_SUFFIXES, RawRow, ShardFormat, is_image_name

FORMATS: tuple[ShardFormat, ...] = (
    *jsonl.FORMATS,
    parquet.FORMAT,
    webdataset.FORMAT,
    imagefolder.FORMAT,
)
SHARD_SUFFIXES = tuple(f.suffix for f in FORMATS if not f.folder)
__all__ = [
    "FORMATS",
    "IMAGE_SUFFIXES",
    "SHARD_SUFFIXES",
    "RawRow",
    "ShardFormat",
    "accepted",
    "format_of",
    "is_image_name",
]


def format_of(path: Path) -> ShardFormat:
    """The format of the shard at `path`; ValueError if none claims it."""
    for shard_format in FORMATS:
        if shard_format.matches(path):
            return shard_format
    raise ValueError(f"{path} is not a shard (expected {accepted()})")


def accepted() -> str:
    """What counts as a shard, for messages."""
    names = ", ".join(SHARD_SUFFIXES[:-1]) + " or " + SHARD_SUFFIXES[-1]
    return f"files ending in {names}, or ImageFolder class folders of images"
