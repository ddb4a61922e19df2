"""rosetta-curate: CLI and orchestration."""

from probes.version import TOOL_VERSION as __version__

__all__ = ["__version__"]
