"""The one metrics module: scores of a prediction against the reference solver.

Fields are (scenarios, times, entries); ``weight`` is the control-volume volume |K| (or 1),
so norms are the mesh's volume-weighted integrals, not plain sums over entries. The
definitions, as reported by ``hybrid validate``, are listed in ``docs/metrics.md``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

__all__ = ["variance_floor", "Z90", "coverage_scale", "relative_l2", "mse", "max_error",
           "mass_error", "total_mass", "coverage", "gaussian_log_likelihood", "crps_gaussian",
           "front_position", "front_error"]

Z90 = 1.6448536269514722  # half-width of the central 90% interval of a standard Gaussian


def relative_l2(pred: np.ndarray, true: np.ndarray, weight: np.ndarray | float = 1.0) -> np.ndarray:
    """Per-scenario ‖p − t‖_w / ‖t‖_w over all times and entries."""
    axes = tuple(range(1, np.ndim(pred)))
    num = np.sqrt(np.sum(weight * (pred - true) ** 2, axis=axes))
    den = np.sqrt(np.sum(weight * true ** 2, axis=axes))
    return num / np.maximum(den, 1e-300)


def mse(pred: np.ndarray, true: np.ndarray, weight: np.ndarray | float = 1.0) -> float:
    r"""Volume-weighted mean square error over all scenarios, times and entries.

    .. math:: \mathrm{MSE} = \sum_{s,n,K} |K| (p_K - t_K)^2 \Big/ \sum_{s,n,K} |K|.

    The plain mean of (p − t)² when ``weight`` is 1.
    """
    err2 = (np.asarray(pred, float) - np.asarray(true, float)) ** 2
    w = np.broadcast_to(np.asarray(weight, float), err2.shape)
    return float(np.sum(w * err2) / np.sum(w))


def max_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Largest pointwise error, max |p − t| over everything."""
    return float(np.max(np.abs(np.asarray(pred, float) - np.asarray(true, float))))


def total_mass(u: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Total amount M^n = Σ_K |K| u_K^n: shape (..., T) for u (..., T, N) and weight (N,)."""
    return np.asarray(u, float) @ np.asarray(weight, float)


def mass_error(pred: np.ndarray, true: np.ndarray, weight: np.ndarray) -> float:
    r"""Global conservation error relative to the total amount.

    .. math:: \max_{s,n} \Big|\sum_K |K| (p_K - t_K)\Big| \Big/
              \max_{s,n} \sum_K |K|\,|t_K|.

    The denominator is the absolute amount because the signed total Σ|K| t_K can be 0.
    """
    num = np.abs(total_mass(np.asarray(pred, float) - np.asarray(true, float), weight)).max()
    den = total_mass(np.abs(np.asarray(true, float)), weight).max()
    return float(num / max(den, 1e-300))


def coverage(mean: np.ndarray, var: np.ndarray, true: np.ndarray) -> float:
    """Fraction of values inside mean ± z₀.₉₅ σ (a calibrated model gives 0.90)."""
    return float(np.mean(np.abs(true - mean) <= Z90 * np.sqrt(np.maximum(var, 0.0))))


def coverage_scale(truth: np.ndarray, mean: np.ndarray, var: np.ndarray,
                   floor: float = 1e-8) -> np.ndarray:
    """Per output time (axis 1 of (S, T, ...) arrays): the factor on ``var`` at which 90% of
    |truth − mean| / √var fall inside ±Z90, (q₀.₉ / Z90)²; variances below ``floor`` × their mean
    are floored first, and a scale that is not finite and positive is 1."""
    small = floor * max(float(np.mean(var)), 1e-300)
    z = np.abs(truth - mean) / np.sqrt(np.maximum(var, small))
    z = np.swapaxes(z, 0, 1).reshape(z.shape[1], -1)
    scale = (np.quantile(z, 0.9, axis=1) / Z90) ** 2
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def variance_floor(var: np.ndarray, relative: float = 1e-10) -> float:
    """The smallest variance a score takes seriously: ``relative`` × the mean variance. Entries
    an update makes exactly known (Dirichlet values) have variance 0 up to round-off, and
    their log-likelihood would otherwise be decided by that round-off."""
    return relative * max(float(np.mean(np.maximum(var, 0.0))), 1e-300)


def gaussian_log_likelihood(mean: np.ndarray, var: np.ndarray, true: np.ndarray,
                            floor: float = 1e-300) -> float:
    """Mean of log N(true; mean, var) over all entries (ProbConserv's LL)."""
    v = np.maximum(var, floor)
    return float(np.mean(-0.5 * (true - mean) ** 2 / v - 0.5 * np.log(v) - 0.5 * np.log(2 * np.pi)))


def crps_gaussian(mean: np.ndarray, var: np.ndarray, true: np.ndarray) -> float:
    r"""Mean over entries of the continuous ranked probability score of N(μ, σ²) at t.

    .. math:: \mathrm{CRPS} = \int (F(y) - 1\{y \ge t\})^2\,dy
              = \sigma\Big[z(2\Phi(z) - 1) + 2\varphi(z) - \tfrac{1}{\sqrt\pi}\Big],
              \quad z = (t - \mu)/\sigma

    (Gneiting & Raftery 2007, eq. 21). As σ → 0 it is |t − μ|, used exactly where σ = 0.
    For t drawn from the forecast itself, E[CRPS] = σ/√π.
    """
    mean, true = np.asarray(mean, float), np.asarray(true, float)
    sigma = np.sqrt(np.maximum(np.asarray(var, float), 0.0))
    sigma, mean, true = np.broadcast_arrays(sigma, mean, true)
    exact = sigma > 0
    # the σ = 0 entries get a dummy σ = 1 so that z stays finite, then |t − μ|
    s = np.where(exact, sigma, 1.0)
    with np.errstate(over="ignore"):     # σ tiny: z = ±inf is fine in the form below
        z = (true - mean) / s
        pdf = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    # σ z (2Φ − 1) written as (t − μ)(2Φ − 1), which stays finite when z overflows
    score = (true - mean) * (2 * ndtr(z) - 1) + s * (2 * pdf - 1 / np.sqrt(np.pi))
    return float(np.mean(np.where(exact, score, np.abs(true - mean))))


def front_position(u: np.ndarray, x: np.ndarray, threshold: float,
                   from_left: bool = True) -> np.ndarray:
    r"""Front of 1-D profiles u (..., N) at sorted coordinates x (N,): where u first falls
    below ``threshold`` walking from the left end (from the right end if not ``from_left``).

    With i the first index (in walking order) where u_i < threshold, the front is the
    linear interpolation between the neighbours i − 1 and i,

    .. math:: x_f = x_{i-1} + (x_i - x_{i-1}) \frac{u_{i-1} - u^*}{u_{i-1} - u_i}.

    A profile that never crosses gives the starting end when it already starts below
    the threshold and the far end when it stays above it. Returns shape (...).
    """
    u, x = np.asarray(u, float), np.asarray(x, float)
    if x.ndim != 1 or x.size == 0 or u.shape[-1:] != x.shape:
        raise ValueError(f"front_position: u has shape {u.shape}, x has shape {x.shape}; "
                         "expected u (..., N) and x (N,)")
    if not from_left:
        u, x = u[..., ::-1], x[::-1]
    below = u < threshold
    first = np.argmax(below, axis=-1)          # 0 both when u_0 is below and when nothing is
    crosses = below.any(axis=-1) & (first > 0)
    i = np.minimum(np.maximum(first, 1), x.size - 1)[..., None]
    u_hi = np.take_along_axis(u, i - 1, axis=-1)[..., 0]
    u_lo = np.take_along_axis(u, i, axis=-1)[..., 0]
    x_hi, x_lo = x[i[..., 0] - 1], x[i[..., 0]]
    # u_hi ≥ threshold > u_lo wherever it crosses, so the denominator is positive there
    frac = np.where(crosses, (u_hi - threshold) / np.where(crosses, u_hi - u_lo, 1.0), 0.0)
    inside = x_hi + (x_lo - x_hi) * frac
    never = np.where(below[..., 0], x[0], x[-1])
    return np.where(crosses, inside, never)


def front_error(pred_front: np.ndarray, true_front: np.ndarray) -> float:
    """Mean absolute front error, mean |x_f^pred − x_f^true| (ProbConserv's downstream task)."""
    return float(np.mean(np.abs(np.asarray(pred_front, float) - np.asarray(true_front, float))))
