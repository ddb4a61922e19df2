"""Webdataset shards (`.tar`): a row is a sample, the consecutive members sharing a key (the
member name up to the first dot of its base name: `0001.jpg`, `0001.cls`, `0001.txt`).

Each row is a record with one field per extension (the member's bytes) plus, in the Hugging Face
`Image` layout used by every image reader, `image` (the first image member), `text` (a `txt`
caption), `label` (a `cls` or `label` member) and `id` (the key). Kept samples are written back
member by member with their original headers and bytes, so the same rows give the same tar.
"""

import io
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from probes.errors import ShardError
from probes.formats.base import ShardFormat, is_image_name

MEMBERS = "__members__"  # (TarInfo, bytes) of the sample, for writing it back


def _split(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: "a/b/0001.seg.png" -> ("a/b/0001", "seg.png")."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def _record(key: str, members: list[tuple[tarfile.TarInfo, bytes]]) -> dict:
    record: dict = {"__key__": key, "id": key, MEMBERS: members}
    for info, data in members:
        record.setdefault(_split(info.name)[1], data)
    image = next(((i, d) for i, d in members if is_image_name(i.name)), None)
    if image is not None:
        record["image"] = {"bytes": image[1], "path": image[0].name}
    for field, ext in (("text", "txt"), ("label", "cls"), ("label", "label")):
        value = record.get(ext)  # a `label` member's bytes sit at "label" until decoded here
        if isinstance(value, bytes) and not isinstance(record.get(field), str):
            record[field] = value.decode("utf-8", "replace").strip()
    return record


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    row, key, members = 0, None, []
    with path.open("rb") as f:
        try:
            with tarfile.open(fileobj=f, mode="r|") as tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    member_key = _split(info.name)[0]
                    if members and member_key != key:
                        yield row, _record(key, members)
                        row, members = row + 1, []
                    key = member_key
                    members.append((info, tar.extractfile(info).read()))
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ShardError(str(path), row + 1, f"truncated or corrupt tar ({e})") from e
        if not _ends_cleanly(f):
            raise ShardError(str(path), row + 1, "truncated or corrupt tar (no end-of-archive)")
    if members:
        yield row, _record(key, members)


def _ends_cleanly(f) -> bool:
    """Whether the file ends in the two zero blocks every tar writer appends. Python's reader
    takes a file cut at a header boundary for a shorter archive; this tells the two apart."""
    size = f.seek(0, io.SEEK_END)
    if size % tarfile.BLOCKSIZE or size < 2 * tarfile.BLOCKSIZE:
        return False
    f.seek(size - 2 * tarfile.BLOCKSIZE)
    return not any(f.read())


def _write(records: Iterable[dict], source: Path, dest: Path) -> None:
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        for record in records:
            for info, data in record[MEMBERS]:
                tar.addfile(info, io.BytesIO(data))


FORMAT = ShardFormat(".tar", _rows, _write, modality=lambda path: "image", name="webdataset")
