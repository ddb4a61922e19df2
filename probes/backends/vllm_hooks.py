"""Hooks that run inside vLLM's worker and keep the requested MLP neurons of every forward pass.

A module of its own (torch only), so vLLM can send `install` and `collect` to a worker in
another process by reference (`LLM.apply_model`). Each forward pass records its flattened
token ids and positions (the model's own inputs) and, per requested layer, the input of the
layer's down projection (act(gate) * up, the torch backend's `mlp.hook_post`) at the requested
neurons only; `probes/backends/vllm_engine.py` splits the rows back into documents.
"""

import torch

STATE = "_rosetta_capture"  # attribute of the vLLM model holding the hooks and passes


def install(model: torch.nn.Module, requests: dict[int, list[int] | None]) -> int:
    """Hook `model` (a vLLM Llama-family causal LM) for `requests` and stop its forward after
    the deepest requested layer; returns the number of layers the forward now runs."""
    remove(model)
    body = model.model
    state = {"passes": [], "handles": [], "end_layer": body.end_layer}

    def on_forward(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        positions = kwargs.get("positions", args[1] if len(args) > 1 else None)
        state["passes"].append(
            {"ids": ids.cpu().numpy(), "positions": positions.cpu().numpy(), "layers": {}}
        )

    # on the outer model: vLLM calls the compiled-capable body's forward directly (no hooks)
    state["handles"].append(model.register_forward_pre_hook(on_forward, with_kwargs=True))
    for layer, wanted in requests.items():
        index = None if wanted is None else torch.tensor(wanted, dtype=torch.long)

        def on_mlp(module, args, layer=layer, index=index):
            acts = args[0] if index is None else args[0].index_select(-1, index.to(args[0].device))
            state["passes"][-1]["layers"][layer] = acts.float().cpu().numpy()

        hook = body.layers[layer].mlp.down_proj.register_forward_pre_hook(on_mlp)
        state["handles"].append(hook)
    body.end_layer = min(body.end_layer, max(requests) + 1)
    setattr(model, STATE, state)
    return body.end_layer


def collect(model: torch.nn.Module) -> list[dict]:
    """The passes recorded since the last call (and forget them)."""
    state = getattr(model, STATE)
    passes, state["passes"] = state["passes"], []
    return passes


def remove(model: torch.nn.Module) -> None:
    """Undo `install` (hooks off, full depth back)."""
    state = getattr(model, STATE, None)
    if state is None:
        return
    for handle in state["handles"]:
        handle.remove()
    model.model.end_layer = state["end_layer"]
    delattr(model, STATE)
