"""The one metrics module: scores of a prediction against the reference solver.

Fields are (scenarios, times, entries); ``weight`` is the control-volume volume (or 1),
so norms are the mesh's volume-weighted integrals, not plain sums over entries.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Z90", "relative_l2", "coverage", "gaussian_log_likelihood"]

Z90 = 1.6448536269514722  # half-width of the central 90% interval of a standard Gaussian


def relative_l2(pred: np.ndarray, true: np.ndarray, weight: np.ndarray | float = 1.0) -> np.ndarray:
    """Per-scenario ‖p − t‖_w / ‖t‖_w over all times and entries."""
    axes = tuple(range(1, np.ndim(pred)))
    num = np.sqrt(np.sum(weight * (pred - true) ** 2, axis=axes))
    den = np.sqrt(np.sum(weight * true ** 2, axis=axes))
    return num / np.maximum(den, 1e-300)


def coverage(mean: np.ndarray, var: np.ndarray, true: np.ndarray) -> float:
    """Fraction of values inside mean ± z₀.₉₅ σ (a calibrated model gives 0.90)."""
    return float(np.mean(np.abs(true - mean) <= Z90 * np.sqrt(np.maximum(var, 0.0))))


def gaussian_log_likelihood(mean: np.ndarray, var: np.ndarray, true: np.ndarray, floor: float = 1e-300) -> float:
    """Mean of log N(true; mean, var) over all entries (ProbConserv's LL)."""
    v = np.maximum(var, floor)
    return float(np.mean(-0.5 * (true - mean) ** 2 / v - 0.5 * np.log(v) - 0.5 * np.log(2 * np.pi)))
