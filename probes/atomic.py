"""Outputs: whole files or none (a temporary name, then a rename; on an object store, an upload
from a local temporary), and output folders that are checked before any work and not left
behind empty when the work fails."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from probes.errors import CurateError
from probes.storage import COMPLETE, check_store, is_remote


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path for `target`; if the block succeeds, rename it over `target`
    (locally) or upload it (to an object store).

    The block may make a file or a folder there (a folder's rename is as atomic as a file's).
    Temporary outputs that a killed earlier run left for the same target are removed first.
    For a remote `target` the temporary is local and uploaded when the block succeeds: a file
    as one object, a folder file by file and then its completion marker (`complete`).
    """
    if is_remote(target):
        with tempfile.TemporaryDirectory(prefix="curate-upload-") as staging:
            tmp = Path(staging) / target.name
            yield tmp
            _upload(tmp, target)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        _remove(stale)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        _remove(tmp)


def _upload(local: Path, target: Path) -> None:
    if not local.is_dir():
        target.fs.put_file(str(local), target.path)
        return
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        target.fs.put_file(str(file), f"{target.path}/{file.relative_to(local).as_posix()}")
    target.fs.pipe_file(f"{target.path}/{COMPLETE}", b"")


def complete(path: Path) -> bool:
    """Whether an output written by `atomic_path` is there whole: it exists (a remote folder:
    its completion marker does)."""
    if not is_remote(path):
        return path.exists()
    path.fs.invalidate_cache(path.path)  # another process may have written it since a listing
    if path.is_dir():
        return (path / COMPLETE).exists()
    return path.exists()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_atomic(target: Path, data: bytes) -> None:
    """Write `data` to `target` whole or not at all; a file that already holds `data` is left
    untouched, so a rerun rewrites nothing."""
    if target.is_file() and target.read_bytes() == data:
        return
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def check_creatable(path: Path, option: str, file: bool = False) -> None:
    """Refuse, in one line naming the path, an output that cannot be created there: a file
    stands where a folder must be (at a parent, or at the output folder itself), or the
    nearest existing folder is not writable. A remote output's bucket must exist and accept
    the environment's credentials."""
    if is_remote(path):
        check_store(path, option)
        return
    folders = (path.parent, *path.parent.parents) if file else (path, *path.parents)
    for parent in folders:
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise CurateError(f"{option} {path}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CurateError(f"{option} {path}: {parent} is not writable")
        return


@contextmanager
def output_folders(*outputs: tuple[Path | None, str], file: bool = False) -> Iterator[None]:
    """Check every (output, option) before the work (outputs are folders, or files with
    `file`); if the work fails, remove the folders it created that are still empty, so a refused
    run leaves nothing behind."""
    missing = []
    for path, option in outputs:
        if path is None:
            continue
        check_creatable(path, option, file)
        if is_remote(path):
            continue  # an object store has no folders to leave behind
        folder = path.parent if file else path
        missing += [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        for folder in sorted(set(missing), key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
