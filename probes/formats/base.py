"""What a shard format module provides (`probes.formats` lists them)."""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

RawRow = bytes | dict  # a JSON line without its newline, or a parquet record


@dataclass(frozen=True)
class ShardFormat:
    suffix: str
    # (row, raw) for every physical row, 0-based; a damaged file raises ShardError after the
    # rows before the damage
    read: Callable[[Path], Iterator[tuple[int, RawRow]]]
    # write(raw rows of `source`, source, destination): the same bytes for the same rows
    write: Callable[[Iterable[RawRow], Path, Path], None]
