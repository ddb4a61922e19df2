"""BERT encoders (MiniLM among them): the MLP is `intermediate` (dense + GELU) then `output`."""

import torch
import torch.nn.functional as F
from torch import nn

from probes.families import ActivationFn, Family, Handle, register, rows


@register
class Bert(Family):
    model_type = "bert"
    onnx_fusion = "bert"

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.encoder.layer

    def hook_mlp(self, block: nn.Module, on_activation: ActivationFn) -> Handle:
        return block.intermediate.register_forward_hook(lambda _m, _i, out: on_activation(out))

    def hook_partial_mlp(
        self, block: nn.Module, index: torch.Tensor, on_activation: ActivationFn
    ) -> Handle:
        up = rows(block.intermediate.dense, index)
        act = block.intermediate.intermediate_act_fn
        return block.intermediate.register_forward_pre_hook(
            lambda _m, inp: on_activation(act(F.linear(inp[0], *up)))
        )
