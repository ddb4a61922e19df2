"""Rosetta-neuron discovery: streaming Pearson correlation, mutual best buddies, significance.

Pass 1 reads the discovery split for per-neuron mean and variance (Welford/Chan, float64).
Pass 2 reads it again and accumulates z_A^T z_B per partner layer block: float32 matrix products
added into float64 sums, so memory depends on the neuron counts only and the sums stay exact far
beyond 10M tokens. Mutual best buddies alone are mostly noise, so a neuron is kept only if its
buddy correlation clears a floor, beats a null computed the same way against randomly rotated
partner layers, and replicates on a disjoint held-out document split (pass 3).
"""

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoModel

from probes.align import EncodedDoc, align, encode
from probes.batching import length_sorted_batches, pad, tokenize
from probes.capture import ActivationSource
from probes.errors import CurateError
from probes.families import family
from probes.hooks import mlp_width, n_layers
from probes.models import LoadedModel
from probes.selectivity import NeuronStats
from probes.shards import iter_raw_rows, list_shards, read_documents, shard_root

OPEN_SHARDS = 32  # shards read round-robin at once: a small budget still samples many sources
WINDOW_BATCHES = 8  # documents are length-sorted within windows of this many batches


# ---------------------------------------------------------------------------- corpus stream


@dataclass(frozen=True)
class CorpusDoc:
    id: str
    text: str
    label: str  # class for selectivity: the label key's value, else the shard's top folder
    heldout: bool
    n_tokens: int = 0  # anchor content tokens after truncation


class Corpus:
    """A bounded document stream that every pass reads again from the shards, in the same order.

    Re-reading instead of caching keeps memory independent of the token budget. Documents go to
    the held-out split by a seeded hash of their id, so the split is disjoint and reproducible.
    The budget counts the anchor's content tokens (after truncation) over both splits.
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
    ):
        if not 0.0 <= heldout < 1.0:
            raise CurateError(f"held-out fraction must be in [0, 1), not {heldout}")
        if max_tokens < 1:
            raise CurateError(f"--max-tokens must be positive, not {max_tokens}")
        self.shards = list_shards(root)
        self.base = shard_root(root)
        self.anchor = anchor
        # Cutting documents short spreads a token budget over more documents and sources.
        self.doc_tokens = min(anchor.max_length, doc_tokens or anchor.max_length)
        self.max_tokens = max_tokens
        self.heldout = heldout
        self.seed = seed
        self.label_key = label_key.split(".")
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
            tokenized = tokenize(self.anchor.tokenizer, [d.text for d in group], self.doc_tokens)
            for doc, tok in zip(group, tokenized, strict=True):
                n = len(tok.ids) - sum(tok.special)
                if n == 0 or total >= self.max_tokens:
                    continue
                total += n
                split = "heldout" if doc.heldout else "discovery"
                tokens[split] += n
                docs[split] += 1
                digest.update(f"{doc.id}\n".encode())
                yield replace(doc, n_tokens=n)
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
        raw = iter_raw_rows(shard)
        raw_row = -1
        record: bytes | dict = b""
        for doc in read_documents(shard, self.text_key, self.id_key, self.on_error, self.base):
            if doc.error is not None:
                self._skipped += 1
                continue
            while raw_row < doc.row:
                raw_row, record = next(raw)
            yield CorpusDoc(
                doc.id, doc.text, self._label(record) or fallback, self._is_heldout(doc.id)
            )

    def _label(self, record: bytes | dict) -> str | None:
        value: object = json.loads(record) if isinstance(record, bytes) else record
        for key in self.label_key:
            value = value.get(key) if isinstance(value, dict) else None
        return str(value) if value is not None else None

    def _is_heldout(self, doc_id: str) -> bool:
        h = hashlib.sha256(f"{self.seed}:{doc_id}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64 < self.heldout


# ---------------------------------------------------------------------------- aligned batches


def full_source(loaded: LoadedModel, layers: Sequence[int] | None) -> ActivationSource:
    """All MLP neurons of `layers` (default: every layer)."""
    depth = n_layers(loaded.model, loaded.family)
    chosen = range(depth) if layers is None else layers
    bad = [layer for layer in chosen if not 0 <= layer < depth]
    if bad:
        raise CurateError(f"layers {bad} do not exist in {loaded.name} ({depth} layers)")
    return ActivationSource(loaded, {layer: None for layer in chosen})


def aligned_batches(
    corpus: Corpus,
    sources: Sequence[ActivationSource],
    heldout: bool,
    tokens_per_batch: int,
    desc: str,
) -> Iterator[tuple[list[torch.Tensor], list[str]]]:
    """Per batch: each model's float32 [units, neurons] activations, and each unit's label."""
    expected = corpus.max_tokens * (corpus.heldout if heldout else 1 - corpus.heldout)
    with tqdm(total=int(expected), desc=desc, unit="tok", unit_scale=True, leave=False) as bar:
        window: list[CorpusDoc] = []
        for doc in corpus:
            if doc.heldout != heldout:
                continue
            window.append(doc)
            if sum(d.n_tokens for d in window) >= WINDOW_BATCHES * tokens_per_batch:
                yield from _window_batches(
                    window, sources, corpus.doc_tokens, tokens_per_batch, bar
                )
                window = []
        if window:
            yield from _window_batches(window, sources, corpus.doc_tokens, tokens_per_batch, bar)


def _window_batches(
    window: list[CorpusDoc],
    sources: Sequence[ActivationSource],
    doc_tokens: int,
    tokens_per_batch: int,
    bar: tqdm,
) -> Iterator[tuple[list[torch.Tensor], list[str]]]:
    texts = [d.text for d in window]
    encoded = [
        encode(s.loaded.tokenizer, texts, min(s.loaded.max_length, doc_tokens)) for s in sources
    ]
    anchor = [e.doc for e in encoded[0] if len(e.doc.ids) > sum(e.doc.special)]
    for batch in length_sorted_batches(anchor, tokens_per_batch):
        docs = [[enc[d.pos] for d in batch] for enc in encoded]
        flats, widths = [], []
        for source, model_docs in zip(sources, docs, strict=True):
            flat, width = _capture_flat(source, model_docs)
            flats.append(flat)
            widths.append(width)
        alignment = align(docs, widths)
        pooled = [alignment.pool(m, flat) for m, flat in enumerate(flats)]
        labels = [window[batch[d].pos].label for d in alignment.unit_doc.tolist()]
        if alignment.n_units:
            yield pooled, labels
        bar.update(sum(len(d.ids) - sum(d.special) for d in batch))  # after the consumer's work


def _capture_flat(source: ActivationSource, docs: Sequence[EncodedDoc]) -> tuple[torch.Tensor, int]:
    """[docs * width, neurons of all requested layers] float32 activations, and the width."""
    input_ids, attention, _ = pad([d.doc for d in docs], source.loaded.pad_id)
    layers = source.capture(input_ids, attention)
    flat = torch.cat([a.reshape(-1, a.shape[-1]).float() for a in layers.values()], dim=1)
    return flat, input_ids.shape[1]


# ---------------------------------------------------------------------------- streaming statistics


class Moments:
    """Per-neuron mean and variance, each batch merged exactly into float64 (Chan et al.)."""

    def __init__(self, n: int):
        self.count = 0
        self.mean = torch.zeros(n, dtype=torch.float64)
        self.m2 = torch.zeros(n, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        n_b = x.shape[0]
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0).double()
        delta = mean_b.double() - self.mean
        total = self.count + n_b
        self.mean += delta * (n_b / total)
        self.m2 += m2_b + delta**2 * (self.count * n_b / total)
        self.count = total

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / max(self.count, 1)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """z-scores in float32; a neuron without variance gets 0 (it correlates with nothing)."""
        std = self.var.sqrt()
        inv = torch.where(std > 1e-6, 1.0 / std.clamp(min=1e-6), torch.zeros_like(std))
        return (x - self.mean.float()) * inv.float()


def random_rotation(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal n x n matrix (QR of a Gaussian, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


class CrossCorrelation:
    """sum_t z_A z_B^T per partner layer block, plus what the rotated-basis null needs.

    The null rotates each partner layer's z-scores by a random orthogonal R: the rotated
    neurons' cross sums are S R, computed once at the end, and their variances need only the
    streamed squares of z_B R.
    """

    def __init__(self, n_anchor: int, n_layers: int, width: int, generator: torch.Generator):
        self.width = width
        self.sums = torch.zeros((n_anchor, n_layers * width), dtype=torch.float64)
        self.rotations = [random_rotation(width, generator) for _ in range(n_layers)]
        self.rotated_sq = torch.zeros(n_layers * width, dtype=torch.float64)

    def update(self, z_anchor_t: torch.Tensor, z_partner: torch.Tensor) -> None:
        for layer, rotation in enumerate(self.rotations):
            block = slice(layer * self.width, (layer + 1) * self.width)
            z_block = z_partner[:, block]
            self.sums[:, block] += z_anchor_t @ z_block
            self.rotated_sq[block] += ((z_block @ rotation) ** 2).sum(0)

    def blocks(self, count: int, rotated: bool) -> Iterator[tuple[slice, torch.Tensor]]:
        """(partner columns, float32 Pearson correlations [anchor, width]) per partner layer."""
        for layer, rotation in enumerate(self.rotations):
            block = slice(layer * self.width, (layer + 1) * self.width)
            corr = (self.sums[:, block] / count).float()
            if rotated:
                std = (self.rotated_sq[block] / count).sqrt().float()
                corr = (corr @ rotation) / std.clamp(min=1e-6)
            yield block, corr


@dataclass
class Matches:
    buddy: torch.Tensor  # [anchor] partner neuron (flat index) or -1
    corr: torch.Tensor  # [anchor] correlation with the buddy (NaN without one)
    best: torch.Tensor  # [anchor] best correlation with any partner neuron


def mutual_top_k(blocks: Iterator[tuple[slice, torch.Tensor]], n_anchor: int, k: int) -> Matches:
    """Anchor i and partner j are buddies if each is in the other's top k (k=1: best buddies);
    an anchor neuron's buddy is its most correlated such partner."""
    row_val = torch.full((n_anchor, k), -math.inf)
    row_idx = torch.zeros((n_anchor, k), dtype=torch.long)
    col_top = []
    for block, corr in blocks:
        val, idx = corr.topk(min(k, corr.shape[1]), dim=1)
        merged_val = torch.cat([row_val, val], dim=1)
        merged_idx = torch.cat([row_idx, idx + block.start], dim=1)
        row_val, order = merged_val.topk(k, dim=1)
        row_idx = merged_idx.gather(1, order)
        col_top.append(corr.topk(min(k, n_anchor), dim=0).indices)  # [k, width]
    col = torch.cat(col_top, dim=1)  # [k, partner]
    mutual = (col[:, row_idx] == torch.arange(n_anchor).view(1, -1, 1)).any(0)  # [anchor, k]
    mutual &= torch.isfinite(row_val)
    first = torch.where(mutual.any(1), mutual.float().argmax(1), -1)
    has = first >= 0
    pick = first.clamp(min=0).unsqueeze(1)
    buddy = torch.where(has, row_idx.gather(1, pick).squeeze(1), -1)
    corr = torch.where(has, row_val.gather(1, pick).squeeze(1), math.nan)
    return Matches(buddy=buddy, corr=corr, best=row_val[:, 0])


# ---------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Settings:
    min_corr: float = 0.5
    top_k: int = 1
    replicate: float = 0.75  # held-out correlation must reach this fraction of the discovery one
    null_quantile: float = 0.99
    seed: int = 0
    tokens_per_batch: int = 4096
    layers: tuple[int, ...] | None = None


@dataclass
class PartnerResult:
    model: LoadedModel
    layers: list[int]
    width: int
    matches: Matches
    null: Matches
    null_threshold: float  # quantile of the null buddies' correlations
    heldout_corr: torch.Tensor  # [anchor]; NaN where not measured
    passes_floor: torch.Tensor
    passes_null: torch.Tensor
    passes_replication: torch.Tensor

    def neuron(self, flat: int) -> tuple[int, int]:
        """(layer, index) of a flat partner column."""
        return self.layers[flat // self.width], flat % self.width


@dataclass
class Discovery:
    anchor: LoadedModel
    anchor_layers: list[int]
    anchor_width: int
    partners: list[PartnerResult]
    rosetta: torch.Tensor  # anchor flat indices, best first
    mean_corr: torch.Tensor  # [anchor] mean buddy correlation over partners
    anchor_mean: torch.Tensor
    anchor_std: torch.Tensor
    stats: dict[str, torch.Tensor]
    classes: list[str]
    tokens: dict[str, int]
    units: dict[str, int]
    settings: Settings
    null_run: dict = field(default_factory=dict)

    def neuron(self, flat: int) -> tuple[int, int]:
        return self.anchor_layers[flat // self.anchor_width], flat % self.anchor_width


def discover(models: Sequence[LoadedModel], corpus: Corpus, settings: Settings) -> Discovery:
    """Find the anchor (models[0]) neurons with a significant, replicated buddy in every partner."""
    if len(models) < 2:
        raise CurateError("discovery needs an anchor and at least one partner model")
    if settings.top_k < 1:
        raise CurateError(f"--top-k must be at least 1, not {settings.top_k}")
    sources = [full_source(m, settings.layers) for m in models]
    widths = [mlp_width(m.model, m.family) for m in models]
    sizes = [len(s.requests) * w for s, w in zip(sources, widths, strict=True)]
    generator = torch.Generator().manual_seed(settings.seed)

    moments = [Moments(n) for n in sizes]
    units = Counter()
    for acts, _ in aligned_batches(corpus, sources, False, settings.tokens_per_batch, "pass 1/3"):
        units["discovery"] += acts[0].shape[0]
        for moment, x in zip(moments, acts, strict=True):
            moment.update(x)
    if units["discovery"] < 2:
        raise CurateError("the discovery split has fewer than 2 aligned tokens; raise --max-tokens")
    count = units["discovery"]

    cross = [
        CrossCorrelation(sizes[0], len(s.requests), w, generator)
        for s, w in zip(sources[1:], widths[1:], strict=True)
    ]
    stats = NeuronStats(sizes[0])
    for acts, labels in aligned_batches(
        corpus, sources, False, settings.tokens_per_batch, "pass 2/3"
    ):
        z = [m.standardize(x) for m, x in zip(moments, acts, strict=True)]
        z_anchor_t = z[0].T.contiguous()
        for acc, z_partner in zip(cross, z[1:], strict=True):
            acc.update(z_anchor_t, z_partner)
        stats.update(acts[0], z[0], labels)

    partners = []
    for acc, source, width in zip(cross, sources[1:], widths[1:], strict=True):
        matches = mutual_top_k(acc.blocks(count, rotated=False), sizes[0], settings.top_k)
        null = mutual_top_k(acc.blocks(count, rotated=True), sizes[0], settings.top_k)
        null_corrs = null.corr[torch.isfinite(null.corr)]
        threshold = (
            float(torch.quantile(null_corrs.double(), settings.null_quantile))
            if len(null_corrs)
            else float(null.best.max())
        )
        passes_floor = matches.corr >= settings.min_corr
        passes_null = (matches.corr > threshold) & (matches.corr > null.best)
        partners.append(
            PartnerResult(
                model=source.loaded,
                layers=list(source.requests),
                width=width,
                matches=matches,
                null=null,
                null_threshold=threshold,
                heldout_corr=torch.full((sizes[0],), math.nan),
                passes_floor=passes_floor,
                passes_null=passes_null,
                passes_replication=torch.zeros(sizes[0], dtype=torch.bool),
            )
        )
    del cross

    candidates = torch.stack([p.passes_floor & p.passes_null for p in partners]).all(0)
    candidates = candidates.nonzero().squeeze(1)
    units["heldout"] = _replicate(corpus, sources, moments, partners, candidates, settings)
    if len(candidates) and units["heldout"] < 2:
        raise CurateError(
            "the held-out split has fewer than 2 aligned tokens, so nothing can replicate; "
            "raise --max-tokens or --heldout, or lower --doc-tokens to read more documents"
        )
    for p in partners:
        p.passes_replication = p.heldout_corr >= settings.replicate * p.matches.corr
    keep = torch.stack(
        [p.passes_floor & p.passes_null & p.passes_replication for p in partners]
    ).all(0)
    mean_corr = torch.stack([p.matches.corr for p in partners]).mean(0)
    rosetta = keep.nonzero().squeeze(1)
    rosetta = rosetta[mean_corr[rosetta].argsort(descending=True)]
    result = stats.result()
    return Discovery(
        anchor=models[0],
        anchor_layers=list(sources[0].requests),
        anchor_width=widths[0],
        partners=partners,
        rosetta=rosetta,
        mean_corr=mean_corr,
        anchor_mean=moments[0].mean.float(),
        anchor_std=moments[0].var.sqrt().float(),
        stats=result,
        classes=list(stats.classes),
        tokens=dict(corpus.tokens),
        units=dict(units),
        settings=settings,
    )


def _replicate(
    corpus: Corpus,
    sources: Sequence[ActivationSource],
    moments: Sequence[Moments],
    partners: Sequence[PartnerResult],
    candidates: torch.Tensor,
    settings: Settings,
) -> int:
    """Pass 3: Pearson correlation of each candidate pair on the held-out documents only.

    Sums are shifted by the discovery means, so the one-pass formula does not cancel badly.
    """
    if len(candidates) == 0 or corpus.heldout == 0:
        return 0
    pairs = [(candidates, p.matches.buddy[candidates]) for p in partners]
    sums = torch.zeros((len(partners), 5, len(candidates)), dtype=torch.float64)
    n = 0
    for acts, _ in aligned_batches(corpus, sources, True, settings.tokens_per_batch, "pass 3/3"):
        n += acts[0].shape[0]
        a = (acts[0][:, candidates] - moments[0].mean[candidates].float()).double()
        for p, (_, buddies) in enumerate(pairs):
            b = (acts[p + 1][:, buddies] - moments[p + 1].mean[buddies].float()).double()
            sums[p] += torch.stack([a, b, a * a, b * b, a * b]).sum(1)
    if n < 2:
        return n
    mean_a, mean_b, sq_a, sq_b, ab = (sums / n).unbind(1)
    var = ((sq_a - mean_a**2) * (sq_b - mean_b**2)).clamp(min=1e-24)
    corr = ((ab - mean_a * mean_b) / var.sqrt()).float()
    for p, partner in enumerate(partners):
        partner.heldout_corr[candidates] = corr[p]
    return n


def random_copy(loaded: LoadedModel, seed: int) -> LoadedModel:
    """A randomly initialised model of the same architecture and tokenizer (no download)."""
    torch.manual_seed(seed)
    config = loaded.model.config
    model = AutoModel.from_config(config, attn_implementation=family(loaded.family).attention)
    model = model.to(next(loaded.model.parameters()).dtype).eval()
    tag = hashlib.sha256(f"{loaded.content_hash}:random:{seed}".encode()).hexdigest()[:16]
    return LoadedModel(
        name=f"{loaded.name} (random init, seed {seed})",
        path=loaded.path,
        family=loaded.family,
        model=model,
        tokenizer=loaded.tokenizer,
        content_hash=tag,
        max_length=loaded.max_length,
    )


def null_rate(discovery: Discovery, corpus: Corpus, partner: int = 0) -> dict:
    """Rerun the whole pipeline against a random-init copy of one partner; count what it finds.

    One partner only (the first by default) makes the null run as lenient as possible.
    """
    real = discovery.partners[partner].model
    fake = random_copy(real, discovery.settings.seed)
    rerun = discover([discovery.anchor, fake], corpus, discovery.settings)
    found = len(rerun.rosetta)
    return {
        "partner": fake.name,
        "rosetta": found,
        "rate": found / max(len(discovery.rosetta), 1),
        "null_threshold": rerun.partners[0].null_threshold,
    }
