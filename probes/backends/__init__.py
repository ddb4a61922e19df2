"""Activation backends: what runs the model under the probe engine, one module per backend.

A backend turns one batch of model inputs into the requested neurons' activations per layer
(`capture(**inputs) -> {layer: [batch, positions, n_requested]}`), so batching, aggregation and
side files stay the engine's whatever runs the model. A backend's *settings* (its name, the
precision it resolved `auto` to on this machine, and anything else that changes its numbers)
are what a side file records: a side file from another backend or precision is stale. Adding a
backend is one module here that registers its class (see `Backend`).
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from probes.errors import CurateError

if TYPE_CHECKING:  # the registry itself loads no torch: the CLI lists backends without it
    import torch

    from probes.models import LoadedModel

DEFAULT_TOKENS_PER_BATCH = 8192  # padded tokens per batch, unless a backend knows better
Requests = Mapping[int, list[int] | None]  # layer -> neuron indices (None = the whole layer)
Settings = dict  # {"name": backend, "dtype": resolved precision, ...}: JSON, stored in side files


class Capture(Protocol):
    """What the engine runs: the requested neurons of one batch, per layer."""

    requests: dict[int, list[int] | None]  # sorted by layer

    def capture(self, **inputs: "torch.Tensor") -> dict[int, "torch.Tensor"]: ...


class Backend:
    """One way to run a model: `settings` says how (and is enough to rebuild it), `open`
    returns the capture that runs it. A backend class imports its heavy libraries only in
    `open`."""

    name: ClassVar[str]
    dtypes: ClassVar[tuple[str, ...]]  # the precisions it can run, besides "auto"

    @classmethod
    def settings(cls, dtype: str, modality: str) -> Settings:
        """The settings a run asking for `dtype` gets on this machine (`auto` resolved)."""
        raise NotImplementedError

    @classmethod
    def model_dtype(cls, settings: Settings) -> str:
        """The precision (fp32, bf16) to load the torch model in for these settings."""
        raise NotImplementedError

    @classmethod
    def tokens_per_batch(cls, settings: Settings, modality: str) -> int:
        """Padded tokens per batch when the caller names none."""
        return DEFAULT_TOKENS_PER_BATCH

    @classmethod
    def open(cls, loaded: "LoadedModel", requests: Requests, settings: Settings) -> Capture:
        raise NotImplementedError


BACKENDS: dict[str, type[Backend]] = {}
DEFAULT_BACKEND = "torch"


def register(cls: type[Backend]) -> type[Backend]:
    BACKENDS[cls.name] = cls
    return cls


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise CurateError(f"backend {name!r} is not one of {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]


def backend_settings(name: str = DEFAULT_BACKEND, dtype: str = "auto", modality: str = "text"):
    """Validated, resolved settings for backend `name` at precision `dtype`."""
    cls = backend_class(name)
    if dtype != "auto" and dtype not in cls.dtypes:
        allowed = ", ".join(("auto", *cls.dtypes))
        raise CurateError(f"backend {name!r} runs dtype {allowed}, not {dtype!r}")
    return cls.settings(dtype, modality)


def load_for(settings: Settings, model: str) -> "LoadedModel":
    """Load `model` in the dtype the backend of `settings` needs."""
    from probes.cpu import pick_dtype
    from probes.models import load_model

    dtype = backend_class(settings["name"]).model_dtype(settings)
    return load_model(model, dtype=pick_dtype(dtype))


def tokens_per_batch(settings: Settings, modality: str) -> int:
    """The batch size (padded tokens) that `settings`' backend runs best at by default."""
    return backend_class(settings["name"]).tokens_per_batch(settings, modality)


def open_backend(settings: Settings, loaded: "LoadedModel", requests: Requests) -> Capture:
    """The capture of `settings`' backend, ready to read `requests` from `loaded`."""
    return backend_class(settings["name"]).open(loaded, requests, settings)


def torch_settings(loaded: "LoadedModel") -> Settings:
    """The torch backend's settings for a model already loaded (its dtype as loaded)."""
    import torch

    bf16 = next(loaded.model.parameters()).dtype == torch.bfloat16
    return {"name": "torch", "dtype": "bf16" if bf16 else "fp32"}


def rank_agreement(reference: np.ndarray, other: np.ndarray, top: int = 10) -> tuple[float, int]:
    """Spearman rank correlation of two score vectors (NaN rows dropped; ties share their mean
    rank) and how many of the reference's top-`top` documents the other also ranks top-`top`:
    the backend contract."""
    ok = ~(np.isnan(reference) | np.isnan(other))
    a, b = reference[ok], other[ok]
    corr = float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])
    shared = len(
        set(np.argsort(-a, kind="stable")[:top]) & set(np.argsort(-b, kind="stable")[:top])
    )
    return corr, shared


def _ranks(values: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return (upper - (counts - 1) / 2.0)[inverse]


from probes.backends import onnx_runtime, torch_hooks, vllm_engine  # noqa: E402, F401  (each registers)

DTYPE_CHOICES = ["auto", *sorted({d for cls in BACKENDS.values() for d in cls.dtypes})]
TORCH_DTYPE_CHOICES = ["auto", *BACKENDS["torch"].dtypes]  # where only torch runs the model
