"""The model the harness continues pre-training: a transformer body plus an LM head.

Two objectives. `causal`: a Llama-family decoder (a small one the tool pre-trains itself, or an
existing checkpoint such as `smollm2-135m` with its own tied LM head), predicting the next token
at every position. `mlm`: a BERT encoder (the tool's own or an existing one) with a masked-LM head
(dense, GELU, LayerNorm) evaluated only at masked positions. Both heads use the input embeddings
as the output matrix. Checkpoints are plain safetensors beside the body's
config.json: nothing is unpickled when they load.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    LlamaConfig,
    PreTrainedTokenizerBase,
)

from probes.atomic import atomic_path
from probes.errors import CurateError
from probes.families import FAMILIES
from probes.models import resolve_model_path

PRETRAIN = "pretrain"  # ModelConfig.base: a small model the tool pre-trains itself
CAUSAL, MLM = "causal", "mlm"  # ModelConfig.objective
WEIGHTS, CONFIG = "model.safetensors", "config.json"


@dataclass(frozen=True)
class ModelConfig:
    """Which model continues pre-training: a small model the tool pre-trains (`base =
    "pretrain"`, sized by the fields below) or an existing checkpoint (an alias or folder): a
    decoder continued with its own LM head (`causal`), or an encoder given a new masked-LM head
    (`mlm`)."""

    base: str = PRETRAIN
    objective: str = CAUSAL  # causal: a Llama-family decoder; mlm: a BERT encoder
    tokenizer: str = "minilm-l6"  # alias or folder (an existing base's own); counts every budget
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    mlp: int = 1024
    seq_len: int = 128


class LanguageModel(nn.Module):
    """A body (`encoder`, bidirectional or causal) and an LM head tied to its input embeddings."""

    def __init__(self, encoder: nn.Module, causal: bool):
        super().__init__()
        self.encoder = encoder
        self.causal = causal
        hidden = encoder.config.hidden_size
        self.transform = (
            nn.Identity()
            if causal
            else nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
        )
        self.bias = nn.Parameter(torch.zeros(encoder.config.vocab_size))

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def token_losses(
        self, input_ids: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Cross-entropy of `labels` predicted at `positions` ([batch, seq] bool, row-major)."""
        states = self.transform(self.hidden(input_ids)[positions])
        weight = self.encoder.get_input_embeddings().weight
        logits = F.linear(states, weight, self.bias)
        return F.cross_entropy(logits.float(), labels, reduction="none")

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean of the last hidden states over real tokens: the frozen-probe features."""
        states = self.hidden(input_ids, attention_mask).float()
        mask = attention_mask.unsqueeze(-1).float()
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(resolve_model_path(name), local_files_only=True)


def fresh_model(
    config: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int
) -> LanguageModel:
    """A randomly initialised small Llama (`causal`) or BERT (`mlm`) with the tokenizer's
    vocabulary (no download)."""
    torch.manual_seed(seed)
    shape = {
        "vocab_size": len(tokenizer),
        "hidden_size": config.hidden,
        "num_hidden_layers": config.layers,
        "num_attention_heads": config.heads,
        "intermediate_size": config.mlp,
        "max_position_embeddings": max(config.seq_len, 512),
        "pad_token_id": tokenizer.pad_token_id or 0,
    }
    if config.objective == CAUSAL:
        body_config = LlamaConfig(num_key_value_heads=config.heads, **shape)
    else:
        body_config = BertConfig(**shape)
    body = AutoModel.from_config(body_config, attn_implementation="sdpa")
    return LanguageModel(body, causal=config.objective == CAUSAL)


def existing_model(name: str, objective: str, seed: int) -> LanguageModel:
    """An existing checkpoint (alias or folder) as the base. `causal`: a decoder whose LM head is
    its input embeddings (tied), so the head is the checkpoint's own and nothing new is fitted;
    `mlm`: an encoder with a freshly initialised masked-LM head."""
    body = AutoModel.from_pretrained(
        resolve_model_path(name), local_files_only=True, use_safetensors=True
    )
    if objective == CAUSAL:
        kind = body.config.model_type
        if kind not in FAMILIES or not FAMILIES[kind].decoder:
            decoders = sorted(k for k, f in FAMILIES.items() if f.decoder)
            raise CurateError(
                f"model.base = {name!r} is a {kind!r} model, not a decoder "
                f"({', '.join(decoders)}): continue it with model.objective = {MLM!r}"
            )
        if not body.config.tie_word_embeddings:
            raise CurateError(
                f"model.base = {name!r} has an LM head apart from its input embeddings; the "
                "bench continues decoders whose head is tied to them"
            )
    torch.manual_seed(seed)
    return LanguageModel(body, causal=objective == CAUSAL)


def save(model: LanguageModel, folder: Path, extra: dict | None = None) -> None:
    """config.json (the encoder's, plus `extra`) and model.safetensors, each written atomically;
    the weights last, so a folder with weights is always whole."""
    folder.mkdir(parents=True, exist_ok=True)
    objective = CAUSAL if model.causal else MLM
    config = {"encoder": model.encoder.config.to_dict(), "objective": objective, **(extra or {})}
    with atomic_path(folder / CONFIG) as tmp:
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state.pop("encoder.embeddings.position_ids", None)
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, tmp)


def load(folder: Path) -> LanguageModel:
    saved = json.loads((folder / CONFIG).read_text())
    encoder_config = AutoConfig.for_model(**saved["encoder"])
    encoder = AutoModel.from_config(encoder_config, attn_implementation="sdpa")
    model = LanguageModel(encoder, causal=saved.get("objective") == CAUSAL)
    state = load_file(folder / WEIGHTS)
    model.load_state_dict(state, strict=False)
    missing = set(model.state_dict()) - set(state) - {"encoder.embeddings.position_ids"}
    if missing:
        raise ValueError(f"{folder}: checkpoint lacks {sorted(missing)[:3]}")
    return model


def is_saved(folder: Path) -> bool:
    return (folder / WEIGHTS).is_file() and (folder / CONFIG).is_file()
