"""ImageNet top-1 of a vision model on an ImageNet-layout folder (`<wnid>/<image>`), read with
the tool's own ImageFolder reader and the model's own preprocessing.

A class's index is its row in the folder's `classes.tsv` (columns `index`, `wnid`) when there is
one, else its position among the folder names in sorted order (the ImageNet-1k convention, so
the folder must then hold every class the model's head has).
"""

import csv
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch
from tqdm import tqdm

from probes.errors import CurateError
from probes.images import decode, prepare
from probes.models import LoadedModel
from probes.shards import chunked, list_shards, read_documents, shard_root

BATCH_IMAGES = 32


@dataclass(frozen=True)
class Top1:
    correct: int
    images: int
    unreadable: int  # images that did not decode (not counted in `images`)

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else float("nan")


def class_index(folder: Path, classes: list[str], n_logits: int) -> dict[str, int]:
    """wnid -> the model's output index."""
    table = folder / "classes.tsv"
    if table.is_file():
        with open(table, newline="") as f:
            index = {r["wnid"]: int(r["index"]) for r in csv.DictReader(f, delimiter="\t")}
        missing = sorted(set(classes) - set(index))
        if missing:
            raise CurateError(f"{table} does not list the class folders {', '.join(missing[:5])}")
        return index
    if len(classes) != n_logits:
        raise CurateError(
            f"{folder} has {len(classes)} class folders but the model has {n_logits} outputs; "
            "add a classes.tsv (index, wnid) that maps the folders to the model's classes"
        )
    return {wnid: i for i, wnid in enumerate(sorted(classes))}


def top1(loaded: LoadedModel, folder: Path, progress: bool = True) -> Top1:
    """Top-1 of `loaded` over every image under `folder`."""
    if loaded.image is None:
        raise CurateError(f"{loaded.name} is a text model; top-1 needs an image classifier")
    shards = list_shards(folder)
    root = shard_root(folder)
    index: dict[str, int] | None = None
    correct = images = unreadable = 0
    with torch.inference_mode(), tqdm(unit="img", desc="top-1", disable=not progress) as bar:
        docs = chain.from_iterable(read_documents(s, image_key="image", root=root) for s in shards)
        for chunk in chunked(docs, BATCH_IMAGES):
            decoded = [decode(doc.media) for doc in chunk]
            labels = [doc.record["label"] for doc, d in zip(chunk, decoded, strict=True) if d.image]
            unreadable += len(chunk) - len(labels)
            bar.update(len(chunk))
            if not labels:
                continue
            pixels = prepare([d.image for d in decoded if d.image], loaded.image)
            logits = loaded.model(pixel_values=pixels.to(_dtype(loaded)))
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                raise CurateError(f"{loaded.name} gives no class logits (no ImageNet head)")
            if index is None:
                index = class_index(root, [s.name for s in shards], logits.shape[1])
            truth = torch.tensor([index[label] for label in labels])
            correct += int((logits.argmax(1).cpu() == truth).sum())
            images += len(labels)
    return Top1(correct, images, unreadable)


def _dtype(loaded: LoadedModel) -> torch.dtype:
    return next(loaded.model.parameters()).dtype
