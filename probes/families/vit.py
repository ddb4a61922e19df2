"""Vision transformers (Hugging Face `ViTModel` folders): each layer's MLP is fc1, the
activation, then fc2, over the class token and the image's patch tokens.

The class token is dropped from the hooked activations, so positions are the patches in
row-major order, as for convolution maps.
"""

import torch
import torch.nn.functional as F
from torch import nn

from probes.families import ActivationFn, Family, Handle, register, rows


@register
class ViT(Family):
    model_type = "vit"
    modality = "image"

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.layers

    def hook_mlp(self, block: nn.Module, on_activation: ActivationFn) -> Handle:
        return block.mlp.fc2.register_forward_pre_hook(lambda _m, inp: on_activation(inp[0][:, 1:]))

    def hook_partial_mlp(
        self, block: nn.Module, index: torch.Tensor, on_activation: ActivationFn
    ) -> Handle:
        up, act = rows(block.mlp.fc1, index), block.mlp.activation_fn
        return block.mlp.register_forward_pre_hook(
            lambda _m, inp: on_activation(act(F.linear(inp[0][:, 1:], *up)))
        )

    def max_positions(self, config) -> int:
        return (config.image_size // config.patch_size) ** 2
