"""The document stream every discovery pass reads: bounded by anchor tokens, split by a seeded hash.

Re-reading the shards on each pass, instead of caching documents, keeps memory independent of the
token budget. Each document comes with the anchor model's encoding (tokens and text spans), made
once when the budget counts it, so no pass tokenizes an anchor document twice.
"""

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

from probes.discovery.align import EncodedDoc, encode
from probes.errors import CurateError
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
    n_tokens: int = 0  # anchor content tokens after truncation
    encoded: EncodedDoc | None = None  # the anchor's encoding, cut to the corpus' doc_tokens


class Corpus:
    """A bounded document stream that every pass reads again from the shards, in the same order.

    Documents go to the held-out (replication) and calibration (floor) splits by a seeded hash
    of their id, so the splits are disjoint and reproducible. The budget counts the anchor's
    content tokens (after truncation) over all splits.
    """

    def __init__(
        self,
        root: Path,
        anchor: LoadedModel,
        max_tokens: int,
        heldout: float = 0.2,
        seed: int = 0,
        label_key: str = "metadata.source",
        text_key: str = "text",
        id_key: str = "id",
        on_error: str = "fail",
        doc_tokens: int | None = None,
        calibration: float = 0.0,
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
        self.shards = list_shards(root)
        self.base = shard_root(root)
        self.anchor = anchor
        # Cutting documents short spreads a token budget over more documents and sources.
        self.doc_tokens = min(anchor.max_length, doc_tokens or anchor.max_length)
        self.max_tokens = max_tokens
        self.heldout = heldout
        self.calibration = calibration
        self.seed = seed
        self.label_key = label_key
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
            digest.update(f"{rel}\t{shard.stat().st_size}\n".encode())
        tokens, docs, total = Counter(), Counter(), 0
        self._skipped = 0
        stream = self._round_robin()
        while total < self.max_tokens and (group := list(islice(stream, 64))):
            encoded = encode(self.anchor.tokenizer, [d.text for d in group], self.doc_tokens)
            for doc, enc in zip(group, encoded, strict=True):
                n = len(enc.doc.ids) - sum(enc.doc.special)
                if n == 0 or total >= self.max_tokens:
                    continue
                total += n
                tokens[doc.split] += n
                docs[doc.split] += 1
                digest.update(f"{doc.id}\n".encode())
                yield replace(doc, n_tokens=n, encoded=enc)
        self.fingerprint = digest.hexdigest()
        self.tokens, self.docs, self.skipped = tokens, docs, self._skipped

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
        for doc in read_documents(shard, self.text_key, self.id_key, self.on_error, self.base):
            if doc.error is not None:
                self._skipped += 1
                continue
            label = dotted(doc.record, self.label_key) or fallback
            yield CorpusDoc(doc.id, doc.text, label, self._split(doc.id))

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
