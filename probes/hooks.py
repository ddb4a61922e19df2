"""Named hook points for MLP neurons, one naming scheme across model families.

A neuron is the post-nonlinearity input of a layer's MLP down-projection, so that
`blocks.{layer}.mlp.hook_post[..., index]` means the same thing in BERT, MPNet and Llama.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from probes.errors import CurateError

HOOK_POST = "blocks.{layer}.mlp.hook_post"


def hook_name(layer: int) -> str:
    return HOOK_POST.format(layer=layer)


def _layers(model: nn.Module, family: str) -> nn.ModuleList:
    if family in ("bert", "mpnet"):
        return model.encoder.layer
    if family == "llama":
        return model.layers
    raise CurateError(f"no MLP hook points known for model family {family!r}")


def n_layers(model: nn.Module, family: str) -> int:
    return len(_layers(model, family))


def mlp_width(model: nn.Module, family: str) -> int:
    return model.config.intermediate_size


ActivationFn = Callable[[torch.Tensor], None]


def register_mlp_hook(
    model: nn.Module, family: str, layer: int, on_activation: ActivationFn
) -> torch.utils.hooks.RemovableHandle:
    """Call `on_activation(acts[batch, tokens, mlp_width])` when `layer`'s MLP activation exists.

    BERT/MPNet: the output of `intermediate` (dense + GELU) feeds `output.dense`.
    Llama: the input of `mlp.down_proj` is act(gate) * up.
    """
    block = _layers(model, family)[layer]
    if family in ("bert", "mpnet"):
        return block.intermediate.register_forward_hook(lambda _m, _i, out: on_activation(out))
    return block.mlp.down_proj.register_forward_pre_hook(lambda _m, inp: on_activation(inp[0]))


def register_partial_mlp_hook(
    model: nn.Module, family: str, layer: int, index: torch.Tensor, on_activation: ActivationFn
) -> torch.utils.hooks.RemovableHandle:
    """Like `register_mlp_hook`, but computes only the neurons in `index`, from the MLP input.

    For the deepest layer a probe needs, the rest of the up-projection is wasted work.
    """
    block = _layers(model, family)[layer]
    if family in ("bert", "mpnet"):
        up = _rows(block.intermediate.dense, index)
        act = block.intermediate.intermediate_act_fn
        return block.intermediate.register_forward_pre_hook(
            lambda _m, inp: on_activation(act(F.linear(inp[0], *up)))
        )
    gate, up = _rows(block.mlp.gate_proj, index), _rows(block.mlp.up_proj, index)
    act = block.mlp.act_fn
    return block.mlp.register_forward_pre_hook(
        lambda _m, inp: on_activation(act(F.linear(inp[0], *gate)) * F.linear(inp[0], *up))
    )


def _rows(linear: nn.Linear, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    bias = None if linear.bias is None else linear.bias.index_select(0, index)
    return linear.weight.index_select(0, index), bias
