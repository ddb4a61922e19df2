"""Outputs: whole files or none (a temporary name, then a rename), and output folders that are
checked before any work and not left behind empty when the work fails."""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from probes.errors import CurateError


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` if the block succeeds.

    The block may make a file or a folder there (a folder's rename is as atomic as a file's).
    Temporary outputs that a killed earlier run left for the same target are removed first.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        _remove(stale)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_atomic(target: Path, data: bytes) -> None:
    """Write `data` to `target` whole or not at all."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def check_creatable(path: Path, option: str, file: bool = False) -> None:
    """Refuse, in one line naming the path, an output that cannot be created there: a file
    stands where a folder must be (at a parent, or at the output folder itself), or the
    nearest existing folder is not writable."""
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
        folder = path.parent if file else path
        missing += [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        for folder in sorted(set(missing), key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
