"""Where files live: local paths, or fsspec URLs (s3://, gs://, ...) as universal-pathlib paths.

Local paths stay `pathlib.Path`, so nothing changes for them. A URL becomes a `UPath`, which has
the same methods (open, exists, rglob, relative_to, ...) backed by the URL's fsspec filesystem;
credentials and endpoint come from the store's standard environment (`AWS_*`, including
`AWS_ENDPOINT_URL`, for s3://). Object stores have no rename: a file is uploaded whole from a
local temporary (an object appears complete or not at all) and a folder gets a completion marker
after its files (`probes.atomic`).
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from probes.errors import CurateError

COMPLETE = ".curate-complete"  # the last object of a folder written to an object store
_LOCAL = {"", "file", "local"}


def as_path(location: str | os.PathLike) -> Path:
    """A `Path` for a local path or file:// URL, a `UPath` for any other fsspec URL; a path
    object (local or a `UPath`) is returned as it is."""
    if isinstance(location, Path) or hasattr(location, "fs"):
        return location
    if not isinstance(location, str):
        return Path(location)
    protocol, sep, rest = location.partition("://")
    if not sep:
        return Path(location)
    if protocol in _LOCAL:
        return Path(rest)
    from upath import UPath

    return UPath(location)


def is_remote(path: Path) -> bool:
    """Whether `path` is on a store reached through fsspec rather than the local filesystem."""
    return getattr(path, "protocol", "") not in _LOCAL


def resolved(path: Path, folder: Path | None = None) -> str:
    """An absolute name of `path` (a relative one taken from `folder`, else the working
    directory): what keys a cache or names a file in a recipe. A URL is already absolute."""
    if is_remote(path):
        return str(path)
    return str(((folder or Path.cwd()) / path).resolve())


@contextmanager
def opened(path: Path) -> Iterator[Path | BinaryIO]:
    """What pyarrow reads `path` from: the local path itself (pyarrow's own file reader), or an
    fsspec file object of a remote one, closed after the block."""
    if not is_remote(path):
        yield path
        return
    with path.open("rb") as f:
        yield f


def check_store(path: Path, option: str) -> None:
    """Refuse, in one line, a remote location whose bucket is missing or unreachable with the
    credentials of the environment; fsspec's own `exists` answers False to both."""
    bucket = path.path.split("/", 1)[0]
    store, where = f"{path.protocol}://{bucket}", f"{option} {path}".strip()
    try:
        path.fs.info(bucket)
    except PermissionError as e:
        raise CurateError(
            f"{where}: access to {store} denied ({_reason(e)}); check the credentials in the "
            "environment (AWS_* for s3://)"
        ) from None
    except FileNotFoundError:
        raise CurateError(f"{where}: bucket {store} does not exist") from None
    except Exception as e:  # an unreachable endpoint: botocore's errors are no OSError
        raise CurateError(f"{where}: {store} unreachable ({_reason(e)})") from None


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__
