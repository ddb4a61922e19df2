"""`curate zoo train`: small language models at several MLP widths x several seeds.

The scaling study needs independently trained models of one architecture at several sizes, and
multi-seed checkpoint families cannot be downloaded here, so the tool trains its own with the
harness's training module (`curate.cpt.loop`): the same documents, token count, depth and
hidden size for every member; only the MLP width and the seed differ, and the seed fixes both
the initialisation and the batch order. Each member is saved as a plain Hugging Face model
folder (config, weights, tokenizer) that every probe and discovery command loads like any
local model, with `zoo.json` beside it: the zoo config, width, seed, training result and
held-out loss. A member folder appears whole (written under a temporary name, then renamed);
an interrupted member resumes from its last checkpoint.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from curate.cpt import data, loop
from curate.cpt.bench import lock_config
from curate.cpt.config import ConfigRecord, load_config
from curate.cpt.model import CAUSAL, MLM, ModelConfig, fresh_model, load_tokenizer
from curate.scaling.tokenizer import train_tokenizer
from filters.config import check_values
from filters.recipe import RECIPES_DIR
from probes.atomic import atomic_path
from probes.errors import CurateError
from probes.shards import list_shards, read_documents, shard_root

ZOO_DIR = RECIPES_DIR / "zoo"
ZOO_VERSION = 1
MEMBER_RECORD = "zoo.json"  # in each member folder, written last: the member is complete
ZOO_RECORD = "zoo-config.json"  # in the zoo folder: the config it was started with
TOKENIZER = "tokenizer"  # in the zoo folder, where model.vocab > 0
HELDOUT_SALT = "zoo-heldout"
HELDOUT_ROWS = 64  # packed sequences the held-out loss is measured on


@dataclass(frozen=True)
class ZooGrid:
    widths: tuple[int, ...] = (256, 512, 1024, 2048)  # MLP neurons per layer
    seeds: int = 3
    tokens: int = 1_000_000  # content tokens each member trains on


@dataclass(frozen=True)
class ZooModel:
    """Everything about the architecture except the MLP width (ZooGrid.widths)."""

    objective: str = CAUSAL  # causal: a Llama decoder; mlm: a BERT encoder
    tokenizer: str = "minilm-l6"  # alias or folder; used where vocab = 0
    vocab: int = 4096  # > 0: a byte-level BPE of this size trained on the zoo's documents
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    seq_len: int = 128


@dataclass(frozen=True)
class ZooData:
    heldout_share: float = 0.05  # documents kept out of training for the held-out loss
    max_documents: int = 0  # 0: every document of --data


@dataclass(frozen=True)
class ZooConfig(ConfigRecord):
    version: int = ZOO_VERSION
    name: str = ""
    description: str = ""
    zoo: ZooGrid = ZooGrid()
    model: ZooModel = ZooModel()
    data: ZooData = ZooData()
    train: loop.TrainConfig = loop.TrainConfig()

    def model_config(self, width: int) -> ModelConfig:
        m = self.model
        return ModelConfig(
            objective=m.objective,
            tokenizer=m.tokenizer,
            hidden=m.hidden,
            layers=m.layers,
            heads=m.heads,
            mlp=width,
            seq_len=m.seq_len,
        )


@dataclass(frozen=True)
class Member:
    width: int
    seed: int
    folder: Path

    @property
    def complete(self) -> bool:
        return (self.folder / MEMBER_RECORD).is_file()


def member_name(width: int, seed: int) -> str:
    return f"mlp{width}-seed{seed}"


def load_zoo_config(name_or_path: str) -> ZooConfig:
    return load_config(name_or_path, ZooConfig, _check, ZOO_DIR, "zoo")


def _check(config: ZooConfig, where: str) -> None:
    z, m, d = config.zoo, config.model, config.data
    checks = [
        ("zoo.widths", len(z.widths) >= 1 and all(w >= 1 for w in z.widths), ">= 1 each"),
        ("zoo.widths", len(set(z.widths)) == len(z.widths), "distinct"),
        ("zoo.seeds", z.seeds >= 2, ">= 2 (discovery pairs two seeds at least)"),
        ("zoo.tokens", z.tokens > 0, "> 0"),
        ("model.objective", m.objective in (CAUSAL, MLM), f"{CAUSAL!r} or {MLM!r}"),
        ("model.hidden", m.hidden % max(m.heads, 1) == 0 and m.heads >= 1, "a multiple of heads"),
        ("model.layers", m.layers >= 1, ">= 1"),
        ("model.vocab", m.vocab == 0 or m.vocab >= 300, "0 (the tokenizer's) or >= 300"),
        ("model.seq_len", m.seq_len >= 8, ">= 8"),
        ("data.heldout_share", 0 < d.heldout_share < 1, "in (0, 1)"),
        ("data.max_documents", d.max_documents >= 0, ">= 0 (0: all)"),
    ]
    check_values(config, checks, where)


def members(config: ZooConfig, out: Path) -> list[Member]:
    """The zoo's members, width by width (seeds inner), so a stopped run has whole sizes."""
    return [
        Member(w, s, out / member_name(w, s))
        for w in sorted(config.zoo.widths)
        for s in range(config.zoo.seeds)
    ]


def read_texts(shards: Path, max_documents: int, heldout_share: float) -> tuple[list, list]:
    """(training texts, held-out texts), split by a hash of each document's id."""
    root = shard_root(shards)
    train, heldout = [], []
    for shard in list_shards(shards):
        for doc in read_documents(shard, root=root):
            if not doc.text.strip():
                continue
            (heldout if data.stable_share(doc.id, HELDOUT_SALT) < heldout_share else train).append(
                doc.text
            )
            if max_documents and len(train) + len(heldout) >= max_documents:
                return train, heldout
    return train, heldout


def train_zoo(config: ZooConfig, shards: Path, out: Path, progress: bool = True) -> list[dict]:
    """Train every member not yet complete; returns every member's record."""
    lock_config(config, out, "zoo", ZOO_RECORD)
    todo = [m for m in members(config, out) if not m.complete]
    if todo:
        train_texts, heldout_texts = read_texts(
            shards, config.data.max_documents, config.data.heldout_share
        )
        if not train_texts or not heldout_texts:
            raise CurateError(
                f"{shards}: {len(train_texts)} training and {len(heldout_texts)} held-out "
                "documents with text; the zoo needs some of each (raise data.max_documents or "
                "data.heldout_share, or give more shards)"
            )
        tokenizer = zoo_tokenizer(config, train_texts, out)
        seq_len = config.model.seq_len
        sequences, special = data.pack(data.token_ids(tokenizer, train_texts), tokenizer, seq_len)
        held_seq, held_special = data.pack(
            data.token_ids(tokenizer, heldout_texts), tokenizer, seq_len
        )
        held = (held_seq[:HELDOUT_ROWS], held_special[:HELDOUT_ROWS])
        for member in tqdm(todo, desc="zoo", unit="model", disable=not progress):
            _train_member(config, member, tokenizer, sequences, special, held)
    return [json.loads((m.folder / MEMBER_RECORD).read_text()) for m in members(config, out)]


def zoo_tokenizer(config: ZooConfig, texts: list[str], out: Path):
    """The members' shared tokenizer: trained once into `out`/tokenizer, or an existing one."""
    if not config.model.vocab:
        return load_tokenizer(config.model.tokenizer)
    folder = out / TOKENIZER
    if (folder / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    return train_tokenizer(texts, config.model.vocab, folder)


def _train_member(config: ZooConfig, member: Member, tokenizer, sequences, special, held) -> None:
    work = member.folder.with_name(f".{member.folder.name}.partial")  # its checkpoints
    net = fresh_model(config.model_config(member.width), tokenizer, member.seed)
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else 0
    result = loop.train(
        net,
        sequences,
        special,
        config.zoo.tokens,
        config.train,
        member.seed,
        work,
        mask_id,
        desc=member.folder.name,
    )
    loss_sum, count = loop.lm_loss(net, *held, mask_id)
    record = {
        "width": member.width,
        "seed": member.seed,
        "mlp_neurons": member.width * config.model.layers,
        "parameters": sum(p.numel() for p in net.encoder.parameters()),
        "heldout_loss": float(loss_sum.sum() / count.sum().clamp(min=1)),
        "train": {k: v for k, v in result.to_dict().items() if k != "losses"},
        "final_train_loss": result.losses[-1][1] if result.losses else None,
        "config": config.to_dict(),
    }
    with atomic_path(member.folder) as tmp:
        net.encoder.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MEMBER_RECORD).write_text(json.dumps(record, indent=1))
    shutil.rmtree(work, ignore_errors=True)


def read_zoo(zoo: Path) -> dict[int, list[Path]]:
    """Complete member folders by MLP width (seeds in order), from the records in `zoo`."""
    by_width: dict[int, list[tuple[int, Path]]] = {}
    for record in sorted(zoo.glob(f"*/{MEMBER_RECORD}")):
        meta = json.loads(record.read_text())
        by_width.setdefault(int(meta["width"]), []).append((int(meta["seed"]), record.parent))
    if not by_width:
        raise CurateError(f"{zoo}: no zoo members (folders with {MEMBER_RECORD}); run curate zoo")
    return {w: [p for _, p in sorted(seeds)] for w, seeds in sorted(by_width.items())}
