"""Named hook points for MLP neurons, one naming scheme across model families.

A neuron is the post-nonlinearity input of a layer's MLP down-projection, so that
`blocks.{layer}.mlp.hook_post[..., index]` means the same thing in every family; where that
activation lives in each architecture is the family's business (probes/families/).
"""

import torch
from torch import nn

from probes.families import ActivationFn, Handle, family

HOOK_POST = "blocks.{layer}.mlp.hook_post"


def hook_name(layer: int) -> str:
    return HOOK_POST.format(layer=layer)


def n_layers(model: nn.Module, model_type: str) -> int:
    return len(family(model_type).blocks(model))


def mlp_width(model: nn.Module, model_type: str) -> int:
    return family(model_type).mlp_width(model)


def layer_widths(model: nn.Module, model_type: str) -> list[int]:
    """Neurons per layer (the same in every transformer layer; widening in convolution nets)."""
    return family(model_type).layer_widths(model)


def register_mlp_hook(
    model: nn.Module, model_type: str, layer: int, on_activation: ActivationFn
) -> Handle:
    """Call `on_activation(acts[batch, tokens, mlp_width])` when `layer`'s MLP activation exists."""
    f = family(model_type)
    return f.hook_mlp(f.blocks(model)[layer], on_activation)


def register_partial_mlp_hook(
    model: nn.Module, model_type: str, layer: int, index: torch.Tensor, on_activation: ActivationFn
) -> Handle:
    """Like `register_mlp_hook`, but computes only the neurons in `index`, from the MLP input.

    For the deepest layer a probe needs, the rest of the up-projection is wasted work.
    """
    f = family(model_type)
    return f.hook_partial_mlp(f.blocks(model)[layer], index, on_activation)
