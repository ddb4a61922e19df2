"""EfficientNet-Lite (convolutional, ImageNet-trained): a block's neurons are its expanded
channels after the depthwise convolution and ReLU6, the input of its 1x1 `_project_conv`.

That is the same point as a transformer's `mlp.hook_post`: the post-nonlinearity input of the
block's down-projection. A channel's activation is a spatial map; the hook hands it on as
[batch, positions (row-major over the map), channels]. Blocks widen with depth, so the
layer widths differ (`layer_widths`).
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from probes.errors import CurateError
from probes.families import ActivationFn, Family, Handle, register


class EfficientNetLite(nn.Module):
    """The package's network behind a `pixel_values` forward, as Hugging Face models take it."""

    def __init__(self, variant: str):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet  # the optional vision extra

        self.variant = variant
        self.net = EfficientNet.from_name(variant)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)


def _positions(maps: torch.Tensor) -> torch.Tensor:
    """[batch, channels, h, w] -> [batch, h * w, channels]."""
    return maps.flatten(2).transpose(1, 2)


@register
class EfficientNetFamily(Family):
    model_type = "efficientnet-lite"
    modality = "image"

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.net._blocks

    def hook_mlp(self, block: nn.Module, on_activation: ActivationFn) -> Handle:
        return block._project_conv.register_forward_pre_hook(
            lambda _m, inp: on_activation(_positions(inp[0]))
        )

    def hook_partial_mlp(
        self, block: nn.Module, index: torch.Tensor, on_activation: ActivationFn
    ) -> Handle:
        """The channels in `index`, selected after the whole block: the expansion is a small
        share of the work, and stopping after the deepest block already skips the rest."""
        return self.hook_mlp(block, lambda acts: on_activation(acts.index_select(-1, index)))

    def layer_widths(self, model: nn.Module) -> list[int]:
        return [block._project_conv.in_channels for block in self.blocks(model)]

    def mlp_width(self, model: nn.Module) -> int:
        """The widest layer's width (layers differ: see `layer_widths`)."""
        return max(self.layer_widths(model))

    def fresh(self, model: nn.Module) -> nn.Module:
        return EfficientNetLite(model.variant)

    def load(self, path: Path, dtype: torch.dtype) -> nn.Module:
        """The variant named in config.json, with every weight from model.safetensors."""
        variant = json.loads((path / "config.json").read_text())["variant"]
        model = EfficientNetLite(variant)
        state = load_file(path / "model.safetensors")
        try:
            model.net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CurateError(f"{path}: weights do not fit {variant} ({err})") from None
        return model.to(dtype)
