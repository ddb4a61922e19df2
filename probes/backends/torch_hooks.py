"""The torch backend: the model in PyTorch, neurons read by forward hooks, the forward stopped
inside the deepest probed layer (probes/capture.py). No export step; bf16 where the CPU
multiplies bf16 in hardware.

In fp32 text batches default to 2,048 tokens, not 8,192: on an AVX2-only EPYC the fp32
intermediates of an 8,192-token batch ([8192, 1536] floats, 50 MB, per MLP) fall out of cache
and the engine ran at 0.98x the one-document-at-a-time loop, 1.14x at 2,048 (2 threads,
benchmarks/RESULTS.md); bf16 ran fastest at 8,192 on AVX512-BF16 and AMX CPUs."""

from typing import TYPE_CHECKING

from probes.backends import (
    DEFAULT_TOKENS_PER_BATCH,
    Backend,
    Capture,
    Requests,
    Settings,
    register,
)
from probes.cpu import auto_dtype

if TYPE_CHECKING:
    from probes.models import LoadedModel

FP32_TOKENS_PER_BATCH = 2048


@register
class TorchBackend(Backend):
    name = "torch"
    dtypes = ("fp32", "bf16")

    @classmethod
    def settings(cls, dtype: str, modality: str) -> Settings:
        return {"name": cls.name, "dtype": auto_dtype() if dtype == "auto" else dtype}

    @classmethod
    def model_dtype(cls, settings: Settings) -> str:
        return settings["dtype"]

    @classmethod
    def tokens_per_batch(cls, settings: Settings, modality: str) -> int:
        fp32_text = settings["dtype"] == "fp32" and modality == "text"
        return FP32_TOKENS_PER_BATCH if fp32_text else DEFAULT_TOKENS_PER_BATCH

    @classmethod
    def open(cls, loaded: "LoadedModel", requests: Requests, settings: Settings) -> Capture:
        from probes.capture import ActivationCapture

        return ActivationCapture(loaded, requests)
