"""Documents from corpus shards: listing, parsing rows into documents, and row errors.

Shards can be far larger than memory, so every reader streams: rows are yielded as they are
decoded (by the shard's format, `probes.formats`), and a damaged file still yields the rows
before the damage.
"""

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from probes.errors import CurateError, ShardError
from probes.formats import FORMATS, RawRow, accepted, format_of
from probes.storage import check_store, is_remote


def shard_root(shard_dir: Path) -> Path:
    """The folder shard paths are relative to: the directory itself, or a single shard's parent
    (a shard file, or one ImageFolder class folder)."""
    return shard_dir if shard_dir.is_dir() and not _is_shard(shard_dir) else shard_dir.parent


def list_shards(root: Path) -> list[Path]:
    """All shards under `root`, sorted by relative POSIX path so runs are reproducible.

    Hidden entries (a leading dot, as temporary outputs have) are not shards.
    """
    if is_remote(root):
        check_store(root, "")  # before `exists`, which fails on a refused bucket or answers False
    if not root.exists():
        raise CurateError(f"{root} does not exist")
    if root.is_file() or _is_shard(root):
        try:
            format_of(root)
        except ValueError as e:
            raise CurateError(str(e)) from None
        return [root]
    shards = _remote_shards(root) if is_remote(root) else _local_shards(root)
    if not shards:
        raise CurateError(f"no shards under {root} (expected {accepted()})")
    return sorted(shards, key=lambda p: p.relative_to(root).as_posix())


def _local_shards(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if not _hidden(p.relative_to(root).parts) and _is_shard(p)]


def _remote_shards(root: Path) -> list[Path]:
    """Shards under a remote root from one recursive listing: a shard file is known by its name
    alone, so only folders (for a folder format's claim) cost another request."""
    found = []
    prefix = root.path.rstrip("/") + "/"
    for name, info in root.fs.find(root.path, withdirs=True, detail=True).items():
        rel = name.removeprefix(prefix)
        if rel == name or _hidden(rel.split("/")):
            continue
        path = root / rel
        if info["type"] == "directory":
            if any(f.folder and f.claims(path) for f in FORMATS):
                found.append(path)
        elif any(not f.folder and rel.endswith(f.suffix) for f in FORMATS):
            found.append(path)
    return found


def _hidden(parts: Sequence[str]) -> bool:
    """Hidden entries (a leading dot, as temporary outputs and completion markers have)."""
    return any(part.startswith(".") for part in parts)


def _is_shard(path: Path) -> bool:
    return any(f.matches(path) for f in FORMATS)


def shards_modality(shards: Iterable[Path]) -> str:
    """ "image" when every shard holds images (tar, ImageFolder, parquet with a Hugging Face
    `Image` column), else "text"."""
    kinds = {format_of(shard).modality(shard) for shard in shards}
    return "image" if kinds == {"image"} else "text"


@dataclass(frozen=True)
class Document:
    row: int  # 0-based physical row: line index for JSON lines, row index for parquet
    id: str
    text: str  # "" when error is set
    error: str | None = None  # why the row is unusable (only under on_error="skip")
    # The parsed row, so other fields (a label, a source) need no second read of the shard.
    record: dict | None = field(default=None, compare=False, repr=False)
    # An image row's encoded image (read with `image_key`); text then holds its caption or "".
    media: bytes | None = field(default=None, compare=False, repr=False)


def iter_raw_rows(path: Path) -> Iterator[tuple[int, RawRow]]:
    """Physical rows of a shard: (row, line bytes without "\\n") or (row, dict) for parquet.

    A truncated or corrupt compressed stream raises ShardError at the 1-based line after the last
    good one, once the good rows have been yielded.
    """
    return format_of(path).read(path)  # raise ValueError now, not on first next()


def read_documents(
    path: Path,
    text_key: str = "text",
    id_key: str = "id",
    on_error: str = "fail",
    root: Path | None = None,
    image_key: str | None = None,
) -> Iterator[Document]:
    """Documents of one shard; ids fall back to "<relpath>:<row>" (relpath from `root`).

    With `image_key` each row is an image (a Hugging Face `Image` struct of bytes and path, or
    bytes): its bytes become `media`, and a string at `text_key`, if any, the caption.

    on_error="fail" raises ShardError at the first unusable row; "skip" yields it as a Document
    with `error` set (and stops the shard after a stream-level error) so callers can count it.
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    rel = path.relative_to(root).as_posix() if root is not None else path.name
    parse = _parse if image_key is None else functools.partial(_parse_image, image_key=image_key)
    return _documents(path, iter_raw_rows(path), text_key, id_key, on_error == "skip", rel, parse)


def _documents(
    path: Path,
    rows: Iterator[tuple[int, RawRow]],
    text_key: str,
    id_key: str,
    skip: bool,
    rel: str,
    parse: Callable,
) -> Iterator[Document]:
    try:
        for row, raw in rows:
            record, doc_id, text, reason, *media = parse(raw, text_key, id_key)
            doc_id = doc_id if doc_id is not None else f"{rel}:{row}"
            if reason is None:
                yield Document(row, doc_id, text, record=record, media=next(iter(media), None))
            elif skip:
                yield Document(row, doc_id, "", error=reason, record=record)
            else:
                raise ShardError(str(path), row + 1, reason)
    except ShardError as e:  # under "skip" only the stream itself can fail
        if not skip:
            raise
        yield Document(e.line - 1, f"{rel}:{e.line - 1}", "", error=e.reason)


def _parse(
    raw: RawRow, text_key: str, id_key: str
) -> tuple[dict | None, str | None, str, str | None]:
    """(record or None, id or None, text, reason the row is unusable or None)."""
    if isinstance(raw, bytes):
        if not raw.strip():
            return None, None, "", "empty line"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            reason = f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})"
            return None, None, "", reason
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            return None, None, "", f"invalid JSON: {e}"
        if not isinstance(record, dict):
            return None, None, "", f"not a JSON object (got {type(record).__name__})"
    else:
        record = raw
    doc_id = str(record[id_key]) if record.get(id_key) is not None else None
    if text_key not in record:
        keys = ", ".join(map(str, list(record)[:20]))
        return record, doc_id, "", f"missing text key {text_key!r} (keys: {keys})"
    text = record[text_key]
    if not isinstance(text, str):
        reason = f"text key {text_key!r} is not a string (got {type(text).__name__})"
        return record, doc_id, "", reason
    if not text.strip():
        return record, doc_id, "", "empty text"
    return record, doc_id, text, None


def _parse_image(
    raw: RawRow, text_key: str, id_key: str, image_key: str
) -> tuple[dict | None, str | None, str, str | None, bytes | None]:
    """(record, id, caption, reason the row is unusable or None, image bytes)."""
    if isinstance(raw, bytes):
        record, doc_id, _, reason = _parse(raw, text_key, id_key)
        if record is None:
            return None, None, "", reason, None
    else:
        record = raw
        doc_id = str(record[id_key]) if record.get(id_key) is not None else None
    caption = record.get(text_key) if isinstance(record.get(text_key), str) else ""
    if image_key not in record:
        keys = ", ".join(str(k) for k in list(record)[:20] if not str(k).startswith("__"))
        return record, doc_id, "", f"missing image key {image_key!r} (keys: {keys})", None
    value = record[image_key]
    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, bytes):
        kind = type(value).__name__
        return (
            record,
            doc_id,
            "",
            f"image key {image_key!r} is not an image struct (got {kind})",
            None,
        )
    if not data:
        return record, doc_id, "", "empty image", None
    return record, doc_id, caption, None, data


def dotted(record: dict | None, key: str) -> str | None:
    """The value at a dotted key of a record ("metadata.source") as text; None where the key is
    missing or null. One rule for every command that names documents by a record field."""
    value: object = record
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return None if value is None else str(value)


def chunked(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    """Consecutive lists of `size` documents (the last may be shorter)."""
    chunk: list[Document] = []
    for doc in docs:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
