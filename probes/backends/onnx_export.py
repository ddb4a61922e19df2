"""The ONNX backend's heavy half: export (traced from the torch capture, cut at the deepest
probed layer, fused, optionally quantized), the export cache, and the ONNX Runtime session.
See probes/backends/onnx_runtime.py for the settings and the reasons."""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from probes.backends import Requests, Settings
from probes.capture import ActivationCapture
from probes.errors import CurateError
from probes.families import family
from probes.models import LoadedModel, cache_dir

EXPORT_VERSION = 1  # bump when the exported graph changes for the same inputs
OPSET = 17
MAX_GRAPH_BYTES = 2**31 - 2**26  # protobuf's 2 GB file limit, less room for the graph itself


class OnnxCapture:
    """An ONNX Runtime session over the exported graph; `capture` splits its one output back
    into layers."""

    def __init__(self, loaded: LoadedModel, requests: Requests, settings: Settings):
        import onnxruntime

        if next(loaded.model.parameters()).dtype != torch.float32:
            raise CurateError("backend 'onnx' exports an fp32 model: load it with load_for()")
        self.requests = dict(sorted(requests.items()))
        self.widths = _widths(loaded, self.requests)
        path = exported_model(loaded, self.requests, settings)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    def capture(self, **inputs: torch.Tensor) -> dict[int, torch.Tensor]:
        feed = {name: inputs[name].numpy() for name in self.input_names}
        (acts,) = self.session.run(None, feed)
        parts = torch.from_numpy(acts).split(self.widths, dim=-1)
        return dict(zip(self.requests, parts, strict=True))


def _widths(loaded: LoadedModel, requests: Requests) -> list[int]:
    f = family(loaded.model_type)
    full = f.layer_widths(loaded.model)
    return [full[layer] if idx is None else len(idx) for layer, idx in requests.items()]


class _Traced(torch.nn.Module):
    """The capture as a module: inputs in, the requested neurons of every layer concatenated."""

    def __init__(self, capture: ActivationCapture, input_names: list[str]):
        super().__init__()
        self.capture = capture
        self.model = capture.loaded.model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        layers = self.capture.run(**dict(zip(self.input_names, inputs, strict=True)))
        return torch.cat([layers[layer] for layer in self.capture.requests], dim=-1)


def exported_model(loaded: LoadedModel, requests: Requests, settings: Settings) -> Path:
    """The cached ONNX file for this model, these neurons and settings; exported if missing.

    A lock file keeps concurrent workers from exporting the same model twice.
    """
    target = cache_dir() / "onnx" / f"{_slug(loaded.name)}-{_key(loaded, requests, settings)}.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            prefix = f".export-{target.stem}-"
            for stale in target.parent.glob(f"{prefix}*"):  # left by a killed export of it
                shutil.rmtree(stale, ignore_errors=True)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=prefix) as tmp:
                built = _build(loaded, requests, settings, Path(tmp))
                os.replace(built, target)
    return target


def _key(loaded: LoadedModel, requests: Requests, settings: Settings) -> str:
    import onnx
    import onnxruntime
    import transformers

    inputs = {
        "model": loaded.content_hash,
        "requests": [[layer, idx] for layer, idx in requests.items()],
        "settings": settings,
        "versions": [EXPORT_VERSION, torch.__version__, transformers.__version__],
        "onnx": [onnx.__version__, OPSET, onnxruntime.__version__],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name or name)[:60]


def _build(loaded: LoadedModel, requests: Requests, settings: Settings, work: Path) -> Path:
    weight_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    if weight_bytes >= MAX_GRAPH_BYTES:
        raise CurateError(
            f"{loaded.name}: {weight_bytes / 1e9:.1f} GB of weights is past ONNX's 2 GB"
            " single-file limit; probe it with the torch backend (--backend torch, probe.backend)"
        )
    try:
        return _convert(loaded, requests, settings, work)
    except CurateError:
        raise
    except Exception as err:  # an operator the exporter or optimizer cannot take
        raise CurateError(
            f"{loaded.name}: the ONNX export failed ({type(err).__name__}: {err}); "
            "probe it with the torch backend (--backend torch, probe.backend)"
        ) from err


def _convert(loaded: LoadedModel, requests: Requests, settings: Settings, work: Path) -> Path:
    fusion = family(loaded.model_type).onnx_fusion if loaded.modality == "text" else None
    graph = work / "graph.onnx"
    with _attention("eager" if fusion else None, loaded.model):
        _export(loaded, requests, graph)
    if fusion:
        graph = _fuse(graph, fusion, loaded.model.config, work / "fused.onnx")
    _verify(graph, loaded, requests)
    if settings["dtype"] == "int8":
        graph = _quantize(graph, settings["weight_bits"], work / "int8.onnx")
    return graph


@contextlib.contextmanager
def _attention(implementation: str | None, model: torch.nn.Module) -> Iterator[None]:
    """Trace with `implementation`'s attention (the pattern the fusion recognises), then restore."""
    if implementation is None:
        yield
        return
    before = model.config._attn_implementation
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _example_inputs(loaded: LoadedModel, lengths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Right-padded inputs of `lengths` tokens per row (images: one per entry), drawn from a
    fixed seed. Tracing records the branches its input takes, so the trace's batch must hold
    padding: one without would record a graph that ignores the mask."""
    rng = torch.Generator().manual_seed(len(lengths))
    if loaded.modality == "image":
        side = loaded.image.size
        return {"pixel_values": torch.randn(len(lengths), 3, side, side, generator=rng)}
    shape = (len(lengths), max(lengths))
    ids = torch.randint(5, min(1000, loaded.tokenizer.vocab_size), shape, generator=rng)
    mask = (torch.arange(shape[1]) < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids, "attention_mask": mask}


def _verify(graph: Path, loaded: LoadedModel, requests: Requests) -> None:
    """Refuse an export that disagrees with the torch capture on another batch shape (a shape or
    branch the trace froze would show here)."""
    import onnxruntime

    inputs = _example_inputs(loaded, (37, 21, 5))
    with torch.inference_mode():
        layers = ActivationCapture(loaded, requests).capture(**inputs)
    want = torch.cat([layers[layer] for layer in sorted(requests)], dim=-1).float()
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {name: value.numpy() for name, value in inputs.items()})
    real = inputs.get("attention_mask", torch.ones(want.shape[:2])).bool()
    diff = float((torch.from_numpy(got) - want)[real].abs().max())
    scale = 1.0 + float(want[real].abs().max())
    if not diff <= 1e-3 * scale:
        raise CurateError(
            f"{loaded.name}: the ONNX export disagrees with torch on another batch shape "
            f"(max difference {diff:.3g}); probe it with the torch backend"
        )


def _export(loaded: LoadedModel, requests: Requests, path: Path) -> None:
    example = _example_inputs(loaded, (16, 10))
    names = list(example)
    axes = {name: {0: "batch"} for name in names}
    if loaded.modality == "text":
        axes = {name: {0: "batch", 1: "positions"} for name in names}
    module = _Traced(ActivationCapture(loaded, requests), names).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings: the padded example fixes the branches
        torch.onnx.export(
            module,
            tuple(example.values()),
            str(path),
            input_names=names,
            output_names=["acts"],
            dynamic_axes={**axes, "acts": {0: "batch", 1: "positions"}},
            opset_version=OPSET,
            dynamo=False,
        )


def _fuse(graph: Path, fusion: str, config, out: Path) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(
        str(graph),
        model_type=fusion,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=0,
    )
    fused.save_model_to_file(str(out))
    return out


def _quantize(graph: Path, weight_bits: int, out: Path) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(graph),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=weight_bits == 7,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return out
