"""The built-in demo corpus: Python's own help text, written as shards in every format we read.

The text ships with every Python install (pydoc help topics and stdlib docstrings), so the demo
needs no download, and the mixed formats exercise each reader in probes.shards.
"""

import gzip
import importlib
import inspect
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from probes.errors import CurateError

# Documents are runs of whole paragraphs of MIN_WORDS..MAX_WORDS words (a paragraph longer than
# MAX_WORDS is cut at line breaks). Smaller than typical web documents so that the ~90k words of
# text available give a corpus of several hundred documents.
MIN_WORDS = 60
MAX_WORDS = 150

# Modules whose docstrings (module, public classes, functions and methods) are substantial.
MODULES = (
    "argparse",
    "collections",
    "configparser",
    "csv",
    "datetime",
    "decimal",
    "difflib",
    "fractions",
    "functools",
    "http.client",
    "inspect",
    "itertools",
    "json",
    "logging",
    "pathlib",
    "re",
    "sqlite3",
    "statistics",
    "subprocess",
    "textwrap",
    "threading",
    "unittest",
)

SHARDS = (
    "modules/part-000.jsonl",
    "modules/part-001.parquet",
    "topics/part-000.jsonl.gz",
    "topics/part-001.jsonl.zst",
)
_ZSTD_FRAME_DOCS = 64  # several frames per .zst shard, as produced by chunked writers
# Records how a shard folder was built, so that a rerun with another --docs-per-shard is caught.
# Not a shard suffix: shard readers never see it.
BUILD_FILE = "demo-build.json"
_PARQUET_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("metadata", pa.struct([("source", pa.string())])),
    ]
)


def build_demo_shards(out_dir: Path, docs_per_shard: int | None = None) -> Path:
    """Write the demo shards to `out_dir` (once: a complete `out_dir` is returned unchanged).

    docs_per_shard: keep only the first N documents of each shard (a small demo for quick runs);
    None keeps all of them. A complete `out_dir` built with another value is an error.

    Output is byte-for-byte deterministic for a given Python, and appears atomically: shards are
    written to a temporary sibling directory that is then renamed into place.
    """
    if docs_per_shard is not None and docs_per_shard < 1:
        raise CurateError(f"docs per shard must be at least 1, not {docs_per_shard}")
    if _is_complete(out_dir):
        _check_build(out_dir, docs_per_shard)
        return out_dir
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    elif out_dir.exists():
        raise CurateError(f"{out_dir} exists but is not a demo corpus; remove it or pick another")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left over by a crashed run with our pid
    try:
        _write_shards(tmp, docs_per_shard)
        tmp.rename(out_dir)
    except OSError:
        if not _is_complete(out_dir):  # else another process finished it first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _check_build(out_dir, docs_per_shard)  # another process may have built another variant
    return out_dir


def _is_complete(out_dir: Path) -> bool:
    return all((out_dir / name).is_file() for name in SHARDS)


def _check_build(out_dir: Path, docs_per_shard: int | None) -> None:
    """A folder without a build record predates it and holds every document."""
    record = out_dir / BUILD_FILE
    built = json.loads(record.read_text())["docs_per_shard"] if record.is_file() else None
    if built != docs_per_shard:
        raise CurateError(
            f"{out_dir} holds demo shards with {_describe(built)}, not "
            f"{_describe(docs_per_shard)}; remove it or pick another output folder"
        )


def _describe(docs_per_shard: int | None) -> str:
    return "all documents" if docs_per_shard is None else f"{docs_per_shard} documents per shard"


def _write_shards(tmp: Path, docs_per_shard: int | None = None) -> None:
    topics = list(_documents("pydoc", "pydoc-topics", _topic_texts()))
    modules = list(_documents("stdlib", "stdlib-docstrings", _module_texts()))
    for sub in ("modules", "topics"):
        (tmp / sub).mkdir(parents=True)
    cut = slice(docs_per_shard)  # slice(None) keeps every document
    half = len(modules) // 2
    (tmp / SHARDS[0]).write_bytes(_jsonl(modules[:half][cut]))
    pq.write_table(
        pa.Table.from_pylist(modules[half:][cut], schema=_PARQUET_SCHEMA),
        tmp / SHARDS[1],
        row_group_size=256,
    )
    half = len(topics) // 2
    (tmp / SHARDS[2]).write_bytes(gzip.compress(_jsonl(topics[:half][cut]), mtime=0))
    zstd = zstandard.ZstdCompressor(level=10, write_checksum=True)
    rest = topics[half:][cut]
    # A small variant still gets several frames, so the multi-frame reader is exercised.
    frame_docs = min(_ZSTD_FRAME_DOCS, max(1, (len(rest) + 1) // 2))
    frames = range(0, len(rest), frame_docs)
    (tmp / SHARDS[3]).write_bytes(
        b"".join(zstd.compress(_jsonl(rest[i : i + frame_docs])) for i in frames)
    )
    build = {"docs_per_shard": docs_per_shard}
    (tmp / BUILD_FILE).write_text(json.dumps(build) + "\n", encoding="utf-8")


def _jsonl(records: list[dict]) -> bytes:
    lines = (json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)
    return "".join(lines).encode("utf-8")


def _topic_texts() -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield name, topics[name]


def _module_texts() -> Iterator[tuple[str, str]]:
    """(module name, its docstrings joined), each member's docstring under a heading line."""
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # e.g. sqlite3 on a Python built without it
            continue
        parts = [_doc(module)]
        for member_name, member in sorted(vars(module).items()):
            if member_name.startswith("_") or not _defined_in(member, name):
                continue
            parts.append(_titled(f"{name}.{member_name}", member))
            if inspect.isclass(member):
                for attr, value in sorted(vars(member).items()):
                    if not attr.startswith("_") and callable(value):
                        parts.append(_titled(f"{name}.{member_name}.{attr}", value))
        text = "\n\n".join(p for p in parts if p)
        if text:
            yield name, text


def _defined_in(member: object, module_name: str) -> bool:
    is_api = inspect.isclass(member) or inspect.isroutine(member)
    return is_api and getattr(member, "__module__", None) == module_name


def _doc(obj: object) -> str:
    """The object's own docstring (not inherited, unlike inspect.getdoc), or ""."""
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _titled(title: str, obj: object) -> str:
    doc = _doc(obj)
    return f"{title}\n\n{doc}" if doc.strip() else ""


def _documents(prefix: str, source: str, texts: Iterator[tuple[str, str]]) -> Iterator[dict]:
    for name, text in texts:
        for n, chunk in enumerate(_chunks(text)):
            yield {"id": f"{prefix}/{name}/{n}", "text": chunk, "metadata": {"source": source}}


def _chunks(text: str) -> list[str]:
    """Whole paragraphs grouped to MIN_WORDS..MAX_WORDS words; a short tail joins the last chunk."""
    chunks: list[list[str]] = []
    words = 0
    for para in _paragraphs(text):
        n = len(para.split())
        if not chunks or (words >= MIN_WORDS and words + n > MAX_WORDS):
            chunks.append([])
            words = 0
        chunks[-1].append(para)
        words += n
    if len(chunks) > 1 and words < MIN_WORDS:
        chunks[-2].extend(chunks.pop())
    return ["\n\n".join(c) for c in chunks]


def _paragraphs(text: str) -> Iterator[str]:
    """Blank-line separated paragraphs, those over MAX_WORDS cut at line breaks."""
    for para in re.split(r"\n[ \t]*\n", text):
        lines: list[str] = []
        words = 0
        for line in para.strip("\n").splitlines():
            n = len(line.split())
            if words and words + n > MAX_WORDS:
                yield "\n".join(lines)
                lines, words = [], 0
            lines.append(line)
            words += n
        if words:
            yield "\n".join(lines)
