"""Language-model training on packed sequences, readable top to bottom (after nanoGPT).

One call trains one run: a model, the packed token sequences of one selection, a token count
T and a seed; the model's objective says what is predicted (the next token, or masked
tokens). Every run with the same settings takes the same number of steps for the same T,
the learning rate warms up and then decays linearly to zero exactly at T, and the seed alone
fixes the batch order and the masks, so seed k is paired across arms. A run checkpoints every
few minutes (model, optimizer, step: safetensors and a weights-only torch file, written
atomically) and resumes from the last checkpoint when it is started again. It trains where the
model is (CPU or a CUDA device): batches are drawn on the CPU, so the draws do not depend on it.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from curate.cpt.model import LanguageModel
from probes.atomic import atomic_path
from probes.cpu import cpu_has_amx

CHECKPOINT = "checkpoint"  # folder inside a run folder while the run is unfinished
_RNG = "_torch_rng_state"


@dataclass(frozen=True)
class TrainConfig:
    batch: int = 32  # sequences per step
    lr: float = 5e-4
    warmup: float = 0.06  # share of the steps
    weight_decay: float = 0.01
    mask_prob: float = 0.15
    grad_clip: float = 1.0
    dtype: str = "auto"  # auto: bf16 autocast on CUDA and on CPUs with AMX, else fp32
    checkpoint_seconds: float = 300.0


@dataclass
class TrainResult:
    tokens: int  # content tokens fed (steps x batch x (seq_len - 2))
    steps: int
    epochs: float  # passes over the selection's sequences
    seconds: float
    tokens_per_second: float
    dtype: str
    losses: list[list[float]] = field(default_factory=list)  # [step, mean token loss]

    def to_dict(self) -> dict:
        return asdict(self)


def steps_for(tokens: int, batch: int, seq_len: int) -> int:
    """Steps that feed `tokens` content tokens (at least one)."""
    return max(1, round(tokens / (batch * (seq_len - 2))))


def get_lr(step: int, steps: int, config: TrainConfig) -> float:
    """Linear warmup, then linear decay to zero at the last step."""
    warmup = max(1, round(config.warmup * steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return config.lr * max(0.0, (steps - step) / max(1, steps - warmup))


def autocast_dtype(name: str, device: torch.device | str = "cpu") -> torch.dtype | None:
    """bf16 autocast for `bf16`, and for `auto` on a CUDA device with bf16 or a CPU with AMX
    tiles: with AVX512-BF16 alone, autocast made training slower here
    (benchmarks/bench_train.py), so `auto` stays fp32 there."""
    if name == "bf16":
        return torch.bfloat16
    if name != "auto":
        return None
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_amx() else None


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def mask_tokens(
    ids: torch.Tensor, special: torch.Tensor, prob: float, vocab: int, mask_id: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT masking of content positions: (inputs, masked [batch, seq] bool, labels).

    Of the chosen positions 80 % become [MASK], 10 % a random token, 10 % stay; at least one
    position per batch is chosen. `seed` fixes every draw.
    """
    g = torch.Generator().manual_seed(seed)
    masked = (torch.rand(ids.shape, generator=g) < prob) & ~special
    if not masked.any():
        masked.view(-1)[int((~special).view(-1).nonzero()[0])] = True
    labels = ids[masked]
    inputs = ids.clone()
    roll = torch.rand(ids.shape, generator=g)
    inputs[masked & (roll < 0.8)] = mask_id
    swap = masked & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = torch.randint(vocab, (int(swap.sum()),), generator=g)
    return inputs, masked, labels


def objective_batch(
    model: LanguageModel,
    ids: torch.Tensor,
    special: torch.Tensor,
    prob: float,
    mask_id: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, positions, labels) for `model.token_losses`: every position predicting the next
    content token (causal), or BERT-masked positions predicting themselves (masked LM)."""
    if model.causal:
        target = ~special[:, 1:]
        positions = torch.cat([target, torch.zeros_like(target[:, :1])], 1)
        return ids, positions, ids[:, 1:][target]
    vocab = model.encoder.config.vocab_size
    return mask_tokens(ids, special, prob, vocab, mask_id, seed)


def batch_indices(step: int, batch: int, n: int, seed: int) -> torch.Tensor:
    """Sequence indices of one step: epoch e visits a permutation seeded by (seed, e)."""
    positions = torch.arange(step * batch, (step + 1) * batch)
    out = torch.empty(batch, dtype=torch.long)
    for epoch in positions.div(n, rounding_mode="floor").unique().tolist():
        here = positions.div(n, rounding_mode="floor") == epoch
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        out[here] = order[positions[here] % n]
    return out


def train(
    model: LanguageModel,
    sequences: torch.Tensor,
    special: torch.Tensor,
    tokens: int,
    config: TrainConfig,
    seed: int,
    folder: Path,
    mask_id: int,
    desc: str = "train",
    trainable: list[torch.nn.Parameter] | None = None,
) -> TrainResult:
    """Train `model` on `tokens` content tokens drawn from `sequences` [n, seq_len] (`special`
    marks positions never masked), on the model's device; checkpoints in `folder`/checkpoint,
    resumes from it."""
    n, seq_len = sequences.shape
    steps = steps_for(tokens, config.batch, seq_len)
    params = trainable if trainable is not None else list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    device = model_device(model)
    dtype = autocast_dtype(config.dtype, device)
    start, losses, spent = resume(folder / CHECKPOINT, model, optimizer)
    model.train()
    began = time.perf_counter()
    last_save = began
    per_step = config.batch * (seq_len - 2)
    with tqdm(total=steps, initial=start, desc=desc, unit="step", leave=False) as bar:
        for step in range(start, steps):
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, steps, config)
            index = batch_indices(step, config.batch, n, seed)
            batch = objective_batch(
                model,
                sequences[index].long(),
                special[index],
                config.mask_prob,
                mask_id,
                seed * 1_000_003 + step,
            )
            batch = tuple(t.to(device, non_blocking=True) for t in batch)
            autocast = torch.autocast(
                device.type, dtype=dtype or torch.float32, enabled=dtype is not None
            )
            with autocast:
                loss = model.token_losses(*batch).mean()
            optimizer_step(loss, params, optimizer, config.grad_clip, losses, step, steps)
            elapsed = time.perf_counter() - began
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss.item():.3f}", tok_s=f"{(step + 1 - start) * per_step / elapsed:,.0f}"
            )
            if time.perf_counter() - last_save > config.checkpoint_seconds and step < steps - 1:
                save_checkpoint(
                    folder / CHECKPOINT, model, optimizer, step + 1, losses, spent + elapsed
                )
                last_save = time.perf_counter()
    seconds = spent + time.perf_counter() - began
    return TrainResult(
        tokens=steps * per_step,
        steps=steps,
        epochs=steps * config.batch / n,
        seconds=seconds,
        tokens_per_second=(steps - start) * per_step / max(time.perf_counter() - began, 1e-9),
        dtype="bf16" if dtype is not None else "fp32",
        losses=losses,
    )


def optimizer_step(
    loss: torch.Tensor,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    grad_clip: float,
    losses: list,
    step: int,
    steps: int,
) -> None:
    """Backward, clip, step; the loss is logged at about 50 steps of the run and its last."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if step % max(1, steps // 50) == 0 or step == steps - 1:
        losses.append([step, loss.item()])


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    losses,
    seconds,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "optimizer.pt") as tmp:
        torch.save(optimizer.state_dict(), tmp)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors[_RNG] = torch.get_rng_state()  # dropout draws continue where they stopped
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(tensors, tmp)
    with atomic_path(folder / "state.json") as tmp:  # last: it names a complete checkpoint
        tmp.write_text(json.dumps({"step": step, "losses": losses, "seconds": seconds}))


def resume(folder: Path, model: torch.nn.Module, optimizer) -> tuple[int, list, float]:
    """(step to start from, losses so far, seconds spent) from a complete checkpoint, if any."""
    state_path = folder / "state.json"
    if not state_path.is_file():
        return 0, [], 0.0
    state = json.loads(state_path.read_text())
    tensors = load_file(folder / "model.safetensors")
    rng = tensors.pop(_RNG, None)
    if rng is not None:
        torch.set_rng_state(rng)
    model.load_state_dict(tensors)
    optimizer.load_state_dict(
        torch.load(folder / "optimizer.pt", weights_only=True, map_location=model_device(model))
    )
    return int(state["step"]), state["losses"], float(state["seconds"])


@torch.inference_mode()
def lm_loss(
    model: LanguageModel,
    sequences: torch.Tensor,
    special: torch.Tensor,
    mask_id: int,
    batch: int = 64,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: (sum of predicted-token losses, predicted tokens); masks (masked LM) are
    fixed by `seed`, so every model is scored on the same positions."""
    model.eval()
    device = model_device(model)
    sums, counts = [], []
    for start in range(0, len(sequences), batch):
        ids = sequences[start : start + batch].long()
        inputs, positions, labels = objective_batch(
            model, ids, special[start : start + batch], 0.15, mask_id, seed * 7919 + start
        )
        on = (t.to(device) for t in (inputs, positions, labels))
        loss = model.token_losses(*on).float().cpu()
        row = positions.nonzero()[:, 0]
        sums.append(torch.zeros(len(ids)).index_add_(0, row, loss))
        counts.append(positions.sum(1))
    return torch.cat(sums), torch.cat(counts)
