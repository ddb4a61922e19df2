"""The torch backend: the model in PyTorch, neurons read by forward hooks, the forward stopped
inside the deepest probed layer (probes/capture.py). No export step; bf16 where the CPU
multiplies bf16 in hardware."""

from typing import TYPE_CHECKING

from probes.backends import Backend, Capture, Requests, Settings, register
from probes.cpu import auto_dtype

if TYPE_CHECKING:
    from probes.models import LoadedModel


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
    def open(cls, loaded: "LoadedModel", requests: Requests, settings: Settings) -> Capture:
        from probes.capture import ActivationCapture

        return ActivationCapture(loaded, requests)
