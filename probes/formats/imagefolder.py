"""ImageFolder corpora (`root/<class>/<image>`): each class folder (a leaf folder of images) is
one shard, its image files (sorted by name) its rows (other files are no rows), the folder name
their label.
Kept images are copied byte for byte into a folder of the same name, so the output is an
ImageFolder tree again.

Each row is a record in the Hugging Face `Image` layout, `{"image": {"bytes", "path"}}`, with
`label` (the folder name) and `id` (`<class>/<file>`), so the image readers treat it like a
parquet row.
"""

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from probes.errors import ShardError
from probes.formats.base import ShardFormat, is_image_name
from probes.storage import is_remote


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in _entries(folder) if is_image_name(p.name) and p.is_file())


def _claims(folder: Path) -> bool:
    """A class folder is a leaf holding images and no shard of another format: an output folder
    (a manifest and a report plot beside its kept shards or class folders) is none."""
    from probes.formats import SHARD_SUFFIXES  # the registry imports this module

    entries = _entries(folder)
    return (
        any(is_image_name(p.name) for p in entries)
        and not any(p.is_dir() for p in entries)
        and not any(p.name.endswith(SHARD_SUFFIXES) for p in entries)
    )


def _rows(folder: Path) -> Iterator[tuple[int, dict]]:
    for row, path in enumerate(_images(folder)):
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ShardError(str(folder), row + 1, f"{path.name}: unreadable ({e.strerror})") from e
        image = {"bytes": data, "path": path.name}
        yield row, {"image": image, "label": folder.name, "id": f"{folder.name}/{path.name}"}


def _write(records: Iterable[dict], source: Path, dest: Path) -> None:
    dest.mkdir()
    for record in records:
        name = record["image"]["path"]
        (dest / name).write_bytes(record["image"]["bytes"])
        if not is_remote(source):  # an object's mtime is its upload time, not a copyable stat
            shutil.copystat(source / name, dest / name)  # same mtime: reruns compare equal


FORMAT = ShardFormat(
    "", _rows, _write, claims=_claims, modality=lambda path: "image", name="imagefolder"
)
