"""PNG figures without a display: a matplotlib Figure (no pyplot state), saved whole.

The PNG carries no software or date metadata, so a rerun on the same numbers writes the same
bytes.
"""

import io
from pathlib import Path

from probes.atomic import write_atomic


def new_figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def save_png(fig, path: Path, dpi: int = 80) -> None:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    write_atomic(path, buffer.getvalue())
