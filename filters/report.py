"""report.png: the picture of a selection (selection-key histogram with the cut, tokens kept per
source). The streaming path fills the histogram chunk by chunk, so both paths draw the same
picture for the same selection; no timestamps, so the same selection gives the same bytes.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probes.figures import new_figure, save_png

REPORT = "report.png"
BINS = 50


@dataclass
class KeyHistogram:
    """Selection keys of the usable documents, all and kept, in 50 equal bins (report.png).

    The streaming path fills the counts chunk by chunk from the keys' range, so both paths draw
    the same picture for the same selection.
    """

    edges: np.ndarray
    usable: np.ndarray  # documents per bin
    kept: np.ndarray
    threshold: float | None  # the lowest kept key

    @classmethod
    def empty(cls, lowest: float, highest: float) -> "KeyHistogram":
        edges = np.histogram_bin_edges(np.array([lowest, highest]), bins=BINS)
        return cls(edges, np.zeros(BINS, np.int64), np.zeros(BINS, np.int64), None)

    def add(self, usable_keys: np.ndarray, kept_keys: np.ndarray) -> None:
        self.usable += np.histogram(usable_keys, self.edges)[0]
        self.kept += np.histogram(kept_keys, self.edges)[0]

    @classmethod
    def of(cls, key: np.ndarray, keep: np.ndarray) -> "KeyHistogram":
        """From every row's key (NaN: unusable) and keep flag; the cut is the lowest kept key."""
        usable = key[~np.isnan(key)]
        hist = cls.empty(usable.min(), usable.max()) if len(usable) else cls.empty(0.0, 1.0)
        hist.add(usable, key[keep])
        hist.threshold = float(key[keep].min()) if keep.any() else None
        return hist


def write_report(out_dir: Path, hist: KeyHistogram, manifest: dict) -> None:
    """Two panels: selection-key histogram (all vs kept) with the cut, tokens per source."""
    fig = new_figure(11, 4.2)
    left, right = fig.subplots(1, 2)
    width = np.diff(hist.edges)
    left.bar(hist.edges[:-1], hist.usable, width, align="edge", color="0.75", label="all documents")
    left.bar(hist.edges[:-1], hist.kept, width, align="edge", color="tab:blue", label="kept")
    if hist.threshold is not None:
        left.axvline(hist.threshold, color="tab:red", linestyle="--", label="cut")
    left.set_xlabel("selection key (score; plus Gumbel noise when sampling)")
    left.set_ylabel("documents")
    left.legend()
    by_source = manifest["tokens_by_source"]
    names = list(by_source)
    y = np.arange(len(names))
    right.barh(y, [by_source[n]["input"] for n in names], color="0.75", label="input")
    right.barh(y, [by_source[n]["kept"] for n in names], color="tab:blue", label="kept")
    right.set_yticks(y, names)
    right.set_xlabel("tokens")
    right.legend()
    fig.suptitle(
        f"kept {manifest['kept_tokens']:,} of {manifest['input_tokens']:,} tokens "
        f"(budget {manifest['budget_tokens']:,}) in {manifest['kept_docs']:,} documents"
    )
    save_png(fig, out_dir / REPORT, dpi=90)
