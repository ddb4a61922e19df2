"""`curate bench`: continued pre-training on each arm's selection at matched tokens, evaluated.

The run, top to bottom:

1. tasks and pool: decontaminate, split the pool (generic share, selection pool) and the tasks'
   training sentences (target for selection, held-out target set), all once (data.py);
2. the base model: pre-trained once on the generic share (or an existing encoder with a new
   head fitted on it), then evaluated as T = 0;
3. for each seed, arm and token count T of the grid: select T tokens from the selection pool
   with the filter stage (`curate.pipeline.filter`), continue pre-training the base for exactly
   T tokens, evaluate (target LM loss, frozen GLUE probes) and keep the per-example
   outputs; a finished run is never redone, an unfinished one resumes from its checkpoint;
4. statistics and the report (report.py).

Each run's selection is made once and kept in its run folder (selection.json), so the runs can
be split between machines: `--prepare` makes every split, score and selection on a machine
with the probe model, and a GPU machine (`--device cuda`, `--workers N` processes sharing it)
trains and evaluates from that folder without the probe model.
"""

import json
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from curate.cpt import data, glue, loop, model
from curate.cpt.config import BenchConfig
from probes.atomic import atomic_path
from probes.errors import CurateError
from probes.shards import list_shards, read_documents, shard_root

RUN_RECORD = "run.json"  # written last: its presence marks a finished run
SELECTION = "selection.json"  # the run's documents, written before it trains
OUTPUTS = "outputs.npz"
TOKENIZER = "tokenizer"  # the bench's own copy in the work folder
CONFIG_RECORD = "config.json"  # the config a report folder was started with


def lock_config(config, out: Path, what: str = "bench", record: str = CONFIG_RECORD) -> None:
    """Record the config (any `to_dict()` config) a folder was started with, and refuse
    another one later: a resumed or re-reported bench never mixes runs, grids or margins of two
    configs (margins are fixed before the run), nor a resumed zoo two sizes of training."""
    mine = {k: v for k, v in config.to_dict().items() if k not in ("name", "description")}
    path = out / record
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(mine, indent=1, sort_keys=True))
        return
    started = json.loads(path.read_text())
    changed = _first_difference(started, mine)
    if changed:
        key, was, now = changed
        raise CurateError(
            f"{out} was started with another {what} config ({key}: {json.dumps(was)} then, "
            f"{json.dumps(now)} now): resume it with the same config, or give a new --out"
        )


def _first_difference(a, b, prefix: str = ""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if a == b else (prefix.rstrip("."), a, b)


@dataclass
class Pool:
    """The selection pool's documents: token ids per (shard, row), read once."""

    root: Path
    ids: dict[tuple[str, int], np.ndarray]
    source: dict[tuple[str, int], str]

    @classmethod
    def read(cls, shards: Path, tokenizer) -> "Pool":
        root = shard_root(shards)
        keys, texts, sources = [], [], {}
        for shard in list_shards(shards):
            rel = shard.relative_to(root).as_posix()
            for doc in read_documents(shard, on_error="skip", root=root):
                if doc.error is None:
                    keys.append((rel, doc.row))
                    texts.append(doc.text)
                    sources[(rel, doc.row)] = rel.split("/")[0] if "/" in rel else "."
        tokens = data.token_ids(tokenizer, texts)
        return cls(
            root, {k: np.array(t, np.int32) for k, t in zip(keys, tokens, strict=True)}, sources
        )

    @property
    def tokens(self) -> int:
        return int(sum(len(v) for v in self.ids.values()))

    def rows(self, kept: dict[str, np.ndarray]) -> list[tuple[str, int]]:
        return [(rel, int(r)) for rel, rows in sorted(kept.items()) for r in rows]


@dataclass
class Selection:
    """One arm's documents at one token count and seed."""

    rows: list[tuple[str, int]]
    manifest: dict = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / SELECTION) as tmp:
            tmp.write_text(json.dumps({"rows": self.rows, "manifest": self.manifest}))

    @classmethod
    def load(cls, folder: Path) -> "Selection | None":
        path = folder / SELECTION
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        return cls([(rel, int(row)) for rel, row in saved["rows"]], saved["manifest"])

    def summary(self, pool: Pool) -> dict:
        lengths = [len(pool.ids[k]) for k in self.rows]
        by_source: dict[str, int] = {}
        for key, n in zip(self.rows, lengths, strict=True):
            by_source[pool.source[key]] = by_source.get(pool.source[key], 0) + n
        return {
            "documents": len(self.rows),
            "tokens": int(sum(lengths)),
            "lengths": lengths,
            "tokens_by_source": dict(sorted(by_source.items())),
            "budget_exceeds_pool": bool(self.manifest.get("budget_exceeds_corpus", False)),
        }


class Bench:
    """Holds what every run shares: config, tasks, splits, tokenizer, base model, pool; models
    train and evaluate on `device`."""

    def __init__(
        self, config: BenchConfig, pool: Path, tasks_dir: Path, out: Path, device: str = "cpu"
    ):
        lock_config(config, out)
        self.config = config
        self.out = out
        self.work = out / "work"
        self.device = torch.device(device)
        self.tasks = data.load_tasks(tasks_dir)
        self.split = data.split_pool(
            pool,
            self.work,
            self.tasks,
            config.eval.ngram,
            config.pool.generic_share,
            config.pool.max_documents,
        )
        self.targets = data.split_targets(self.tasks, self.work, config.eval.target_share)
        self.tokenizer = self._tokenizer()
        self.pool = Pool.read(self.split.selection, self.tokenizer)
        largest = max(config.token_grid)
        if self.pool.tokens < largest:
            raise CurateError(
                f"the selection pool holds {self.pool.tokens:,} tokens after decontamination and "
                f"the generic split, fewer than the largest budget {largest:,} "
                f"({max(config.grid.multiples):g} x grid.budget): lower grid.budget or "
                "grid.multiples, or give a larger --pool"
            )
        self.target_seq = self._target_sequences()
        limit = config.eval.validation_max  # decontamination above used every validation row
        self.tasks = [
            replace(t, validation=t.validation.rows(data.fixed_subset(len(t.validation), limit)))
            for t in self.tasks
        ]
        self.probe_rows = {
            t.name: data.fixed_subset(len(t.train), config.eval.probe_train) for t in self.tasks
        }
        self.mask_id = self.tokenizer.mask_token_id

    def _tokenizer(self):
        """The configured tokenizer, copied into the work folder on first use: the base model's
        vocabulary stays with the runs, and a machine without the model's package can go on."""
        saved = self.work / TOKENIZER
        if saved.is_dir():
            return model.load_tokenizer(str(saved))
        tokenizer = model.load_tokenizer(self.config.model.tokenizer)
        with atomic_path(saved) as tmp:
            tokenizer.save_pretrained(tmp)
        return tokenizer

    def _target_sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        ids = data.token_ids(self.tokenizer, self.targets.heldout)
        seq, special = data.pack(ids, self.tokenizer, self.config.model.seq_len)
        rows = max(1, self.config.eval.target_tokens // (self.config.model.seq_len - 2))
        return seq[:rows], special[:rows]

    # ------------------------------------------------------------------------- base model

    def base(self) -> Path:
        """The base checkpoint folder, trained once (resumably) and reused by every run."""
        cfg, folder = self.config, self.work / "base"
        if model.is_saved(folder):
            return folder
        generic = (
            Pool.read(self.split.generic, self.tokenizer) if self.split.counts["generic"] else None
        )
        train_cfg = loop.TrainConfig(
            batch=cfg.pretrain.batch,
            lr=cfg.pretrain.lr,
            dtype=cfg.train.dtype,
            checkpoint_seconds=cfg.train.checkpoint_seconds,
        )
        if cfg.model.base == model.PRETRAIN:
            net, tokens, trainable = (
                model.fresh_model(cfg.model, self.tokenizer, 0),
                cfg.pretrain.tokens,
                None,
            )
        else:  # a decoder keeps its own head; an encoder's new head is fitted, the body frozen
            net = model.existing_model(cfg.model.base, cfg.model.objective, 0)
            tokens = 0 if net.causal else cfg.pretrain.head_tokens
            trainable = [*net.transform.parameters(), net.bias]
        net.to(self.device)
        extra = {}
        if tokens:
            source = generic if generic is not None and generic.ids else self.pool
            seq, special = data.pack(source.ids.values(), self.tokenizer, cfg.model.seq_len)
            result = loop.train(
                net, seq, special, tokens, train_cfg, 0, folder, self.mask_id, "base", trainable
            )
            extra["train"] = result.to_dict()
        model.save(net, folder, extra)
        shutil.rmtree(folder / loop.CHECKPOINT, ignore_errors=True)
        return folder

    # ------------------------------------------------------------------------------- runs

    def evaluate(
        self, net: model.LanguageModel, finetune_seed: int | None
    ) -> dict[str, np.ndarray]:
        """Per-example outputs: target loss per sequence, probe predictions per task, and
        fine-tuned predictions per task when `finetune_seed` is given."""
        loss_sum, count = loop.lm_loss(net, *self.target_seq, self.mask_id)
        out = {"target/loss_sum": loss_sum.numpy(), "target/count": count.numpy()}
        e = self.config.eval
        for task in self.tasks:
            rows = self.probe_rows[task.name]
            results = {task.name: glue.probe_task(net, self.tokenizer, task, rows)}
            if finetune_seed is not None:
                results[f"{glue.FINETUNED}{task.name}"] = glue.finetune_task(
                    net, self.tokenizer, task, rows, e.finetune_epochs, e.finetune_lr, finetune_seed
                )
            for name, result in results.items():
                out[f"{name}/predicted"] = result.predicted
                if result.true_probability is not None:
                    out[f"{name}/true_probability"] = result.true_probability
        return out

    def run(self, folder: Path, selection: Selection | None, tokens: int, seed: int, desc: str):
        """Train from the base on `selection` for `tokens` tokens (T = 0: the base itself),
        evaluate, and record; a finished run is skipped."""
        if (folder / RUN_RECORD).is_file():
            return
        net = model.load(self.base()).to(self.device)
        record: dict = {"tokens_requested": tokens, "seed": seed, "device": str(self.device)}
        if selection is not None:
            ids = [self.pool.ids[k] for k in selection.rows]
            seq, special = data.pack(ids, self.tokenizer, self.config.model.seq_len)
            torch.manual_seed(seed)
            result = loop.train(
                net, seq, special, tokens, self.config.train, seed, folder, self.mask_id, desc
            )
            record["train"] = result.to_dict()
            record["selection"] = selection.summary(self.pool)
        started = time.perf_counter()
        final = tokens == max(self.config.token_grid) or selection is None
        outputs = self.evaluate(net, seed if self.config.eval.finetune and final else None)
        record["eval_seconds"] = time.perf_counter() - started
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / OUTPUTS) as tmp:
            with tmp.open("wb") as f:
                np.savez(f, **outputs)
        with atomic_path(folder / RUN_RECORD) as tmp:
            tmp.write_text(json.dumps(record, indent=1))
        shutil.rmtree(folder / loop.CHECKPOINT, ignore_errors=True)


@dataclass(frozen=True)
class BenchSetup:
    """Where a bench runs: the machine's share of the work, the device and processes."""

    device: str = "cpu"  # where models train and evaluate: cpu, cuda, cuda:1, ...
    workers: int = 1  # processes running runs side by side (each loads its own model)
    prepare: bool = False  # stop after every run's selection is made (nothing trained)


def run_bench(
    config: BenchConfig,
    pool: Path,
    tasks_dir: Path,
    out: Path,
    progress: bool = True,
    setup: BenchSetup = BenchSetup(),
):
    """Everything up to the report; returns the report's summary dict (None after `prepare`)."""
    from curate.cpt import arms as arm_kinds
    from curate.cpt.report import write_report

    check_device(setup.device)
    bench = Bench(config, pool, tasks_dir, out, setup.device)
    arms = arm_kinds.build(config, bench)
    grid = config.token_grid
    plan = [(s, a, t) for s in range(config.grid.seeds) for a in arms for t in grid]
    base_eval = out / "runs" / "base"
    todo = [] if (base_eval / RUN_RECORD).is_file() else [(base_eval, 0, 0, "base eval")]
    for seed, arm, tokens in tqdm(plan, desc="selections", unit="run", disable=not progress):
        folder = out / "runs" / arm.name / f"T{tokens}" / f"seed{seed}"
        if (folder / RUN_RECORD).is_file():
            continue
        if not (folder / SELECTION).is_file():
            arm.select(tokens, seed).save(folder)
        todo.append((folder, tokens, seed, f"{arm.name} T={tokens:,} seed {seed}"))
    if setup.prepare:
        return None
    bench.base()
    if setup.workers <= 1:
        for item in tqdm(todo, desc="bench runs", unit="run", disable=not progress):
            _run_item(bench, item)
    else:
        _run_parallel(config, (pool, tasks_dir, out, setup), todo, progress)
    return write_report(bench, [a.name for a in arms])


def check_device(device: str) -> None:
    """A clear error for a device this machine lacks (before any work)."""
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise CurateError(f"--device {device!r}: {err}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise CurateError(f"--device {device}: torch sees no CUDA device on this machine")
    if kind not in ("cpu", "cuda"):
        raise CurateError(f"--device {device}: the bench trains on cpu or cuda")


def _run_item(bench: Bench, item: tuple[Path, int, int, str]) -> None:
    folder, tokens, seed, desc = item
    bench.run(folder, Selection.load(folder), tokens, seed, desc)


_WORKER_BENCH: Bench | None = None  # each worker process's own Bench (models, tokenizer, pool)


def _start_worker(config: BenchConfig, where: tuple, threads: int) -> None:
    global _WORKER_BENCH
    pool, tasks_dir, out, setup = where
    torch.set_num_threads(threads)
    _WORKER_BENCH = Bench(config, pool, tasks_dir, out, setup.device)


def _worker_run(item: tuple[Path, int, int, str]) -> str:
    _run_item(_WORKER_BENCH, item)
    return item[3]


def _run_parallel(config: BenchConfig, where: tuple, todo: list, progress: bool) -> None:
    """The runs over `workers` spawned processes (CUDA needs spawn), one run at a time each, in
    plan order; the CPU threads are shared out among them."""
    workers = min(where[3].workers, len(todo))
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    quiet = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # spawned workers inherit it: one bar, this process's
    try:
        processes = context.Pool(workers, _start_worker, (config, where, threads))
    finally:
        os.environ.pop("TQDM_DISABLE") if quiet is None else os.environ.update(TQDM_DISABLE=quiet)
    with processes:
        done = processes.imap_unordered(_worker_run, todo)
        for _ in tqdm(done, total=len(todo), desc="bench runs", unit="run", disable=not progress):
            pass
