"""Write the kept rows of every shard in the shard's own format and relative path.

Rows are copied as they are, by the shard's format (`probes.formats`: JSON lines, tar members
and ImageFolder images byte for byte, parquet rows with the shard's schema), so the same
selection always gives the same bytes. Each shard (a file, or an ImageFolder class folder) is
written under a temporary name and renamed (or, to an object store, uploaded) when complete; a
state file written first names the selection (a digest of its rows), so a rerun after a kill
keeps the finished shards of the same selection and refuses to mix selections in one folder.
"""

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from probes.atomic import atomic_path, complete, write_atomic
from probes.errors import CurateError, ShardError
from probes.formats import RawRow, format_of
from probes.shards import iter_raw_rows

STATE_FILE = ".curate-selection.json"


def selection_digest(rows_by_shard: dict[str, np.ndarray], extra: dict) -> str:
    """A hash of what will be written: the rows per shard and the settings that shape bytes."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for rel in sorted(rows_by_shard):
        digest.update(rel.encode() + b"\0" + np.asarray(rows_by_shard[rel], np.int64).tobytes())
    return digest.hexdigest()


def prepare_output(out_dir: Path, digest: str, what: str) -> None:
    """Claim `out_dir` for a selection: new or empty, or holding an unfinished run of the same
    selection."""
    state = out_dir / STATE_FILE
    if out_dir.exists() and any(out_dir.iterdir()):
        if not state.is_file():
            raise CurateError(
                f"{out_dir} is not empty and holds no curate output; pick a new {what}"
            )
        if json.loads(state.read_text())["selection"] != digest:
            raise CurateError(
                f"{out_dir} holds the output of another selection; remove it or pick a new {what}"
            )
        return
    write_atomic(state, json.dumps({"selection": digest}).encode())


def write_rows(root: Path, rows_by_shard: dict[str, np.ndarray], out_dir: Path) -> None:
    """Write each shard's listed rows (sorted physical rows) to out_dir/<same relative path>.

    Shards with no rows are not written; finished shards of an earlier run of the same
    selection are kept, not rewritten.
    """
    for rel, rows in sorted(rows_by_shard.items()):
        target = out_dir / rel
        if not len(rows) or complete(target):
            continue
        with atomic_path(target) as tmp:
            _write_shard(root / rel, np.asarray(rows, np.int64), tmp)


def _write_shard(source: Path, rows: np.ndarray, tmp: Path) -> None:
    format_of(source).write(_selected(source, rows), source, tmp)


def _selected(source: Path, rows: np.ndarray) -> Iterator[RawRow]:
    """The raw rows listed in `rows`; damage past the last listed row is not an error."""
    wanted = iter(rows.tolist())
    target = next(wanted, None)
    try:
        for row, raw in iter_raw_rows(source):
            if row == target:
                yield raw
                target = next(wanted, None)
                if target is None:
                    return
    except ShardError:
        if target is not None:
            raise
    if target is not None:
        raise CurateError(f"{source}: row {target + 1} is gone; the shard changed since scoring")
