"""User-facing errors: each prints as one line and makes the CLI exit with code 2."""


class CurateError(Exception):
    """A problem with the user's input (not a bug): reported in one line, exit code 2."""


class ShardError(CurateError):
    """Bad data in one shard, located by file and 1-based line (or parquet row)."""

    def __init__(self, path: str, line: int | None, reason: str):
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
