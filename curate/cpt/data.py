"""What the harness trains and evaluates on: tasks, a decontaminated pool, targets, sequences.

From `--tasks` (folders in the Hugging Face `glue` schema) and `--pool` (shards):

- the tasks' validation sentences, for evaluation only; pool documents sharing a word n-gram
  with any of them are removed before anything is selected (no leakage);
- the tasks' training sentences, split once by a hash: a held-out share is the fixed
  target-domain set whose masked-LM loss is the primary metric, the rest is the target that
  DSIR and `rosetta-target` select toward;
- the pool, split once by a hash into a generic share (pre-training of the tool's own base
  model) and the selection pool every arm selects from.

Every split is written as shards under the work folder, once; a rerun reuses them.
"""

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from filters.write import write_rows
from probes.atomic import atomic_path
from probes.errors import CurateError
from probes.shards import list_shards, read_documents, shard_root

GLUE_METRICS = {  # task -> (kind, the GLUE score)
    "cola": ("classification", "mcc"),
    "sst2": ("classification", "accuracy"),
    "mrpc": ("classification", "f1_accuracy"),
    "stsb": ("regression", "pearson_spearman"),
    "qqp": ("classification", "f1_accuracy"),
    "mnli": ("classification", "accuracy"),
    "qnli": ("classification", "accuracy"),
    "rte": ("classification", "accuracy"),
    "wnli": ("classification", "accuracy"),
}
_WORD = re.compile(r"\w+")


@dataclass
class Split:
    first: list[str]
    second: list[str] | None  # sentence2 of pair tasks
    label: np.ndarray  # int64 classes, float64 scores for regression

    def __len__(self) -> int:
        return len(self.first)

    def rows(self, idx: np.ndarray) -> "Split":
        """The examples at `idx`, in that order."""
        second = None if self.second is None else [self.second[i] for i in idx]
        return Split([self.first[i] for i in idx], second, self.label[idx])


def fixed_subset(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a fixed random subset of at most `limit` of `n` rows (0: all of them):
    the same for every checkpoint, so every run is scored on the same examples."""
    if not limit or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


@dataclass
class Task:
    name: str
    kind: str  # classification | regression
    metric: str  # accuracy | mcc | f1_accuracy | pearson_spearman
    train: Split
    validation: Split

    @property
    def sentences(self) -> list[str]:
        """Every training sentence (both sides of pairs)."""
        return self.train.first + (self.train.second or [])


def load_tasks(tasks_dir: Path) -> list[Task]:
    """Every task folder under `tasks_dir` holding train.jsonl and validation.jsonl.

    A GLUE task name gets its standard metric; any other folder is read by its columns
    (`sentence` or `sentence1`/`sentence2`, integer `label`) and scored by accuracy.
    """
    if not tasks_dir.is_dir():
        raise CurateError(f"--tasks {tasks_dir} is not a folder")
    folders = sorted(p.parent for p in tasks_dir.glob("*/train.jsonl"))
    if (tasks_dir / "train.jsonl").is_file():
        folders = [tasks_dir]
    if not folders:
        raise CurateError(f"--tasks {tasks_dir}: no <task>/train.jsonl (Hugging Face glue schema)")
    tasks = []
    for folder in folders:
        kind, metric = GLUE_METRICS.get(folder.name, ("classification", "accuracy"))
        train = _read_split(folder / "train.jsonl", kind)
        validation = _read_split(folder / "validation.jsonl", kind)
        if (train.second is None) != (validation.second is None):
            raise CurateError(f"{folder}: train and validation disagree on sentence pairs")
        tasks.append(Task(folder.name, kind, metric, train, validation))
    return tasks


def _read_split(path: Path, kind: str) -> Split:
    if not path.is_file():
        raise CurateError(f"{path}: missing (each task needs train.jsonl and validation.jsonl)")
    first, second, labels = [], [], []
    pair = None
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CurateError(f"{path}:{line_no}: invalid JSON ({err})") from None
            keys = ("sentence1", "sentence2") if "sentence1" in row else ("sentence",)
            pair = len(keys) == 2 if pair is None else pair
            missing = [k for k in (*keys, "label") if k not in row]
            if missing or (len(keys) == 2) != pair:
                raise CurateError(
                    f"{path}:{line_no}: expected `sentence` or `sentence1`/`sentence2` and "
                    f"`label`; missing {missing or 'a consistent sentence layout'}"
                )
            label = row["label"]
            ok = isinstance(label, int | float) and not isinstance(label, bool)
            if not ok or (kind == "classification" and not isinstance(label, int)):
                expected = "an integer class" if kind == "classification" else "a number"
                raise CurateError(f"{path}:{line_no}: label {label!r} is not {expected}")
            if kind == "classification" and label < 0:
                raise CurateError(f"{path}:{line_no}: unlabelled row (label {label})")
            first.append(str(row[keys[0]]))
            if pair:
                second.append(str(row[keys[1]]))
            labels.append(label)
    if not first:
        raise CurateError(f"{path}: no rows")
    dtype = np.int64 if kind == "classification" else np.float64
    return Split(first, second if pair else None, np.array(labels, dtype=dtype))


def ngrams(text: str, n: int) -> set[str]:
    words = _WORD.findall(text.lower())
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def validation_ngrams(tasks: Sequence[Task], n: int) -> set[str]:
    grams: set[str] = set()
    for task in tasks:
        for text in task.validation.first + (task.validation.second or []):
            grams |= ngrams(text, n)
    return grams


def stable_share(key: str, salt: str) -> float:
    """A number in [0, 1) fixed by `key`: splits never depend on order or process."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class PoolSplit:
    """The decontaminated pool, split into a generic share and the selection pool."""

    selection: Path
    generic: Path
    counts: dict = field(default_factory=dict)


def split_pool(
    pool: Path,
    work: Path,
    tasks: Sequence[Task],
    ngram: int,
    generic_share: float,
    max_documents: int = 0,
) -> PoolSplit:
    """Write work/pool/{selection,generic} once (byte copies of pool rows); counts in
    work/pool/split.json. Rows sharing an n-gram with a validation sentence go nowhere; with
    `max_documents`, a fixed hash-chosen subset of the rest is used (0: all)."""
    out = work / "pool"
    record = out / "split.json"
    result = PoolSplit(out / "selection", out / "generic")
    if record.is_file():
        result.counts = json.loads(record.read_text())
        return result
    grams = validation_ngrams(tasks, ngram)
    root = shard_root(pool)
    usable: list[tuple[float, str, int, str]] = []  # (hash share, shard, row, id)
    counts = {"documents": 0, "contaminated": 0, "skipped_rows": 0}
    shards = [s.relative_to(root).as_posix() for s in list_shards(pool)]
    for rel in shards:
        for doc in read_documents(root / rel, on_error="skip", root=root):
            if doc.error is not None:
                counts["skipped_rows"] += 1
                continue
            counts["documents"] += 1
            if grams and not grams.isdisjoint(ngrams(doc.text, ngram)):
                counts["contaminated"] += 1
                continue
            usable.append((stable_share(doc.id, "pool"), rel, doc.row, doc.id))
    if max_documents:
        usable = sorted(usable)[:max_documents]
    counts["used"] = len(usable)
    keep: dict[str, dict[str, list[int]]] = {"selection": {}, "generic": {}}
    for _, rel, row, doc_id in usable:
        part = "generic" if stable_share(doc_id, "generic") < generic_share else "selection"
        keep[part].setdefault(rel, []).append(row)
    counts.update({part: sum(map(len, rows.values())) for part, rows in keep.items()})
    if counts["selection"] == 0:
        raise CurateError(f"--pool {pool}: no usable documents left after decontamination")
    for part, rows in keep.items():
        by_shard = {rel: np.array(sorted(rows.get(rel, [])), np.int64) for rel in shards}
        write_rows(root, by_shard, out / part)
    counts["ngram"] = ngram
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps(counts, indent=2))
    result.counts = counts
    return result


@dataclass
class Targets:
    """The tasks' training sentences: a target for selection and a held-out evaluation set."""

    select_dir: Path  # shards of the sentences DSIR and rosetta-target aim at
    heldout: list[str]  # the fixed target-domain evaluation sentences


def split_targets(tasks: Sequence[Task], work: Path, heldout_share: float) -> Targets:
    out = work / "target"
    select_dir = out / "select"
    select, heldout = [], []
    for task in tasks:
        for i, text in enumerate(task.sentences):
            chosen = stable_share(f"{task.name}:{i}:{text}", "target") < heldout_share
            (heldout if chosen else select).append((f"{task.name}:{i}", text))
    shard = select_dir / "sentences.jsonl"
    if not shard.is_file():
        with atomic_path(shard) as tmp:
            tmp.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in select))
    return Targets(select_dir, [t for _, t in heldout])


def pack(
    token_lists: Iterable[Sequence[int]], tokenizer: PreTrainedTokenizerBase, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate documents (a [SEP] between them) into [CLS] ... [SEP] rows of `seq_len`
    (BOS ... EOS for a tokenizer without [CLS] and [SEP], as Llama's).

    Returns (ids int32 [n, seq_len], special bool [n, seq_len]); the stream wraps around to
    fill the last row, so no row is padded.
    """
    sep = tokenizer.eos_token_id if tokenizer.sep_token_id is None else tokenizer.sep_token_id
    cls = tokenizer.bos_token_id if tokenizer.cls_token_id is None else tokenizer.cls_token_id
    stream: list[int] = []
    for ids in token_lists:
        if len(ids):
            stream.extend(ids)
            stream.append(sep)
    width = seq_len - 2
    if not stream:
        raise CurateError("nothing to train on: the selection is empty")
    rows = max(1, -(-len(stream) // width))
    flat = np.resize(np.array(stream, dtype=np.int32), rows * width).reshape(rows, width)
    ids = np.concatenate(
        [np.full((rows, 1), cls, np.int32), flat, np.full((rows, 1), sep, np.int32)], axis=1
    )
    special = np.isin(ids, list(tokenizer.all_special_ids))
    return torch.from_numpy(ids), torch.from_numpy(special)


def token_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Content token ids per text (no special tokens), in batches."""
    out: list[list[int]] = []
    for start in range(0, len(texts), 512):
        batch = list(texts[start : start + 512])
        out += tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
    return out
