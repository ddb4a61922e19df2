"""`curate bench` configuration: a validated TOML (like recipes) with shipped defaults.

`recipes/bench/default.toml` is the full run; `quick.toml` and `tiny.toml` include it and
shrink it. Every key is checked: a typo names the key and the closest valid one.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from curate.cpt.loop import TrainConfig
from curate.cpt.model import CAUSAL, MLM, PRETRAIN, ModelConfig
from filters.config import build, check_values, find_file, read_merged
from filters.recipe import RECIPES_DIR, find_recipe
from probes.errors import CurateError

BENCH_DIR = RECIPES_DIR / "bench"
BENCH_VERSION = 1
BUILTIN_ARMS = (
    "unfiltered",  # the pool in random order (no length limits)
    "random",  # uniform random documents (the recipe's length limits), fresh draws per budget
    "length-matched",  # random documents matching the rosetta selection's length distribution
    "dsir",  # DSIR toward the tasks' training sentences
    "rosetta",  # the default Rosetta recipe
    "rosetta-top10",  # the same, scored by the set's top neurons only (the paper's top 10)
    "rosetta-target",  # the neurons most selective for the tasks' text (curate neurons top)
)


@dataclass(frozen=True)
class PoolConfig:
    generic_share: float = 0.3  # of the pool's documents, kept out of selection for the base
    max_documents: int = 0  # use a fixed hash-chosen subset of the pool (0: all of it)


@dataclass(frozen=True)
class PretrainConfig:
    """The base model: a generic split of the pool pre-trains the tool's own encoder, or fits a
    new head on an existing one (its encoder frozen)."""

    tokens: int = 2_000_000  # pre-training tokens (base = "pretrain")
    head_tokens: int = 200_000  # head-fitting tokens (an existing encoder)
    lr: float = 1e-3
    batch: int = 32


@dataclass(frozen=True)
class GridConfig:
    budget: int = 300_000  # B: the token count at which arms are compared
    multiples: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0)  # of B; must include 1
    seeds: int = 3


@dataclass(frozen=True)
class ArmsConfig:
    names: tuple[str, ...] = BUILTIN_ARMS  # built-in arm names, bundled recipe names or paths
    reference: str = "unfiltered"  # the arm whose score at B defines parity
    rosetta_recipe: str = "rosetta-default"  # what the rosetta arms are derived from
    top_neurons: int = 10  # kept by rosetta-top10 and rosetta-target


@dataclass(frozen=True)
class EvalConfig:
    target_share: float = 0.2  # of the tasks' training sentences: the held-out target set
    target_tokens: int = 50_000  # cap on the target set's tokens
    probe_train: int = 2000  # training examples per task for the frozen probes
    validation_max: int = 0  # score a fixed subset of at most this many per task (0: all)
    replicates: int = 1000  # multi-bootstrap replicates
    loss_margin: float = 0.02  # non-inferiority margin, target loss (nats/token), fixed upfront
    glue_margin: float = 0.01  # non-inferiority margin, GLUE scores
    ngram: int = 8  # pool documents sharing a word n-gram with a validation sentence go
    finetune: bool = False  # also fine-tune each arm's final checkpoints on every task
    finetune_epochs: int = 2
    finetune_lr: float = 1e-4


class ConfigRecord:
    """A config dataclass as the JSON record a run folder keeps (lock_config)."""

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


class BenchRecord(ConfigRecord):
    """What both bench configs (text and image) share: the record, and the grid of counts
    (tokens or images) the arms are trained at."""

    @property
    def token_grid(self) -> list[int]:
        return sorted({max(1, round(m * self.grid.budget)) for m in self.grid.multiples})


@dataclass(frozen=True)
class BenchConfig(BenchRecord):
    version: int = BENCH_VERSION
    name: str = ""
    description: str = ""
    model: ModelConfig = ModelConfig()
    pool: PoolConfig = PoolConfig()
    pretrain: PretrainConfig = PretrainConfig()
    grid: GridConfig = GridConfig()
    train: TrainConfig = TrainConfig()
    arms: ArmsConfig = ArmsConfig()
    eval: EvalConfig = EvalConfig()


def load_config(
    name_or_path: str, cls: type = None, checker=None, folder: Path = BENCH_DIR, what="bench"
):
    """A config (`cls`, default BenchConfig, checked by `checker`, default `check`) from a
    name bundled in `folder` or a TOML path, with its includes."""
    cls, checker = cls or BenchConfig, checker or check

    def find(name: str) -> Path:
        return find_file(name, folder, f"{what} config")

    path = find(name_or_path).resolve()
    raw = read_merged(path, cls, find)
    if raw.get("version") != cls.version:
        raise CurateError(f"{path}: version must be {cls.version} (got {raw.get('version')!r})")
    config = build(cls, raw, str(path), **({} if "name" in raw else {"name": path.stem}))
    checker(config, str(path))
    return config


def check(config: BenchConfig, where: str) -> None:
    """Value checks types cannot express, each naming its field."""
    g, e, t, a = config.grid, config.eval, config.train, config.arms
    p, pool = config.pretrain, config.pool
    checks = [
        ("grid.budget", g.budget > 0, "> 0"),
        ("grid.multiples", all(m > 0 for m in g.multiples) and 1.0 in g.multiples, "> 0, with 1"),
        ("grid.seeds", g.seeds >= 1, ">= 1"),
        ("pool.generic_share", 0 <= pool.generic_share < 1, "in [0, 1)"),
        ("pool.max_documents", pool.max_documents >= 0, ">= 0 (0: all)"),
        ("pretrain.tokens", p.tokens > 0, "> 0"),
        ("eval.target_share", 0 < e.target_share < 1, "in (0, 1)"),
        ("eval.replicates", e.replicates >= 100, ">= 100"),
        ("eval.probe_train", e.probe_train >= 10, ">= 10"),
        (
            "eval.validation_max",
            e.validation_max == 0 or e.validation_max >= 50,
            "0 (all) or >= 50",
        ),
        ("eval.ngram", e.ngram >= 3, ">= 3"),
        ("train.batch", t.batch >= 1, ">= 1"),
        ("train.lr", t.lr > 0, "> 0"),
        ("train.mask_prob", 0 < t.mask_prob < 1, "in (0, 1)"),
        ("model.seq_len", config.model.seq_len >= 8, ">= 8"),
        ("model.objective", config.model.objective in (CAUSAL, MLM), f"{CAUSAL!r} or {MLM!r}"),
        ("arms.names", len(a.names) >= 1, "at least one arm"),
        ("arms.reference", a.reference in a.names, "one of arms.names"),
        ("arms.top_neurons", a.top_neurons >= 1, ">= 1"),
    ]
    check_values(config, checks, where)
    if config.model.base != PRETRAIN and config.model.tokenizer != config.model.base:
        raise CurateError(
            f"{where}: model.base = {config.model.base!r} is an existing model, which reads its "
            f"own tokens: set model.tokenizer = {config.model.base!r} (got "
            f"{config.model.tokenizer!r})"
        )
    if config.model.base == PRETRAIN and pool.generic_share == 0:
        raise CurateError(f"{where}: model.base = 'pretrain' needs pool.generic_share > 0")
    for arm in a.names:
        if arm not in BUILTIN_ARMS:
            find_recipe(arm)  # an unknown name fails here, with the closest bundled recipe
