"""Model families: where each architecture keeps its MLP neurons, one module per family.

A family knows its blocks, how to hook the post-nonlinearity input of a block's MLP
down-projection (the neuron `blocks.{layer}.mlp.hook_post[index]` in every family), how to
compute only some neurons of the deepest block, its attention kernel and its usable window. A
model is matched to its family by `config.model_type`. Adding a family is one module here plus
its test (see README, developer notes).
"""

from collections.abc import Callable
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

    def max_positions(self, config) -> int:
        return config.max_position_embeddings


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


from probes.families import bert, llama, mpnet  # noqa: E402, F401  (each registers itself)
