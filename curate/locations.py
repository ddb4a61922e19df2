"""The click type of a path option that also takes fsspec URLs (s3://bucket/corpus, gs://...)."""

from pathlib import Path

import click

from probes.storage import as_path


class Location(click.ParamType):
    """A local path (a `Path`) or an fsspec URL (a `UPath`), checked later by the stage that
    uses it."""

    name = "path or URL"

    def convert(self, value, param, ctx) -> Path:
        return as_path(value)


LOCATION = Location()
