"""The ONNX Runtime backend for CPUs: the model exported once, cut at the deepest probed layer
and returning only the requested neurons, then run by ONNX Runtime (fp32, or int8 weights by
dynamic quantization).

The export traces the torch backend's own capture (probes/capture.py), so the graph computes
exactly what the torch backend computes and nothing after the deepest probed neurons. Encoder
families that ONNX Runtime's transformer optimizer knows (`Family.onnx_fusion`) are exported
with eager attention and fused (one Attention kernel per layer, fused LayerNorm and GELU).
int8 quantizes the weights of every matrix product per output channel (activations are
quantized per batch at run time); on CPUs without VNNI it keeps weights to 7 bits, so that
u8 x s8 products cannot saturate. Exports are cached (probes/backends/onnx_export.py), keyed by
the model's weights, the requested neurons, the settings and the library versions.
"""

from typing import TYPE_CHECKING

from probes.backends import Backend, Capture, Requests, Settings, register
from probes.cpu import cpu_has_int8_dot
from probes.errors import CurateError

if TYPE_CHECKING:
    from probes.models import LoadedModel


@register
class OnnxBackend(Backend):
    name = "onnx"
    dtypes = ("fp32", "int8")

    @classmethod
    def settings(cls, dtype: str, modality: str) -> Settings:
        if dtype == "int8" and modality != "text":
            raise CurateError("backend 'onnx' runs int8 for text models only; use dtype fp32")
        resolved = dtype if dtype != "auto" else ("int8" if modality == "text" else "fp32")
        if resolved == "fp32":
            return {"name": cls.name, "dtype": "fp32"}
        return {"name": cls.name, "dtype": "int8", "weight_bits": 8 if cpu_has_int8_dot() else 7}

    @classmethod
    def model_dtype(cls, settings: Settings) -> str:
        return "fp32"  # the export traces fp32; int8 is made from the fp32 graph

    @classmethod
    def open(cls, loaded: "LoadedModel", requests: Requests, settings: Settings) -> Capture:
        from probes.backends.onnx_export import OnnxCapture

        return OnnxCapture(loaded, requests, settings)
