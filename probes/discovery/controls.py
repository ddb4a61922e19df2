"""The significance controls: what keeps a mutual best buddy from being a fluke.

Mutual best buddies alone are mostly noise, so a pair counts only if its correlation beats a null
paired the same way against randomly rotated partner layers, and replicates on held-out documents
that the correlations never saw. The null rate (`run.null_rate`, a whole rerun against a
`random_copy` of a partner) measures what these controls still let through.
"""

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

import torch

from probes.discovery.match import Matches
from probes.families import family
from probes.models import LoadedModel


def null_threshold(null: Matches, quantile: float) -> float:
    """The `quantile` of the rotated null's buddy correlations (its best one if it has none)."""
    corrs = null.corr[torch.isfinite(null.corr)]
    return float(torch.quantile(corrs.double(), quantile)) if len(corrs) else float(null.best.max())


def floor_for_null_rate(nulls: Sequence[Matches], rate: float) -> tuple[float, float]:
    """The lowest correlation floor at which at most `rate` of the anchor neurons have a null
    buddy at or above it in every partner, and the share that then does."""
    per_partner = [torch.nan_to_num(n.corr.double(), nan=-math.inf) for n in nulls]
    weakest = torch.stack(per_partner).min(0).values  # a neuron passes only with every partner
    ordered = weakest.sort(descending=True).values
    allowed = int(math.floor(rate * len(ordered)))
    if allowed >= len(ordered) or not math.isfinite(float(ordered[allowed])):
        floor = -1.0
    else:  # just above the first value that must not pass
        floor = math.nextafter(float(ordered[allowed]), math.inf)
    floor = min(floor, 1.0)
    return floor, float((weakest >= floor).double().mean())


def heldout_corr(
    batches: Iterable[tuple[list[torch.Tensor], list[str]]],
    rows: Sequence[torch.Tensor],
    shifts: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, int]:
    """Pearson correlation of each candidate anchor neuron with its buddy in each partner over
    held-out batches: [partners, candidates] (NaN under 2 units), and the units read.

    `rows[0]` holds the candidates' rows of each neuron-major anchor batch, `rows[p + 1]` their
    buddies' rows in partner p's. Sums are shifted by `shifts` (per model, per candidate: the
    discovery means), so the one-pass formula does not cancel badly.
    """
    n_partners, n_candidates = len(rows) - 1, len(rows[0])
    sums = torch.zeros((n_partners, 5, n_candidates), dtype=torch.float64)
    n = 0
    for acts, _ in batches:
        n += acts[0].shape[1]
        a, *bs = (
            (x[r] - s.float().unsqueeze(1)).double()
            for x, r, s in zip(acts, rows, shifts, strict=True)
        )
        for p, b in enumerate(bs):
            sums[p] += torch.stack([a, b, a * a, b * b, a * b]).sum(2)
    if n < 2:
        return torch.full((n_partners, n_candidates), math.nan), n
    mean_a, mean_b, sq_a, sq_b, ab = (sums / n).unbind(1)
    var = ((sq_a - mean_a**2) * (sq_b - mean_b**2)).clamp(min=1e-24)
    return ((ab - mean_a * mean_b) / var.sqrt()).float(), n


def random_copy(loaded: LoadedModel, seed: int) -> LoadedModel:
    """A randomly initialised model of the same architecture and inputs (no download)."""
    torch.manual_seed(seed)
    model = family(loaded.model_type).fresh(loaded.model)
    model = model.to(next(loaded.model.parameters()).dtype).eval()
    tag = hashlib.sha256(f"{loaded.content_hash}:random:{seed}".encode()).hexdigest()[:16]
    name = f"{loaded.name} (random init, seed {seed})"
    return replace(loaded, name=name, model=model, content_hash=tag)
