"""JSON lines, plain or gzip / zstd compressed: rows are lines, copied byte for byte.

Compressors run with fixed settings and no timestamps, so the same rows always give the same
bytes. A truncated or corrupt compressed stream raises ShardError at the line after the last
good one, once the good lines have been yielded.
"""

import gzip
import io
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from probes.errors import ShardError
from probes.formats.base import ShardFormat
from probes.storage import is_remote

ZSTD_LEVEL = 10
_READ_SIZE = 1 << 16


class _ZstdFrames(io.RawIOBase):
    """Decompresses concatenated zstd frames, one decompressobj per frame.

    zstandard's stream_reader (even with read_across_frames=True) ends quietly when the input
    stops mid-frame, so a truncated download would look like a shorter shard. Tracking frames
    here lets a truncated last frame raise instead.
    """

    def __init__(self, source: BinaryIO):
        self._source = source
        self._dctx = zstandard.ZstdDecompressor()
        self._frame: zstandard.ZstdDecompressionObj | None = None
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._out:
            data = self._source.read(_READ_SIZE)
            if not data:
                if self._frame is not None:
                    raise zstandard.ZstdError("input ends in the middle of a frame")
                return 0
            out = []
            while data:
                if self._frame is None:
                    self._frame = self._dctx.decompressobj()
                out.append(self._frame.decompress(data))
                data = b""
                if self._frame.eof:
                    data, self._frame = self._frame.unused_data, None
            self._out = memoryview(b"".join(out))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


def _plain_rows(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        # fsspec's own readline re-reads its block per line (quadratic on a remote shard); a
        # buffered reader over it splits lines from 1 MiB reads
        lines = io.BufferedReader(f, 1 << 20) if is_remote(path) else f
        for row, line in enumerate(lines):
            yield row, line.removesuffix(b"\n")


def _compressed_rows(path: Path, kind: str) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as raw:
        if kind == "gzip":
            stream: BinaryIO = gzip.GzipFile(fileobj=raw)
        else:
            stream = io.BufferedReader(_ZstdFrames(raw))
        row = 0
        try:
            for line in stream:
                yield row, line.removesuffix(b"\n")
                row += 1
        except (EOFError, OSError, zlib.error, zstandard.ZstdError) as e:
            raise ShardError(str(path), row + 1, f"truncated or corrupt {kind} stream ({e})") from e


def _write_lines(lines: Iterable[bytes], out) -> None:
    for line in lines:
        out.write(line + b"\n")


def _write_plain(lines: Iterable[bytes], source: Path, dest: Path) -> None:
    with open(dest, "wb") as out:
        _write_lines(lines, out)


def _write_gzip(lines: Iterable[bytes], source: Path, dest: Path) -> None:
    with open(dest, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
            _write_lines(lines, out)


def _write_zstd(lines: Iterable[bytes], source: Path, dest: Path) -> None:
    with open(dest, "wb") as raw:
        cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, threads=0)
        with cctx.stream_writer(raw, closefd=False) as out:
            _write_lines(lines, out)


FORMATS = (
    ShardFormat(".jsonl", _plain_rows, _write_plain),
    ShardFormat(".jsonl.gz", lambda path: _compressed_rows(path, "gzip"), _write_gzip),
    ShardFormat(".jsonl.zst", lambda path: _compressed_rows(path, "zstd"), _write_zstd),
)
