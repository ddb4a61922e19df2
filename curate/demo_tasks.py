"""A built-in task for the demo's bench: which part of Python's help text a sentence is from.

Sentences from a quarter of the demo documents (chosen by a hash of the id) are labelled 1 for
pydoc help topics and 0 for standard-library docstrings, in the Hugging Face glue schema
(`sentence`, `label`), split 80/20 into train and validation. It needs no download, and the
bench's decontamination removes the documents its validation sentences came from.
"""

import json
import re
from pathlib import Path

from curate.cpt.data import stable_share
from probes.atomic import atomic_path
from probes.shards import list_shards, read_documents, shard_root

TASK = "help-source"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def build_demo_tasks(shards: Path, out_dir: Path) -> Path:
    """Write out_dir/help-source/{train,validation}.jsonl once; returns out_dir."""
    folder = out_dir / TASK
    if (folder / "validation.jsonl").is_file():
        return out_dir
    root = shard_root(shards)
    rows: dict[str, list[str]] = {"train": [], "validation": []}
    for shard in list_shards(shards):
        label = int(shard.relative_to(root).parts[0] == "topics")
        for doc in read_documents(shard, root=root):
            if stable_share(doc.id, "demo-task") >= 0.25:
                continue
            for i, sentence in enumerate(_SENTENCE.split(doc.text)):
                words = sentence.split()
                if 6 <= len(words) <= 40:
                    split = (
                        "validation" if stable_share(f"{doc.id}:{i}", "split") < 0.2 else "train"
                    )
                    rows[split].append(json.dumps({"sentence": " ".join(words), "label": label}))
    for split, lines in rows.items():
        with atomic_path(folder / f"{split}.jsonl") as tmp:
            tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out_dir
