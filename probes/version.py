"""The tool version recorded in every artifact this project writes."""

from importlib.metadata import PackageNotFoundError, version

try:
    TOOL_VERSION = version("rosetta-curate")
except PackageNotFoundError:  # a source tree that is not installed
    TOOL_VERSION = "0.0.0+source"
