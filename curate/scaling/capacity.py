"""A small capacity-utility model of why Rosetta neurons grow sub-linearly with model width.

Assumptions (simplifications, repeated in scaling.md so the fit can be read):

1. The data holds more useful features than any model has neurons; feature i's usefulness (the
   loss it removes when represented exactly) falls with its rank as u_i = i^(-a), 0 < a < 1.
2. A feature can get a neuron of its own (cost 1 neuron; it keeps all of u_i; it is
   monosemantic and aligned with the neuron basis, so every seed finds it again: a Rosetta
   neuron), be stored in superposition with others (cost eps < 1/2 neurons; interference loses a
   share gamma of u_i; its direction is not basis-aligned and differs between seeds), or be
   left out.
3. Superposition gets cheaper with width, eps(N) = eps0 * (N / N0)^(-b), b >= 0: more nearly
   orthogonal directions fit in more dimensions at the same interference.
4. Training allocates the N neurons to maximise the total usefulness kept. With a price lambda
   per neuron, feature i gets its own neuron iff gamma u_i >= lambda (1 - eps) (the usefulness
   that dedication adds pays for the neuron it adds), and is superposed iff
   (1 - gamma) u_i >= lambda eps otherwise.

Then the D dedicated and R represented features satisfy R / D = rho with
rho = ((1 - gamma)(1 - eps) / (gamma eps))^(1/a), and the neurons add up, D + eps (R - D) = N:

    D(N) = N / (1 - eps + eps * rho)

Where superposition dominates (eps rho >> 1), D ~ N^(1 - b (1/a - 1)): sub-linear whenever
superposition cheapens with width (b > 0) and usefulness falls slowly (a < 1). The model's
prediction at the measured sizes is its local exponent d ln D / d ln N there.

Polarization follows: a dedicated neuron carries one feature, while each of the other N - D
neurons carries (R - D) / (N - D) = 1 / eps features, a number that grows as N^b, so the
selectivity gap between the two populations widens with width.

Only D is measured (the Rosetta count), so gamma is fixed at 1/2 (counts cannot separate it
from eps0); a, b and eps0 are fitted to the measured counts by least squares on log counts
over a grid. With three parameters and a handful of sizes the fit is an explanation of the
measured curve, not an independent measurement of it.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from probes.errors import CurateError

GAMMA = 0.5
A_GRID = np.linspace(0.05, 0.95, 37)
B_GRID = np.linspace(0.0, 1.5, 31)
LOG_EPS0_GRID = np.linspace(np.log(1e-4), np.log(0.45), 40)


@dataclass(frozen=True)
class CapacityFit:
    a: float  # usefulness decay exponent
    b: float  # how fast superposition cheapens with width
    eps0: float  # cost of a superposed feature (neurons) at the smallest size N0
    n0: float
    gamma: float
    rms_log_error: float  # of the fitted counts, in log units
    local_alpha: float  # d ln D / d ln N at the geometric mean of the measured sizes
    asymptotic_alpha: float  # 1 - b (1/a - 1): the exponent where superposition dominates

    def dedicated(self, n_total: np.ndarray) -> np.ndarray:
        return dedicated(np.asarray(n_total, float), self.a, self.b, self.eps0, self.n0)

    def features_per_other_neuron(self, n_total: np.ndarray) -> np.ndarray:
        """1 / eps: the superposed features each non-dedicated neuron carries."""
        return 1.0 / epsilon(np.asarray(n_total, float), self.b, self.eps0, self.n0)

    def to_dict(self) -> dict:
        return asdict(self)


def epsilon(n: np.ndarray, b, eps0, n0: float) -> np.ndarray:
    return eps0 * (n / n0) ** (-b)


def dedicated(n: np.ndarray, a, b, eps0, n0: float, gamma: float = GAMMA) -> np.ndarray:
    """D(N): features with a neuron of their own (broadcasts over parameter arrays)."""
    eps = epsilon(n, b, eps0, n0)
    rho = ((1 - gamma) * (1 - eps) / (gamma * eps)) ** (1 / a)
    return n / (1 - eps + eps * rho)


def fit_capacity(n_total: Sequence[float], counts: Sequence[float]) -> CapacityFit:
    """Least squares on log counts over the (a, b, eps0) grid; sizes with no count are left out."""
    n = np.asarray(n_total, float)
    y = np.asarray(counts, float)
    keep = y > 0
    if keep.sum() < 2:
        raise CurateError("the capacity-utility fit needs two sizes with Rosetta neurons")
    n, y = n[keep], y[keep]
    n0 = float(n.min())
    a, b, log_eps0 = np.meshgrid(A_GRID, B_GRID, LOG_EPS0_GRID, indexing="ij")
    a, b, eps0 = a[..., None], b[..., None], np.exp(log_eps0)[..., None]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        pred = dedicated(n, a, b, eps0, n0)
        error = ((np.log(pred) - np.log(y)) ** 2).mean(-1)
    error = np.where(np.isfinite(error), error, np.inf)
    best = np.unravel_index(np.argmin(error), error.shape)
    fa, fb = float(A_GRID[best[0]]), float(B_GRID[best[1]])
    fe = float(np.exp(LOG_EPS0_GRID[best[2]]))
    mid = float(np.exp(np.log(n).mean()))
    step = 1e-3
    local = (
        np.log(dedicated(np.array(mid * np.exp(step)), fa, fb, fe, n0))
        - np.log(dedicated(np.array(mid * np.exp(-step)), fa, fb, fe, n0))
    ) / (2 * step)
    return CapacityFit(
        a=fa,
        b=fb,
        eps0=fe,
        n0=n0,
        gamma=GAMMA,
        rms_log_error=float(np.sqrt(error[best])),
        local_alpha=float(local),
        asymptotic_alpha=1 - fb * (1 / fa - 1),
    )
