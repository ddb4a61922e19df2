"""One discovery run: the passes over the corpus, the Rosetta decision, the artifact it makes.

Pass 1 reads the discovery split for per-neuron mean and variance; pass 2 reads it again and
accumulates the cross sums per partner layer block (`stream`); buddies are paired by mutual top-k
(`match`) and kept only past the significance controls (`controls`); pass 3 reads the held-out
split for replication. Each pass streams aligned batches: every model's activations pooled to
the text units all tokenizers cut at (`align`). The result becomes a neuron-set artifact here, so
the artifact format itself (`probes.neuronset`) never depends on discovery.
"""

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import torch
from tqdm import tqdm

from probes.batching import length_sorted_batches, pad
from probes.capture import ActivationCapture
from probes.discovery.align import Alignment, align, encode
from probes.discovery.controls import (
    floor_for_null_rate,
    heldout_corr,
    null_threshold,
    random_copy,
)
from probes.discovery.corpus import Corpus, CorpusDoc, anchor_encodings
from probes.discovery.match import Matches, mutual_top_k
from probes.discovery.screen import ScreenSettings, Verifier, screen
from probes.discovery.selectivity import NeuronStats
from probes.discovery.stream import CrossCorrelation, Moments, shift_
from probes.errors import CurateError
from probes.hooks import hook_name, layer_widths
from probes.images import prepare
from probes.models import LoadedModel
from probes.neuronset import FORMAT, FORMAT_VERSION, STAT_KEYS, NeuronArtifact
from probes.version import TOOL_VERSION

WINDOW_BATCHES = 8  # documents are length-sorted within windows of this many batches
SAMPLE_FEED_UNITS = 1024  # units per slice when the buffered sample is fed to the verifiers
THRESHOLD_STDS = 2.0  # a Rosetta neuron's probe threshold: mean + 2 std of its activation
STORED_CLASSES = 64  # class means are written to the artifact up to this many classes


# ---------------------------------------------------------------------------- aligned batches


def full_capture(loaded: LoadedModel, layers: Sequence[int] | None) -> ActivationCapture:
    """All neurons of `layers`: by default every layer, or where layers differ in width (a
    convolution net's blocks) every layer of the widest width, since the statistics index
    neurons as layer x width."""
    widths = layer_widths(loaded.model, loaded.model_type)
    depth = len(widths)
    chosen = [i for i, w in enumerate(widths) if w == max(widths)] if layers is None else layers
    bad = [layer for layer in chosen if not 0 <= layer < depth]
    if bad:
        raise CurateError(f"layers {bad} do not exist in {loaded.name} ({depth} layers)")
    if len({widths[layer] for layer in chosen}) > 1:
        shown = ", ".join(f"{layer}: {widths[layer]}" for layer in chosen)
        raise CurateError(
            f"the layers of {loaded.name} given to --layers differ in width ({shown}); "
            "give layers of one width"
        )
    return ActivationCapture(loaded, {layer: None for layer in chosen})


def capture_width(capture: ActivationCapture) -> int:
    """The neurons per layer of a full capture (all its layers have one width)."""
    loaded = capture.loaded
    return layer_widths(loaded.model, loaded.model_type)[next(iter(capture.requests))]


def aligned_batches(
    corpus: Corpus,
    captures: Sequence[ActivationCapture],
    split: str,
    tokens_per_batch: int,
    desc: str,
) -> Iterator[tuple[list[torch.Tensor], list[str]]]:
    """Per batch of `split`'s documents: each model's float32 activations, neuron-major
    ([neurons of every captured layer, units]; the consumer may change them in place), and each
    unit's label.

    `captures[0]` is the corpus anchor: its documents arrive already encoded.
    """
    if captures[0].loaded is not corpus.anchor:
        raise ValueError("the first capture must be the corpus anchor's")
    expected = corpus.max_tokens * corpus.fraction(split)
    # Images need no length sorting: each window is one batch, so few decoded images are held.
    window_tokens = tokens_per_batch if corpus.images else WINDOW_BATCHES * tokens_per_batch
    batches = _image_batches if corpus.images else _window_batches
    unit = "cell" if corpus.images else "tok"
    with tqdm(total=int(expected), desc=desc, unit=unit, unit_scale=True, leave=False) as bar:
        window: list[CorpusDoc] = []
        for doc in corpus:
            if doc.split != split:
                continue
            window.append(doc)
            if sum(d.n_tokens for d in window) >= window_tokens:
                yield from batches(window, captures, corpus, tokens_per_batch, bar)
                window = []
        if window:
            yield from batches(window, captures, corpus, tokens_per_batch, bar)


def _window_batches(
    window: list[CorpusDoc],
    captures: Sequence[ActivationCapture],
    corpus: Corpus,
    tokens_per_batch: int,
    bar: tqdm,
) -> Iterator[tuple[list[torch.Tensor], list[str]]]:
    texts = [d.text for d in window]
    encoded = [anchor_encodings(window)] + [
        encode(c.loaded.tokenizer, texts, min(c.loaded.max_length, corpus.doc_tokens))
        for c in captures[1:]
    ]
    for batch in length_sorted_batches([e.doc for e in encoded[0]], tokens_per_batch):
        docs = [[enc[d.pos] for d in batch] for enc in encoded]
        captured, widths = [], []
        for capture, model_docs in zip(captures, docs, strict=True):
            input_ids, attention, _ = pad([d.doc for d in model_docs], capture.loaded.pad_id)
            captured.append(
                list(capture.capture(input_ids=input_ids, attention_mask=attention).values())
            )
            widths.append(input_ids.shape[1])
        alignment = align(docs, widths)
        pooled = [alignment.pool(m, layers) for m, layers in enumerate(captured)]
        del captured  # the model-dtype activations go before the consumer's work
        labels = [window[batch[d].pos].label for d in alignment.unit_doc.tolist()]
        if alignment.n_units:
            yield pooled, labels
        bar.update(sum(len(d.ids) - sum(d.special) for d in batch))  # after the consumer's work


def _image_batches(
    window: list[CorpusDoc],
    captures: Sequence[ActivationCapture],
    corpus: Corpus,
    tokens_per_batch: int,
    bar: tqdm,
) -> Iterator[tuple[list[torch.Tensor], list[str]]]:
    """One batch of images: each model sees them in its own preprocessing, and every captured map
    is resampled (area mean) to the corpus grid, so cell k of an image is one unit in every
    model."""
    images = [d.image for d in window]
    cells = corpus.grid * corpus.grid
    pooled = []
    for capture in captures:
        model = capture.loaded
        dtype = next(model.model.parameters()).dtype
        pixels = prepare(images, model.image).to(dtype)
        maps = capture.capture(pixel_values=pixels).values()
        on_grid = [on_common_grid(acts, corpus.grid) for acts in maps]
        n = len(images) * cells
        flat = torch.arange(n)
        pooled.append(Alignment([flat], [flat], n, flat // cells, True).pool(0, on_grid))
    yield pooled, [d.label for d in window for _ in range(cells)]
    bar.update(len(images) * cells)


def on_common_grid(acts: torch.Tensor, grid: int) -> torch.Tensor:
    """[images, side * side, channels] row-major feature maps -> [images, grid * grid, channels]
    float32, each cell the mean over the part of the map it covers."""
    images, positions, channels = acts.shape
    side = math.isqrt(positions)
    if side * side != positions:
        raise CurateError(f"a feature map of {positions} positions is not square")
    maps = acts.float().reshape(images, side, side, channels).permute(0, 3, 1, 2)
    cells = torch.nn.functional.adaptive_avg_pool2d(maps, grid)
    return cells.permute(0, 2, 3, 1).reshape(images, grid * grid, channels)


def narrowed(
    capture: ActivationCapture, width: int, columns: torch.Tensor
) -> tuple[ActivationCapture, torch.Tensor]:
    """A capture of only the neurons at `columns` (flat indices into `capture`'s output, layer
    blocks of `width`), run only as deep as they lie; and each column's row in its output."""
    layers = torch.tensor(list(capture.requests))[columns // width]
    keys = layers * width + columns % width
    kept = torch.unique(keys)  # sorted by (layer, index): the order of the capture's output
    requests: dict[int, list[int]] = {}
    for key in kept.tolist():
        requests.setdefault(key // width, []).append(key % width)
    return ActivationCapture(capture.loaded, requests), torch.searchsorted(kept, keys)


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
    screen: ScreenSettings | None = ScreenSettings()  # None: exact all pairs (--exact)
    max_null_rate: float | None = None  # set the floor from the null on the calibration split


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
    matching: dict = field(default_factory=dict)  # how the pairs were found (exact / screened)
    floor: float = 0.0  # the correlation floor applied: --min-corr, or set by the calibration
    calibration: dict = field(default_factory=dict)  # how --max-null-rate set the floor
    null_run: dict = field(default_factory=dict)

    def neuron(self, flat: int) -> tuple[int, int]:
        return self.anchor_layers[flat // self.anchor_width], flat % self.anchor_width


def discover(models: Sequence[LoadedModel], corpus: Corpus, settings: Settings) -> Discovery:
    """Find the anchor (models[0]) neurons with a significant, replicated buddy in every partner."""
    if len(models) < 2:
        raise CurateError("discovery needs an anchor and at least one partner model")
    if len({m.modality for m in models}) > 1:
        kinds = ", ".join(f"{m.name} ({m.modality})" for m in models)
        raise CurateError(f"discovery needs models of one modality, not {kinds}")
    if settings.top_k < 1:
        raise CurateError(f"--top-k must be at least 1, not {settings.top_k}")
    if settings.screen is not None and settings.top_k != 1:
        raise CurateError("screened discovery pairs mutual best buddies: use --exact for --top-k")
    captures = [full_capture(m, settings.layers) for m in models]
    widths = [capture_width(c) for c in captures]
    sizes = [len(s.requests) * w for s, w in zip(captures, widths, strict=True)]
    generator = torch.Generator().manual_seed(settings.seed)
    passes = _exact_passes if settings.screen is None else _screened_pass
    floor, calibration = settings.min_corr, {}
    if settings.max_null_rate is not None:
        if corpus.calibration <= 0:
            raise CurateError("--max-null-rate needs a calibration split (--calibration > 0)")
        own = torch.Generator().manual_seed(settings.seed + 1)  # discovery's draws stay the same
        *_, cal_pairings, cal_units, _ = passes(
            corpus, captures, sizes, widths, settings, own, "calibration"
        )
        floor, rate = floor_for_null_rate([n for _, n in cal_pairings], settings.max_null_rate)
        calibration = {
            "max_null_rate": settings.max_null_rate,
            "null_rate": rate,
            "floor": floor,
            "aligned_tokens": cal_units["calibration"],
            "null": "rotated-basis mutual best buddies on the calibration split",
        }
    moments, stats, pairings, units, matching = passes(
        corpus, captures, sizes, widths, settings, generator, "discovery"
    )
    if calibration:
        units["calibration"] = calibration["aligned_tokens"]

    partners = []
    for (matches, null), capture, width in zip(pairings, captures[1:], widths[1:], strict=True):
        threshold = null_threshold(null, settings.null_quantile)
        passes_floor = matches.corr >= floor
        passes_null = (matches.corr > threshold) & (matches.corr > null.best)
        partners.append(
            PartnerResult(
                model=capture.loaded,
                layers=list(capture.requests),
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

    # replication is measured wherever a partner's floor and null pass, so that each pair's
    # count stands on its own beside the intersection (the Rosetta neurons)
    candidates = torch.stack([p.passes_floor & p.passes_null for p in partners]).any(0)
    candidates = candidates.nonzero().squeeze(1)
    units["heldout"] = 0
    if len(candidates) and corpus.heldout > 0:
        # per model, the columns that replication reads: the candidates and their buddies
        # (-1, no buddy: any column does, its correlation is never used)
        columns = [candidates, *(p.matches.buddy[candidates].clamp(min=0) for p in partners)]
        narrow = [
            narrowed(c, w, cols) for c, w, cols in zip(captures, widths, columns, strict=True)
        ]
        batches = aligned_batches(
            corpus, [c for c, _ in narrow], "heldout", settings.tokens_per_batch, "held-out"
        )
        shifts = [m.mean[cols] for m, cols in zip(moments, columns, strict=True)]
        corr, units["heldout"] = heldout_corr(batches, [rows for _, rows in narrow], shifts)
        for p, partner in enumerate(partners):
            partner.heldout_corr[candidates] = corr[p]
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
        anchor_layers=list(captures[0].requests),
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
        matching=matching,
        settings=settings,
        floor=floor,
        calibration=calibration,
    )


Pairing = tuple[Matches, Matches]  # a partner's mutual best buddies and its rotated null


def _exact_passes(corpus, captures, sizes, widths, settings: Settings, generator, split: str):
    """All pairs (the reference): pass 1 for moments, pass 2 for every cross sum."""
    moments = [Moments(n) for n in sizes]
    units = Counter()
    first = aligned_batches(corpus, captures, split, settings.tokens_per_batch, f"{split} 1/2")
    for acts, _ in first:
        units[split] += acts[0].shape[1]
        for moment, x in zip(moments, acts, strict=True):
            moment.update(x)
    _enough(units[split], split)
    cross = [
        CrossCorrelation(sizes[0], len(s.requests), w, generator)
        for s, w in zip(captures[1:], widths[1:], strict=True)
    ]
    stats = NeuronStats(moments[0].mean)
    for acts, labels in aligned_batches(
        corpus, captures, split, settings.tokens_per_batch, f"{split} 2/2"
    ):
        z = [m.standardize(x) for m, x in zip(moments, acts, strict=True)]
        for acc, z_partner in zip(cross, z[1:], strict=True):
            acc.update(z[0], z_partner)
        stats.update(shift_(acts[0], stats.shift), labels)
    count, k = units[split], settings.top_k
    pairings: list[Pairing] = [
        (
            mutual_top_k(acc.blocks(count, rotated=False), sizes[0], k),
            mutual_top_k(acc.blocks(count, rotated=True), sizes[0], k),
        )
        for acc in cross
    ]
    return moments, stats, pairings, units, {"method": "exact all pairs"}


def _screened_pass(corpus, captures, sizes, widths, settings: Settings, generator, split: str):
    """One pass over the split: the first `screen.sample` tokens buffered and screened
    all-pairs, then every token (the buffered sample's included) fed to the neuron statistics
    (which also give the anchor's exact moments) and to each partner's verifier (its exact
    moments and the sums for the screened pairs and the null's)."""
    units = Counter()
    dtypes = [next(c.loaded.model.parameters()).dtype for c in captures]
    # the sample ends with the batch that reaches screen.sample; a batch holds at most
    # max(tokens_per_batch, doc_tokens) units
    capacity = settings.screen.sample + max(settings.tokens_per_batch, corpus.doc_tokens)
    sample = Sample(sizes, dtypes, capacity)
    stats, verifiers = None, []

    def start():
        """Screen the buffered sample; then feed it to the verifiers and let it go."""
        nonlocal sample
        acts, labels = sample.acts(), sample.labels
        units["screened"] = len(labels)  # the sample, up to one batch past screen.sample
        shift, null = acts[0].mean(1, dtype=torch.float32), settings.screen.null_tokens
        verifiers = [
            Verifier(screen(acts[0], partner, width, settings.screen, generator), shift, null)
            for partner, width in zip(acts[1:], widths[1:], strict=True)
        ]
        state = NeuronStats(shift), verifiers
        step = SAMPLE_FEED_UNITS  # the float32 copies (the feed shifts them in place) stay small
        for lo in range(0, len(labels), step):
            batch = [a[:, lo : lo + step].float().contiguous() for a in acts]
            feed(batch, labels[lo : lo + step], *state)
        sample = None
        return state

    def feed(acts, labels, stats, verifiers):
        anchor_t = shift_(acts[0], stats.shift)  # the statistics and verifiers share it
        stats.update(anchor_t, labels)
        for verifier, partner in zip(verifiers, acts[1:], strict=True):
            verifier.update(anchor_t, partner)

    for acts, labels in aligned_batches(
        corpus, captures, split, settings.tokens_per_batch, f"{split} (screen, then verify)"
    ):
        units[split] += acts[0].shape[1]
        if stats is not None:
            feed(acts, labels, stats, verifiers)
        else:
            sample.add(acts, labels)
            if len(sample.labels) >= settings.screen.sample:
                stats, verifiers = start()
        del acts  # before the stream makes the next batch
    _enough(units[split], split)
    if stats is None:  # the split is smaller than the sample: screen what there is
        stats, verifiers = start()
    moments = [stats, *(v.moments for v in verifiers)]
    pairings = [v.pairing(stats) for v in verifiers]
    matching = {
        "method": "screen, then verify",
        "screen_tokens": units.pop("screened"),
        "layers_per_neuron": settings.screen.layers,
        "candidates_per_layer": settings.screen.per_layer,
        "verified_pairs": [v.n_pairs[0] for v in verifiers],
        "verified_null_pairs": [v.n_pairs[1] for v in verifiers],
        "null_tokens": verifiers[0].null_verified_tokens,
        "null": "rotated basis; candidates from the screened tokens, verified on the first "
        "null_tokens tokens",
    }
    return moments, stats, pairings, units, matching


class Sample:
    """The screening sample: neuron-major activations per model, in the precision the model
    computed in (a bf16 model's takes half), written into buffers allocated once."""

    def __init__(self, sizes: Sequence[int], dtypes: Sequence[torch.dtype], capacity: int):
        pairs = zip(sizes, dtypes, strict=True)
        self.buffers = [torch.empty((n, capacity), dtype=d) for n, d in pairs]
        self.labels: list[str] = []

    def add(self, acts: Sequence[torch.Tensor], labels: Sequence[str]) -> None:
        lo, hi = len(self.labels), len(self.labels) + len(labels)
        for buffer, x in zip(self.buffers, acts, strict=True):
            buffer[:, lo:hi] = x
        self.labels += labels

    def acts(self) -> list[torch.Tensor]:
        return [buffer[:, : len(self.labels)] for buffer in self.buffers]


def _enough(units: int, split: str) -> None:
    if units < 2:
        raise CurateError(f"the {split} split has fewer than 2 aligned tokens; raise --max-tokens")


def null_rate(discovery: Discovery, corpus: Corpus) -> dict:
    """Rerun the whole pipeline against a random-init copy of each partner in turn (that partner
    alone: as lenient as a null can be); count what each finds at the run's floor.

    The headline figures (`rate`, `rosetta`, `partner`) are the worst partner's; `partners`
    holds every one.
    """
    fixed = replace(discovery.settings, min_corr=discovery.floor, max_null_rate=None)
    runs = []
    for partner in discovery.partners:
        fake = random_copy(partner.model, discovery.settings.seed)
        rerun = discover([discovery.anchor, fake], corpus, fixed)
        found = len(rerun.rosetta)
        runs.append(
            {
                "partner": fake.name,
                "rosetta": found,
                "rate": found / max(len(discovery.rosetta), 1),
                "null_threshold": rerun.partners[0].null_threshold,
            }
        )
    worst = max(runs, key=lambda run: run["rosetta"])
    return {**worst, "partners": runs}


def to_artifact(
    discovery: Discovery, corpus: Corpus, command: str, null: dict | None
) -> NeuronArtifact:
    """The neuron set of a run, with the provenance and statistics that `neurons show` prints."""
    d = discovery
    r = d.rosetta
    partners = d.partners
    n_anchor = len(d.mean_corr)
    flat = torch.arange(n_anchor)
    anchor_layers = torch.tensor(d.anchor_layers)[flat // d.anchor_width]

    def per_partner(get) -> torch.Tensor:
        return torch.stack([get(p) for p in partners], dim=1)

    buddy = per_partner(lambda p: p.matches.buddy)
    buddy_layer = torch.full_like(buddy, -1)
    buddy_index = torch.full_like(buddy, -1)
    for i, p in enumerate(partners):
        has = buddy[:, i] >= 0
        buddy_layer[has, i] = torch.tensor(p.layers)[buddy[has, i] // p.width]
        buddy_index[has, i] = buddy[has, i] % p.width
    corr = per_partner(lambda p: p.matches.corr)
    stats = {key: d.stats[key] for key in STAT_KEYS}
    top_class = d.stats["top_class"].long() if d.classes else torch.full((n_anchor,), -1)
    rosetta_mask = torch.zeros(n_anchor, dtype=torch.bool)
    rosetta_mask[r] = True
    tensors = {
        "rosetta.layer": anchor_layers[r],
        "rosetta.index": (flat % d.anchor_width)[r],
        "rosetta.threshold": (d.anchor_mean + THRESHOLD_STDS * d.anchor_std)[r],
        "rosetta.weight": d.mean_corr[r],
        "rosetta.mean_corr": d.mean_corr[r],
        "rosetta.buddy_layer": buddy_layer[r],
        "rosetta.buddy_index": buddy_index[r],
        "rosetta.corr": corr[r],
        "rosetta.heldout_corr": per_partner(lambda p: p.heldout_corr)[r],
        "rosetta.null_corr": per_partner(lambda p: p.null.best)[r],
        "rosetta.top_class": top_class[r],
        **{f"rosetta.{key}": value[r] for key, value in stats.items()},
        "all.layer": anchor_layers,
        "all.index": flat % d.anchor_width,
        "all.mean": d.anchor_mean,
        "all.std": d.anchor_std,
        "all.buddy_corr": corr,
        "all.best_corr": per_partner(lambda p: p.matches.best),
        "all.null_best_corr": per_partner(lambda p: p.null.best),
        "all.rosetta": rosetta_mask,
        "all.top_class": top_class,
        # [classes, anchor neurons]: kept where the classes are few (one class per image, as in
        # an ImageFolder of one image per class, would make it most of the file)
        **({"all.class_means": d.stats["class_means"]} if len(d.classes) <= STORED_CLASSES else {}),
        **{f"all.{key}": value for key, value in stats.items()},
    }
    models = [
        _model_meta(d.anchor, d.anchor_layers, d.anchor_width, "anchor"),
        *(_model_meta(p.model, p.layers, p.width, "partner") for p in partners),
    ]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": TOOL_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "models": models,
        "corpus": {
            "root": str(corpus.base),
            "fingerprint": corpus.fingerprint,
            "fingerprint_of": "sha256: shard relpaths and sizes, then ids of the documents used",
            "shards": len(corpus.shards),
            "documents": dict(corpus.docs),
            "tokens": dict(d.tokens),
            "aligned_tokens": dict(d.units),
            "skipped_rows": corpus.skipped,
            "doc_tokens": corpus.doc_tokens,
            **({"grid": corpus.grid, "unit": "grid cell of an image"} if corpus.images else {}),
            "heldout_fraction": corpus.heldout,
            "split_seed": corpus.seed,
            "label_key": corpus.label_key,
            "classes": d.classes,
        },
        "thresholds": {
            "min_corr": d.floor,
            "floor_from": d.calibration or "--min-corr",
            "top_k": d.settings.top_k,
            "null": "mutual top-k against each partner layer's neurons after a random rotation",
            "null_quantile": d.settings.null_quantile,
            "null_threshold": [p.null_threshold for p in partners],
            "replicate": d.settings.replicate,
            "seed": d.settings.seed,
            "activation_threshold": f"mean + {THRESHOLD_STDS:g} std of the anchor activation",
        },
        "matching": d.matching,
        "counts": {
            "anchor_neurons": n_anchor,
            "mutual_buddies": [int((p.matches.buddy >= 0).sum()) for p in partners],
            "pass_floor": [int(p.passes_floor.sum()) for p in partners],
            "pass_null": [int(p.passes_null.sum()) for p in partners],
            "pass_replication": [int(p.passes_replication.sum()) for p in partners],
            "rosetta_per_partner": [
                int((p.passes_floor & p.passes_null & p.passes_replication).sum()) for p in partners
            ],
            "rosetta": len(r),  # the intersection: a buddy in every partner
        },
        "null_rate": null,
        "populations": {
            "rosetta": _population(stats, rosetta_mask),
            "other": _population(stats, ~rosetta_mask),
        },
        "neurons": len(r),
    }
    return NeuronArtifact(meta, tensors)


def _model_meta(loaded: LoadedModel, layers: list[int], width: int, role: str) -> dict:
    return {
        "name": loaded.name,
        "role": role,
        "family": loaded.model_type,
        "content_hash": loaded.content_hash,
        "layers": layers,
        "width": width,
        "hook_names": [hook_name(layer) for layer in layers],
    }


def _population(stats: dict[str, torch.Tensor], mask: torch.Tensor) -> dict:
    """Mean of each statistic over one population (NaN-free neurons), for the polarization view."""
    out: dict = {"neurons": int(mask.sum())}
    for key, value in stats.items():
        v = value[mask]
        v = v[torch.isfinite(v)]
        out[key] = float(v.mean()) if len(v) else None
    return out
