"""Llama decoders (SmolLM2 among them): the MLP is act(gate) * up, then `down_proj`."""

import torch
import torch.nn.functional as F
from torch import nn

from probes.families import ActivationFn, Family, Handle, register, rows


@register
class Llama(Family):
    model_type = "llama"
    decoder = True

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.layers

    def hook_mlp(self, block: nn.Module, on_activation: ActivationFn) -> Handle:
        return block.mlp.down_proj.register_forward_pre_hook(lambda _m, inp: on_activation(inp[0]))

    def hook_partial_mlp(
        self, block: nn.Module, index: torch.Tensor, on_activation: ActivationFn
    ) -> Handle:
        gate, up = rows(block.mlp.gate_proj, index), rows(block.mlp.up_proj, index)
        act = block.mlp.act_fn
        return block.mlp.register_forward_pre_hook(
            lambda _m, inp: on_activation(act(F.linear(inp[0], *gate)) * F.linear(inp[0], *up))
        )
