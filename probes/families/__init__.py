"""Model families: where each architecture keeps its MLP neurons, one module per family.

A family knows its blocks, how to hook the post-nonlinearity input of a block's MLP
down-projection (the neuron `blocks.{layer}.mlp.hook_post[index]` in every family), how to
compute only some neurons of the deepest block, its attention kernel and its usable window. A
model is matched to its family by `config.model_type`. Vision families (`modality = "image"`)
hook the same point: the expanded channels before a convolution block's 1x1 projection, or a
ViT's MLP neurons; every hook hands on [batch, positions, width] (text tokens, or the
row-major spatial positions / patch tokens of an image). Adding a family is one module here
plus its test (see README, developer notes).
"""

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from probes.errors import CurateError

ActivationFn = Callable[[torch.Tensor], None]
Handle = torch.utils.hooks.RemovableHandle


class Family:
    model_type: ClassVar[str]
    attention: ClassVar[str] = "sdpa"  # transformers' attn_implementation for this family
    decoder: ClassVar[bool] = False  # causal attention: it can continue pre-training causally
    modality: ClassVar[str] = "text"  # what its documents are: "text" or "image"
    # ONNX Runtime's transformer-optimizer model type whose fusions (attention, LayerNorm, GELU)
    # match this family's eager graph; None: run the exported graph unfused
    onnx_fusion: ClassVar[str | None] = None

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        raise NotImplementedError

    def hook_mlp(self, block: nn.Module, on_activation: ActivationFn) -> Handle:
        """Call `on_activation(acts[batch, tokens, width])` with the block's MLP activation."""
        raise NotImplementedError

    def hook_partial_mlp(
        self, block: nn.Module, index: torch.Tensor, on_activation: ActivationFn
    ) -> Handle:
        """Like `hook_mlp`, computing only the neurons in `index` from the MLP's input."""
        raise NotImplementedError

    def mlp_width(self, model: nn.Module) -> int:
        return model.config.intermediate_size

    def layer_widths(self, model: nn.Module) -> list[int]:
        """Neurons per layer (convolution families widen block by block)."""
        return [self.mlp_width(model)] * len(self.blocks(model))

    def max_positions(self, config) -> int:
        return config.max_position_embeddings

    def fresh(self, model: nn.Module) -> nn.Module:
        """A randomly initialised model of `model`'s architecture (the random-init null)."""
        from transformers import AutoModel

        return AutoModel.from_config(model.config, attn_implementation=self.attention)

    def load(self, path: Path, dtype: torch.dtype) -> nn.Module:
        """The base model (no task head) of a Hugging Face folder, every weight present."""
        from transformers import AutoModel

        model, info = AutoModel.from_pretrained(
            path,
            dtype=dtype,
            attn_implementation=self.attention,
            local_files_only=True,
            use_safetensors=True,
            output_loading_info=True,
        )
        # The unused pooler may be absent from MLM checkpoints; anything else would be
        # randomly initialised and silently wrong.
        missing = sorted(k for k in info["missing_keys"] if not k.startswith("pooler."))
        if missing:
            raise CurateError(
                f"{path}: weights missing for {len(missing)} tensors, e.g. {missing[0]}"
            )
        return model


FAMILIES: dict[str, Family] = {}


def register(cls: type[Family]) -> type[Family]:
    FAMILIES[cls.model_type] = cls()
    return cls


def family(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise CurateError(f"model type {model_type!r} is not one of {', '.join(sorted(FAMILIES))}")
    return FAMILIES[model_type]


def rows(linear: nn.Linear, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight rows (and bias entries) of `linear` for the output units in `index`."""
    bias = None if linear.bias is None else linear.bias.index_select(0, index)
    return linear.weight.index_select(0, index), bias


from probes.families import bert, efficientnet, llama, mpnet, vit  # noqa: E402, F401  (each registers itself)
