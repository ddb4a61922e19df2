"""The document stream every discovery pass reads: bounded by anchor tokens, split by a seeded hash.

Re-reading the shards on each pass, instead of caching documents, keeps memory independent of the
token budget. Each document comes with the anchor model's encoding (tokens and text spans), made
once when the budget counts it, so no pass tokenizes an anchor document twice.

For vision models a document is an image, decoded once per pass, and its units are the cells of a
`grid` x `grid` map that every model's feature maps are resampled to: the budget counts cells.
"""

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

from PIL import Image

from probes.discovery.align import EncodedDoc, encode
from probes.errors import CurateError, ShardError
from probes.formats import format_of
from probes.images import decode
from probes.models import LoadedModel
from probes.shards import dotted, list_shards, read_documents, shard_root

OPEN_SHARDS = 32  # shards read round-robin at once: a small budget still samples many sources
SPLITS = ("discovery", "heldout", "calibration")  # calibration: for a floor chosen from the null


@dataclass(frozen=True)
class CorpusDoc:
    id: str
    text: str
    label: str  # class for selectivity: the label key's value, else the shard's top folder
    split: str  # one of SPLITS
    n_tokens: int = 0  # anchor content tokens after truncation (grid cells for an image)
    encoded: EncodedDoc | None = None  # the anchor's encoding, cut to the corpus' doc_tokens
    image: Image.Image | None = field(default=None, compare=False, repr=False)  # decoded, RGB


class Corpus:
    """A bounded document stream that every pass reads again from the shards, in the same order.

    Documents go to the held-out (replication) and calibration (floor) splits by a seeded hash
    of their id, so the splits are disjoint and reproducible. The budget counts the anchor's
    content tokens (after truncation) over all splits, or for an image anchor the grid cells.

    `label_key` names the field that labels a document for selectivity (default: `label` for
    images, `metadata.source` for text); the shard's top folder stands in where it is missing.
    """

    def __init__(
        self,
        root: Path,
        anchor: LoadedModel,
        max_tokens: int,
        heldout: float = 0.2,
        seed: int = 0,
        label_key: str | None = None,
        text_key: str = "text",
        id_key: str = "id",
        on_error: str = "fail",
        doc_tokens: int | None = None,
        calibration: float = 0.0,
        grid: int = 7,
        image_key: str = "image",
    ):
        if not 0.0 <= heldout < 1.0:
            raise CurateError(f"held-out fraction must be in [0, 1), not {heldout}")
        if not 0.0 <= calibration < 1.0 - heldout:
            raise CurateError(
                f"calibration fraction must be in [0, {1 - heldout:g}) beside the held-out "
                f"{heldout:g}, not {calibration}"
            )
        if max_tokens < 1:
            raise CurateError(f"--max-tokens must be positive, not {max_tokens}")
        if grid < 1:
            raise CurateError(f"--grid must be at least 1, not {grid}")
        self.shards = list_shards(root)
        self.base = shard_root(root)
        self.anchor = anchor
        self.images = anchor.modality == "image"
        self.grid, self.image_key = grid, image_key
        # Cutting documents short spreads a token budget over more documents and sources.
        self.doc_tokens = (
            grid * grid if self.images else min(anchor.max_length, doc_tokens or anchor.max_length)
        )
        self.max_tokens = max_tokens
        self.heldout = heldout
        self.calibration = calibration
        self.seed = seed
        self.label_key = label_key or ("label" if self.images else "metadata.source")
        self.text_key, self.id_key, self.on_error = text_key, id_key, on_error
        self.fingerprint: str | None = None  # known after the first complete read
        self.tokens: Counter = Counter()  # content tokens per split, ditto
        self.docs: Counter = Counter()
        self.skipped = 0
        self._skipped = 0

    def __iter__(self) -> Iterator[CorpusDoc]:
        digest = hashlib.sha256()
        for shard in self.shards:
            rel = shard.relative_to(self.base).as_posix()
            digest.update(f"{rel}\t{format_of(shard).signature(shard)[0]}\n".encode())
        tokens, docs, total = Counter(), Counter(), 0
        self._skipped = 0
        stream = self._round_robin()
        while total < self.max_tokens and (group := list(islice(stream, 64))):
            for doc in self._counted(group):
                if doc.n_tokens == 0 or total >= self.max_tokens:
                    continue
                total += doc.n_tokens
                tokens[doc.split] += doc.n_tokens
                docs[doc.split] += 1
                digest.update(f"{doc.id}\n".encode())
                yield doc
        self.fingerprint = digest.hexdigest()
        self.tokens, self.docs, self.skipped = tokens, docs, self._skipped

    def _counted(self, group: list[CorpusDoc]) -> Iterator[CorpusDoc]:
        """The group with its unit counts: the anchor's encoding, or the grid of a decoded image."""
        if self.images:
            yield from (replace(d, n_tokens=self.doc_tokens) for d in group)
            return
        encoded = encode(self.anchor.tokenizer, [d.text for d in group], self.doc_tokens)
        for doc, enc in zip(group, encoded, strict=True):
            yield replace(doc, n_tokens=len(enc.doc.ids) - sum(enc.doc.special), encoded=enc)

    def _round_robin(self) -> Iterator[CorpusDoc]:
        pending = iter(self.shards)
        active = [self._shard_docs(s) for s in islice(pending, OPEN_SHARDS)]
        while active:
            for reader in list(active):
                doc = next(reader, None)
                if doc is None:
                    active.remove(reader)
                    if (shard := next(pending, None)) is not None:
                        active.append(self._shard_docs(shard))
                else:
                    yield doc

    def _shard_docs(self, shard: Path) -> Iterator[CorpusDoc]:
        rel = shard.relative_to(self.base)
        fallback = rel.parts[0] if len(rel.parts) > 1 else shard.name.split(".")[0]
        image_key = self.image_key if self.images else None
        keys = (self.text_key, self.id_key, self.on_error, self.base, image_key)
        for doc in read_documents(shard, *keys):
            decoded = decode(doc.media) if doc.error is None and self.images else None
            if doc.error is not None or (decoded is not None and decoded.error is not None):
                if doc.error is None and self.on_error == "fail":
                    raise ShardError(str(shard), doc.row + 1, decoded.error)
                self._skipped += 1
                continue
            label = dotted(doc.record, self.label_key) or fallback
            image = decoded.image if decoded is not None else None
            yield CorpusDoc(doc.id, doc.text, label, self._split(doc.id), image=image)

    def _split(self, doc_id: str) -> str:
        h = hashlib.sha256(f"{self.seed}:{doc_id}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        if u < self.heldout:
            return "heldout"
        return "calibration" if u < self.heldout + self.calibration else "discovery"

    def fraction(self, split: str) -> float:
        """The expected share of the budget in `split`."""
        shares = {"heldout": self.heldout, "calibration": self.calibration}
        return shares.get(split, 1.0 - self.heldout - self.calibration)


def anchor_encodings(docs: Sequence[CorpusDoc]) -> list[EncodedDoc]:
    """The anchor encodings that `docs` (read from a Corpus) carry, numbered by position in
    `docs`, as `encode` would number them."""
    return [EncodedDoc(replace(d.encoded.doc, pos=i), d.encoded.spans) for i, d in enumerate(docs)]
