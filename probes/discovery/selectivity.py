"""Per-neuron statistics that say how selective a neuron is, for Rosetta and all other neurons.

Skew and kurtosis come from power sums of activations shifted by a fixed per-neuron constant
near the mean (float64), so one pass gives the central moments without the final means; class
selectivity uses the document labels (e.g. `metadata.source`) as classes.
"""

from collections.abc import Sequence

import torch

from probes.discovery.stream import shifted_mean_var

ROWS_PER_BLOCK = 64  # neurons per block of the update: 3x faster than whole-batch passes


class NeuronStats:
    """Streaming sums for activation frequency, skew, kurtosis and per-class mean activation.

    A neuron "fires" where its activation is positive: GELU/SiLU outputs are positive exactly
    where the pre-activation is. Class means use max(activation, 0) so that the class selectivity
    index (Morcos et al., 2018) stays in [0, 1] for activations with a small negative lobe.
    """

    def __init__(self, shift: torch.Tensor):
        n_neurons = len(shift)
        self.shift = shift.float()
        self.count = 0
        self.fires = torch.zeros(n_neurons, dtype=torch.float64)
        self.powers = torch.zeros((4, n_neurons), dtype=torch.float64)  # sums of d, d^2, d^3, d^4
        self.classes: list[str] = []
        self.class_sums = torch.zeros((0, n_neurons), dtype=torch.float64)
        self.class_counts = torch.zeros(0, dtype=torch.float64)

    def update(self, shifted: torch.Tensor, labels: Sequence[str]) -> None:
        """`shifted` is [neurons, units] neuron-major activations minus `shift`
        (`stream.shift_`), so every sum reads contiguous rows; `labels[u]` is unit u's class."""
        self.count += shifted.shape[1]
        for label in dict.fromkeys(labels):
            if label not in self.classes:
                self.classes.append(label)
                self.class_sums = torch.cat(
                    [self.class_sums, self.class_sums.new_zeros(1, shifted.shape[0])]
                )
                self.class_counts = torch.cat([self.class_counts, self.class_counts.new_zeros(1)])
        index = torch.tensor([self.classes.index(label) for label in labels])
        one_hot = torch.nn.functional.one_hot(index, len(self.classes)).float()
        counts = one_hot.sum(0)
        sums = torch.empty((4 + len(self.classes), shifted.shape[0]))
        for lo in range(0, shifted.shape[0], ROWS_PER_BLOCK):  # each block's passes hit cache
            rows = slice(lo, lo + ROWS_PER_BLOCK)
            x, floor = shifted[rows], -self.shift[rows].unsqueeze(1)  # floor: activation 0
            self.fires[rows] += (x > floor).sum(1, dtype=torch.int32)
            d2 = x * x
            sums[0, rows], sums[1, rows] = x.sum(1), d2.sum(1)
            sums[2, rows], sums[3, rows] = (d2 * x).sum(1), torch.linalg.vector_norm(d2, dim=1)
            # per class, the sum of max(activation, 0) = max(shifted, -shift) + shift
            sums[4:, rows] = (torch.maximum(x, floor) @ one_hot).T
        sums[3] **= 2
        self.powers += sums[:4].double()  # float32 within a batch, float64 across batches
        self.class_sums += sums[4:].double() + self.shift.double() * counts.double().unsqueeze(1)
        self.class_counts += counts.double()

    @property
    def mean(self) -> torch.Tensor:
        """Exact float64 mean of each neuron: the power sums make these the anchor's moments."""
        return shifted_mean_var(self.shift, self.powers[0], self.powers[1], self.count)[0]

    @property
    def var(self) -> torch.Tensor:
        return shifted_mean_var(self.shift, self.powers[0], self.powers[1], self.count)[1]

    def result(self) -> dict[str, torch.Tensor]:
        """frequency, skew, excess kurtosis, selectivity (CSI), top_class index, class_means."""
        n = max(self.count, 1)
        m1, m2, m3, m4 = self.powers / n
        var = m2 - m1**2
        c3 = m3 - 3 * m1 * m2 + 2 * m1**3
        c4 = m4 - 4 * m1 * m3 + 6 * m1**2 * m2 - 3 * m1**4
        varies = var > 1e-12  # a constant neuron: skew 0, kurtosis -3 (as z = 0 would give)
        safe = var.clamp(min=1e-12)
        class_means = self.class_sums / self.class_counts.clamp(min=1).unsqueeze(1)
        return {
            "frequency": (self.fires / n).float(),
            "skew": torch.where(varies, c3 / safe**1.5, 0.0).float(),
            "kurtosis": torch.where(varies, c4 / safe**2, 0.0).float() - 3.0,
            "selectivity": class_selectivity(class_means).float(),
            "top_class": class_means.argmax(0) if len(self.classes) else torch.zeros(0),
            "class_means": class_means.float(),
        }


def class_selectivity(class_means: torch.Tensor) -> torch.Tensor:
    """(mu_max - mu_rest) / (mu_max + mu_rest) per neuron, from [classes, neurons] means >= 0.

    mu_rest is the mean of the other classes' means; NaN with fewer than two classes, 0 for a
    neuron that never fires.
    """
    n_classes = class_means.shape[0]
    if n_classes < 2:
        return torch.full((class_means.shape[1],), float("nan"), dtype=class_means.dtype)
    top = class_means.max(0).values
    rest = (class_means.sum(0) - top) / (n_classes - 1)
    total = top + rest
    return torch.where(total > 0, (top - rest) / total.clamp(min=1e-12), torch.zeros_like(total))


def domain_selectivity(
    target_mean: torch.Tensor,
    target_var: torch.Tensor,
    background_mean: torch.Tensor,
    background_var: torch.Tensor,
) -> torch.Tensor:
    """Cohen's d of each neuron's activation on target versus background tokens."""
    pooled = ((target_var + background_var) / 2).clamp(min=1e-12).sqrt()
    return (target_mean - background_mean) / pooled
