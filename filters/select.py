"""One global, token-weighted cut: take documents by key until the budget is spent.

Documents are ranked by (key, tie) descending, where `tie` is a per-document hash, so the order
is total and the same on every machine. The kept set is the prefix of that order whose token sum
is nearest the budget; it overshoots by less than one document, and a document is only taken past
the budget when that lands closer to it. The cut is then one (key, tie) threshold, which a
datatrove filter can apply to a document at a time.

With caps (per source, per cluster) a group is closed at its first document that would exceed its
cap, so the kept set of every (source, cluster) cell is still a prefix of that cell's order and the
cut is one threshold per cell.

`sketch_cut` finds the same cut without holding all keys: a radix histogram of tokens
over the key's bits, refined pass by pass until the boundary bin is small enough to sort.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

# Why a row is not kept, as uint8 codes everywhere a selection records it (0: kept).
REASONS = (
    "kept",
    "error",
    "too_short",
    "too_long",
    "below_threshold",
    "budget",
    "source_cap",
    "cluster_cap",
)
_SOURCE_CAP, _CLUSTER_CAP = REASONS.index("source_cap"), REASONS.index("cluster_cap")
RADIX_BITS = 16
_BINS = 1 << RADIX_BITS


@dataclass(frozen=True)
class Cut:
    """Keep a document iff (key, tie) >= (self.key, self.tie)."""

    key: float
    tie: int

    def keeps(self, key: np.ndarray, tie: np.ndarray) -> np.ndarray:
        return (key > self.key) | ((key == self.key) & (tie >= np.uint64(self.tie)))


@dataclass
class CutResult:
    keep: np.ndarray  # bool per candidate
    reason: np.ndarray  # uint8 per candidate: index into REASONS (0 = kept)
    cuts: dict[tuple[int, int], Cut | None] = field(default_factory=dict)  # per (source, cluster)
    kept_tokens: int = 0
    budget_reached: bool = True  # False when everything eligible fit under the budget


def rank_order(key: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Indices by (key, tie) descending."""
    return np.lexsort((tie, key))[::-1]


def nearest_prefix(tokens_in_order: np.ndarray, budget: int) -> int:
    """How many documents of the order to take so their tokens are nearest `budget`."""
    cum = np.cumsum(tokens_in_order, dtype=np.int64)
    n = int(np.searchsorted(cum, budget, side="right"))  # cum[:n] <= budget
    if n < len(cum):
        below = int(cum[n - 1]) if n else 0
        if int(cum[n]) - budget < budget - below:
            n += 1
    return n


def select(
    key: np.ndarray,
    tie: np.ndarray,
    tokens: np.ndarray,
    budget: int,
    source: np.ndarray | None = None,
    source_caps: dict[int, int] | None = None,
    cluster: np.ndarray | None = None,
    cluster_cap: int | None = None,
) -> CutResult:
    """Exact selection in memory. Caps are token limits per source code / per cluster."""
    n = len(key)
    order = rank_order(key, tie)
    keep = np.zeros(n, dtype=bool)
    reason = np.full(n, REASONS.index("budget"), dtype=np.uint8)
    if source is None and cluster is None:
        take = order[: nearest_prefix(tokens[order], budget)]
        keep[take] = True
        reason[take] = 0
        last = {(0, 0): Cut(float(key[take[-1]]), int(tie[take[-1]])) if len(take) else None}
        total = int(tokens[take].sum())
        return CutResult(keep, reason, last, total, budget_reached=total >= budget or len(take) < n)
    source = np.zeros(n, np.int32) if source is None else source
    cluster = np.zeros(n, np.int32) if cluster is None else cluster
    total = _greedy_with_caps(
        order, tokens, budget, source, source_caps or {}, cluster, cluster_cap, keep, reason
    )
    reason[keep] = 0
    cell = (source.astype(np.int64) << 32) | cluster.astype(np.int64)
    cuts: dict[tuple[int, int], Cut | None] = {_cell(c): None for c in np.unique(cell).tolist()}
    kept_in_order = order[keep[order]][::-1]  # lowest first: np.unique keeps first occurrences
    cells, first = np.unique(cell[kept_in_order], return_index=True)
    for c, i in zip(cells.tolist(), kept_in_order[first].tolist(), strict=True):
        cuts[_cell(c)] = Cut(float(key[i]), int(tie[i]))
    return CutResult(
        keep, reason, cuts, total, budget_reached=bool(total >= budget or not keep.all())
    )


def _cell(code: int) -> tuple[int, int]:
    return code >> 32, code & 0xFFFFFFFF


def _greedy_with_caps(
    order: np.ndarray,
    tokens: np.ndarray,
    budget: int,
    source: np.ndarray,
    source_caps: dict[int, int],
    cluster: np.ndarray,
    cluster_cap: int | None,
    keep: np.ndarray,
    reason: np.ndarray,
) -> int:
    """Walk the order; close a group at its first document over its cap; stop at the budget."""
    used_source: dict[int, int] = {}
    used_cluster: dict[int, int] = {}
    closed_source: set[int] = set()
    closed_cluster: set[int] = set()
    total = 0
    for i in order.tolist():
        s, c, t = int(source[i]), int(cluster[i]), int(tokens[i])
        if s in closed_source or c in closed_cluster:
            reason[i] = _SOURCE_CAP if s in closed_source else _CLUSTER_CAP
            continue
        if s in source_caps and used_source.get(s, 0) + t > source_caps[s]:
            closed_source.add(s)
            reason[i] = _SOURCE_CAP
            continue
        if cluster_cap is not None and used_cluster.get(c, 0) + t > cluster_cap:
            closed_cluster.add(c)
            reason[i] = _CLUSTER_CAP
            continue
        if total + t > budget and total + t - budget >= budget - total:
            break
        keep[i] = True
        total += t
        used_source[s] = used_source.get(s, 0) + t
        used_cluster[c] = used_cluster.get(c, 0) + t
        if total >= budget:
            break
    return total


def ordered_bits(key: np.ndarray) -> np.ndarray:
    """Map float64 keys to uint64 so that unsigned order equals float order."""
    key = np.asarray(key, dtype=np.float64) + 0.0  # -0.0 becomes 0.0, which compares equal
    bits = key.view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint64(1 << 63))


@dataclass
class TokenSketch:
    """Tokens and documents per bin of the next RADIX_BITS key bits below a fixed prefix."""

    prefix: int = 0
    depth: int = 0  # how many RADIX_BITS-wide digits the prefix holds
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(_BINS, np.int64))
    docs: np.ndarray = field(default_factory=lambda: np.zeros(_BINS, np.int64))

    def _digits(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bits = ordered_bits(key)
        fixed = RADIX_BITS * self.depth
        inside = (
            (bits >> np.uint64(64 - fixed)) == np.uint64(self.prefix)
            if fixed
            else np.ones(len(bits), bool)
        )
        shift = np.uint64(64 - fixed - RADIX_BITS)
        return inside, ((bits >> shift) & np.uint64(_BINS - 1)).astype(np.int64)

    def add(self, key: np.ndarray, tokens: np.ndarray) -> None:
        inside, digit = self._digits(key)
        self.tokens += np.bincount(digit[inside], weights=tokens[inside], minlength=_BINS).astype(
            np.int64
        )
        self.docs += np.bincount(digit[inside], minlength=_BINS)

    def boundary(self, budget: int) -> tuple[int, int] | None:
        """(bin where the running token sum from the top first exceeds budget, tokens above it)."""
        above = np.cumsum(self.tokens[::-1])
        crossing = int(np.searchsorted(above, budget, side="right"))
        if crossing == _BINS:
            return None
        tokens_above = int(above[crossing - 1]) if crossing else 0
        return _BINS - 1 - crossing, tokens_above

    def contains(self, key: np.ndarray, digit: int) -> np.ndarray:
        inside, digits = self._digits(key)
        return inside & (digits == digit)


Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class SketchResult:
    cut: Cut | None  # None: nothing kept, or everything (see `everything`)
    kept_tokens: int
    passes: int
    everything: bool = False  # the whole input fits under the budget


def sketch_cut(chunks: Chunks, budget: int, exact_limit: int = 1_000_000) -> SketchResult:
    """The same cut as `select` (no caps) from repeated passes over (key, tie, tokens) chunks.

    Memory is two histograms plus the documents of the final boundary bin (<= exact_limit
    unless keys collide in all 64 bits).
    """
    sketch, above, passes = TokenSketch(), 0, 0
    while True:
        for key, _, tokens in chunks():
            sketch.add(key, tokens)
        passes += 1
        found = sketch.boundary(budget - above)
        if found is None:
            if sketch.depth == 0:
                return SketchResult(None, int(sketch.tokens.sum()), passes, everything=True)
            raise AssertionError("a boundary bin lost its documents between passes")
        digit, tokens_above = found
        above += tokens_above
        if sketch.docs[digit] <= exact_limit or sketch.depth == 64 // RADIX_BITS - 1:
            break
        sketch = TokenSketch((sketch.prefix << RADIX_BITS) | digit, sketch.depth + 1)
    parts = [(k[m], t[m], n[m]) for k, t, n in chunks() if (m := sketch.contains(k, digit)).any()]
    passes += 1
    key, tie, tokens = (np.concatenate(p) for p in zip(*parts, strict=True))
    order = rank_order(key, tie)
    n = nearest_prefix(tokens[order], budget - above)
    kept = above + int(tokens[order[:n]].sum())
    if n == 0:  # the cut falls exactly at the bin's upper edge: the last kept lies above it
        return SketchResult(_lowest_above(chunks, sketch, digit), kept, passes + 1)
    last = order[n - 1]
    return SketchResult(Cut(float(key[last]), int(tie[last])), kept, passes)


def _lowest_above(chunks: Chunks, sketch: TokenSketch, digit: int) -> Cut | None:
    """The lowest (key, tie) ranked above the boundary bin: the last document kept."""
    edge = (((sketch.prefix << RADIX_BITS) | digit) + 1) << (64 - RADIX_BITS * (sketch.depth + 1))
    if edge >= 1 << 64:
        return None
    best: tuple[float, int] | None = None
    for key, tie, _ in chunks():
        mask = ordered_bits(key) >= np.uint64(edge)
        if mask.any():
            k, t = key[mask], tie[mask]
            i = rank_order(k, t)[-1]
            cand = (float(k[i]), int(t[i]))
            best = cand if best is None or cand < best else best
    return Cut(*best) if best else None
