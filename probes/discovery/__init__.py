"""Rosetta-neuron discovery: find anchor neurons whose activations another model reproduces.

`corpus` streams the documents, `align` pairs tokens across tokenizers, `stream` keeps exact
running statistics, `screen` finds candidate pairs on a sample and verifies only them, `match`
pairs neurons, `controls` tests the pairs, `selectivity` describes the neurons, and `run` drives
the passes and turns the result into a neuron set. Only
`curate discover`, `curate neurons top|atlas` and the benchmarks import this package.
"""

from probes.discovery.corpus import Corpus
from probes.discovery.run import Settings, aligned_batches, discover, null_rate, to_artifact
from probes.discovery.screen import ScreenSettings
from probes.discovery.stream import Moments

__all__ = [
    "Corpus",
    "Moments",
    "ScreenSettings",
    "Settings",
    "aligned_batches",
    "discover",
    "null_rate",
    "to_artifact",
]
