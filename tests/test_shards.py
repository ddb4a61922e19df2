import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from curate.demo_shards import SHARDS, build_demo_shards
from probes.errors import CurateError, ShardError
from probes.formats import FORMATS, format_of
from probes.shards import Document, dotted, iter_raw_rows, list_shards, read_documents

RECORDS = [{"id": f"doc-{i}", "text": f"document number {i} ünïcode", "n": i} for i in range(30)]


def _jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def write_shard(path: Path, records: list[dict]) -> Path:
    """Write records in the format named by the path's suffix (zstd as two frames)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=7)
    elif path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(_jsonl(records)))
    elif path.name.endswith(".zst"):
        cctx = zstandard.ZstdCompressor()
        half = len(records) // 2
        path.write_bytes(
            cctx.compress(_jsonl(records[:half])) + cctx.compress(_jsonl(records[half:]))
        )
    else:
        path.write_bytes(_jsonl(records))
    return path


def read_until_error(path: Path, **kwargs) -> tuple[list[Document], ShardError | None]:
    docs: list[Document] = []
    try:
        for doc in read_documents(path, **kwargs):
            docs.append(doc)
    except ShardError as e:
        return docs, e
    return docs, None


# --- listing -------------------------------------------------------------------------------------


def test_list_shards_recursive_and_sorted_by_relative_path(tmp_path):
    names = ["b/z.jsonl", "a.jsonl.zst", "b/a/c.parquet", "a/x.jsonl.gz", "b.jsonl", "a/y.jsonl"]
    for name in reversed(names):  # creation order must not matter
        write_shard(tmp_path / name, RECORDS[:1])
    (tmp_path / "notes.txt").write_text("not a shard")
    (tmp_path / "a" / "data.json").write_text("{}")
    (tmp_path / "a" / "shard.jsonl.bak").write_text("{}")

    shards = list_shards(tmp_path)

    assert [p.relative_to(tmp_path).as_posix() for p in shards] == [
        "a.jsonl.zst",
        "a/x.jsonl.gz",
        "a/y.jsonl",
        "b.jsonl",
        "b/a/c.parquet",
        "b/z.jsonl",
    ]
    assert list_shards(tmp_path) == shards


def test_list_shards_single_file_root(tmp_path):
    shard = write_shard(tmp_path / "one.jsonl.gz", RECORDS)
    assert list_shards(shard) == [shard]
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(CurateError, match="not a shard"):
        list_shards(tmp_path / "x.txt")


def test_list_shards_missing_and_empty_dirs(tmp_path):
    with pytest.raises(CurateError, match="does not exist"):
        list_shards(tmp_path / "nope")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.md").write_text("hi")
    with pytest.raises(CurateError) as err:
        list_shards(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)
    assert ".jsonl.zst" in str(err.value) and ".parquet" in str(err.value)


# --- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"])
def test_every_format_reads_the_same_documents(tmp_path, suffix):
    path = write_shard(tmp_path / f"shard{suffix}", RECORDS)
    docs = list(read_documents(path))
    assert docs == [Document(i, r["id"], r["text"]) for i, r in enumerate(RECORDS)]


TEXT_FORMATS = [f for f in FORMATS if not f.folder and f.suffix != ".tar"]


@pytest.mark.parametrize("shard_format", TEXT_FORMATS, ids=lambda f: f.suffix)
def test_every_format_writes_back_the_rows_it_reads_the_same_way_each_time(tmp_path, shard_format):
    """The registry's contract: a format writes a subset of a shard's raw rows so that reading
    the result gives those rows, and the same rows always give the same bytes (the image
    formats' side of it: test_image_shards)."""
    source = write_shard(tmp_path / f"in{shard_format.suffix}", RECORDS)
    rows = [raw for row, raw in shard_format.read(source) if row % 3 == 0]
    outputs = []
    for name in ("a", "b"):
        dest = tmp_path / f"{name}{shard_format.suffix}"
        shard_format.write(iter(rows), source, dest)
        assert [raw for _, raw in shard_format.read(dest)] == rows
        outputs.append(dest.read_bytes())
    assert outputs[0] == outputs[1] and len(rows) == 10
    assert format_of(tmp_path / f"x/y{shard_format.suffix}") is shard_format


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_documents_carry_their_record_for_dotted_keys(tmp_path, suffix):
    records = [
        {"id": "a", "text": "x", "metadata": {"source": "web", "lang": None}},
        {"id": "b", "text": "y", "metadata": {"source": "", "lang": "en"}},
    ]
    docs = list(read_documents(write_shard(tmp_path / f"s{suffix}", records)))
    assert [d.record for d in docs] == records
    assert [dotted(d.record, "metadata.source") for d in docs] == ["web", ""]
    assert [dotted(d.record, "metadata.lang") for d in docs] == [None, "en"]  # null is absent
    assert dotted(docs[0].record, "metadata.source.name") is None
    assert dotted(docs[0].record, "text") == "x" and dotted(None, "metadata") is None


def test_raw_rows_trailing_newline_is_not_a_row_but_blank_middle_line_is(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"text": "a"}\n\n{"text": "b"}\n')
    assert list(iter_raw_rows(path)) == [(0, b'{"text": "a"}'), (1, b""), (2, b'{"text": "b"}')]
    path.write_bytes(b'{"text": "a"}\n{"text": "b"}')  # no final newline
    assert [row for row, _ in iter_raw_rows(path)] == [0, 1]


def test_id_falls_back_to_relative_path_and_row(tmp_path):
    path = write_shard(
        tmp_path / "sub" / "s.jsonl",
        [{"text": "no id"}, {"id": 7, "text": "int id"}, {"id": None, "text": "null id"}],
    )
    assert [d.id for d in read_documents(path)] == ["s.jsonl:0", "7", "s.jsonl:2"]
    assert [d.id for d in read_documents(path, root=tmp_path)][0] == "sub/s.jsonl:0"


def test_custom_keys(tmp_path):
    path = write_shard(tmp_path / "s.parquet", [{"key": "k1", "content": "hello"}])
    assert list(read_documents(path, text_key="content", id_key="key")) == [
        Document(0, "k1", "hello")
    ]
    with pytest.raises(ShardError, match=r"missing text key 'text' \(keys: key, content\)"):
        list(read_documents(path))


BAD_LINES = {
    "non-utf8": (b'{"text": "caf\xe9"}', r"not valid UTF-8 \(byte 0xe9 at offset 13\)"),
    "invalid-json": (b'{"text": "x",}', "invalid JSON: "),
    "blank": (b"", "empty line"),
    "not-object": (b'["text"]', "not a JSON object"),
    "missing-text": (b'{"id": "x", "body": "y"}', r"missing text key 'text' \(keys: id, body\)"),
    "text-not-string": (b'{"text": 5}', "not a string"),
    "empty-text": (b'{"text": "  \\n "}', "empty text"),
}


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_bad_row_fails_with_its_1_based_line(tmp_path, name):
    bad, reason = BAD_LINES[name]
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"text": "good"}\n' + bad + b'\n{"text": "after"}\n')
    docs, err = read_until_error(path)
    assert [d.text for d in docs] == ["good"]
    assert err is not None and err.line == 2
    assert str(err).startswith(f"{path}:2: ")
    assert re.search(reason, err.reason)


def test_skip_yields_error_documents_and_continues(tmp_path):
    path = tmp_path / "s.jsonl"
    lines = [b'{"id": "a", "text": "good"}'] + [bad for bad, _ in BAD_LINES.values()]
    path.write_bytes(b"\n".join([*lines, b'{"text": "last"}']) + b"\n")

    docs = list(read_documents(path, on_error="skip"))

    assert [d.row for d in docs] == list(range(len(lines) + 1))
    assert (docs[0].text, docs[-1].text) == ("good", "last")
    assert docs[-1].error is None and docs[0].error is None
    assert docs[5] == Document(5, "x", "", error="missing text key 'text' (keys: id, body)")
    for doc, (_, reason) in zip(docs[1:-1], BAD_LINES.values(), strict=True):
        assert doc.text == "" and doc.error is not None
        assert re.search(reason, doc.error)


def test_on_error_must_be_fail_or_skip(tmp_path):
    path = write_shard(tmp_path / "s.jsonl", RECORDS)
    with pytest.raises(ValueError, match="on_error"):
        read_documents(path, on_error="ignore")


LINES = [{"text": f"line {i} " + "x" * (i % 50)} for i in range(20_000)]  # several zstd blocks


@pytest.mark.parametrize("suffix,kind", [(".jsonl.gz", "gzip"), (".jsonl.zst", "zstd")])
@pytest.mark.parametrize("keep", [0.5, -4])
def test_truncated_stream_raises_after_good_rows(tmp_path, suffix, kind, keep):
    path = write_shard(tmp_path / f"s{suffix}", LINES)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[:keep])

    docs, err = read_until_error(path)

    assert err is not None, "truncation went unnoticed"
    assert f"truncated or corrupt {kind} stream" in err.reason
    assert err.line == len(docs) + 1
    assert [d.text for d in docs] == [r["text"] for r in LINES[: len(docs)]]
    if keep > 0:
        assert 0 < len(docs) < len(LINES)

    skipped = list(read_documents(path, on_error="skip"))
    assert skipped[:-1] == docs
    assert skipped[-1] == Document(len(docs), f"s{suffix}:{len(docs)}", "", error=err.reason)


def test_corrupt_parquet_is_a_shard_error(tmp_path):
    path = tmp_path / "s.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 100)
    docs, err = read_until_error(path)
    assert docs == [] and err is not None and err.line == 1
    assert "unreadable parquet" in str(err)
    assert list(read_documents(path, on_error="skip")) == [
        Document(0, "s.parquet:0", "", error=err.reason)
    ]


def test_five_megabyte_single_line_document(tmp_path):
    big = "word " * 1_000_000
    for suffix in (".jsonl", ".jsonl.zst"):
        path = write_shard(tmp_path / f"big{suffix}", [{"text": big}, {"text": "small"}])
        assert [len(d.text) for d in read_documents(path)] == [len(big), 5]


# --- demo corpus ---------------------------------------------------------------------------------


def test_demo_shards_are_deterministic_and_readable(tmp_path):
    first = build_demo_shards(tmp_path / "one")
    (tmp_path / "two").mkdir()  # an existing empty directory is fine
    second = build_demo_shards(tmp_path / "two")

    shards = list_shards(first)
    assert [p.relative_to(first).as_posix() for p in shards] == sorted(SHARDS)
    for shard in shards:
        assert shard.read_bytes() == (second / shard.relative_to(first)).read_bytes(), shard

    docs = [d for shard in shards for d in read_documents(shard, root=first)]
    assert 600 <= len(docs) <= 1200
    assert all(d.error is None and d.text.strip() for d in docs)
    assert len({d.id for d in docs}) == len(docs)
    assert {d.id.split("/")[0] for d in docs} == {"pydoc", "stdlib"}
    assert sorted(tmp_path.iterdir()) == [first, second]  # no temporary directories left behind


def test_demo_shards_existing_corpus_is_left_alone(tmp_path):
    out = build_demo_shards(tmp_path / "demo")
    marker = out / SHARDS[0]
    marker.write_bytes(b"edited")
    assert build_demo_shards(out) == out
    assert marker.read_bytes() == b"edited"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(CurateError, match="not a demo corpus"):
        build_demo_shards(tmp_path / "other")
