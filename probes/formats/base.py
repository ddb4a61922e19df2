"""What a shard format module provides (`probes.formats` lists them)."""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

RawRow = bytes | dict  # a JSON line without its newline, or a record (parquet, tar, folder)

# File names of images, as the image readers (ImageFolder, webdataset) recognise them.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


@dataclass(frozen=True)
class ShardFormat:
    suffix: str  # how a shard's file name ends; "" for a folder format
    # (row, raw) for every physical row, 0-based; a damaged file raises ShardError after the
    # rows before the damage
    read: Callable[[Path], Iterator[tuple[int, RawRow]]]
    # write(raw rows of `source`, source, destination): the same bytes for the same rows
    write: Callable[[Iterable[RawRow], Path, Path], None]
    # A folder format claims a folder (`claims(path)`); its shards are written as folders.
    claims: Callable[[Path], bool] | None = None
    # What a shard's rows hold: "text" or "image" (an image column, for formats that can have one)
    modality: Callable[[Path], str] = lambda path: "text"
    name: str = ""  # for messages and tests; the suffix where empty

    @property
    def folder(self) -> bool:
        return self.claims is not None

    def matches(self, path: Path) -> bool:
        if self.claims is not None:
            return path.is_dir() and self.claims(path)
        return path.name.endswith(self.suffix) and not path.is_dir()

    def signature(self, path: Path) -> tuple[int, int]:
        """(size in bytes, newest mtime in ns): what a side file checks to know its shard is
        unchanged. A folder's is over its files, since editing an image leaves the folder's own
        mtime alone."""
        if not self.folder:
            info = path.stat()
            return info.st_size, info.st_mtime_ns
        stats = [p.stat() for p in path.iterdir() if p.is_file()]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
