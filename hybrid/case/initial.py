r"""Initial conditions of a scenario: an expression at t = 0, or a Gaussian random field.

The random field is a random Fourier series on the box ``[lo, hi]`` (by default the
bounding box of the points; pass the mesh's vertex box when evaluating at cell centres):

.. math::

    u(x) = \bar u + \frac{\sigma}{\sqrt{\sum_k a_k^2}}
           \sum_{k} a_k \left(\xi_k \cos 2\pi\kappa_k\cdot(x-lo)
                              + \eta_k \sin 2\pi\kappa_k\cdot(x-lo)\right),
    \qquad a_k = (\tau^2 + 4\pi^2|\kappa_k|^2)^{-\alpha/2},\quad \kappa_k = k / L,

over integer vectors ``k`` with ``0 < |k| <= modes`` in a half space (one of each ``±k``
pair), ``L = hi - lo`` per axis (axes of zero extent are dropped) and ``ξ, η ~ N(0, 1)``
i.i.d. Its covariance is stationary with spectrum ∝ (τ² + 4π²|κ|²)^(-α), the
discrete form of the Matérn-type operator σ²(−Δ + τ²)^(−α) used for the initial data of
the FNO benchmarks (Li et al., "Fourier Neural Operator for Parametric PDEs", ICLR 2021,
α = 2.5, τ = 7); the normalisation makes the pointwise variance exactly σ² and the mean
over the box exactly ū. The draws depend only on the rng, the dimension and ``modes``,
so two meshes of the same domain see the same field, and it is periodic on the box.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["initial_values", "gaussian_random_field", "wave_vectors"]

_CHUNK = 2_000_000  # points x wave vectors evaluated at once, to bound memory


def wave_vectors(dimension: int, modes: int) -> np.ndarray:
    """Integer wave vectors ``0 < |k| <= modes``, one of each ``±k`` pair, in a fixed order."""
    axis = np.arange(-modes, modes + 1)
    grid = np.stack(np.meshgrid(*[axis] * dimension, indexing="ij"), axis=-1).reshape(-1, dimension)
    grid = grid[(grid ** 2).sum(axis=1) <= modes ** 2]
    # keep k whose first non-zero component is positive
    first_nonzero = grid[np.arange(len(grid)), (grid != 0).argmax(axis=1)]
    return grid[first_nonzero > 0]


def gaussian_random_field(points: np.ndarray, rng: np.random.Generator, *, alpha: float,
                          tau: float, sigma: float, mean: float = 0.0, modes: int = 16,
                          box: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """One draw of the field of the module docstring at ``points`` ((n, gdim) array)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 1:
        points = points[:, None]
    lo, hi = (points.min(axis=0), points.max(axis=0)) if box is None else map(np.asarray, box)
    extent = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    active = extent > 1e-12 * max(1.0, float(np.abs(extent).max(initial=0.0)))
    values = np.full(points.shape[0], float(mean))
    if not active.any() or sigma == 0.0:
        return values
    k = wave_vectors(int(active.sum()), modes)
    kappa = k / extent[active]  # physical wave vectors (cycles per unit length)
    amplitude = (tau ** 2 + 4 * np.pi ** 2 * (kappa ** 2).sum(axis=1)) ** (-alpha / 2)
    amplitude *= sigma / np.sqrt((amplitude ** 2).sum())
    xi, eta = rng.standard_normal((2, len(k)))
    # xi cos(theta) + eta sin(theta) = Re((xi - i eta) e^{i theta}), and e^{2 pi i k.x/L} is a
    # product of per-axis factors: contract the coefficient tensor one axis at a time (BLAS)
    # instead of evaluating a trigonometric function per (point, wave vector)
    dimension, width = k.shape[1], 2 * modes + 1
    coefficient = np.zeros((width,) * dimension, dtype=np.complex128)
    coefficient[tuple((k + modes).T)] = amplitude * (xi - 1j * eta)
    shifted = (points[:, active] - np.asarray(lo, dtype=np.float64)[active]) / extent[active]
    frequencies = np.arange(-modes, modes + 1)
    step = max(1, _CHUNK // width ** (dimension - 1))
    for start in range(0, points.shape[0], step):
        chunk = shifted[start:start + step]
        factors = [np.exp(2j * np.pi * np.outer(chunk[:, axis], frequencies))
                   for axis in range(dimension)]
        # einsum, not BLAS: BLAS sums in a thread-count-dependent order, and the field must be
        # bitwise the same whatever the number of MPI ranks (and so of BLAS threads)
        # (points, width^(d-1))
        partial = np.einsum("pk,ik->pi", factors[-1], coefficient.reshape(-1, width))
        for axis in range(dimension - 2, -1, -1):
            partial = np.einsum("pik,pk->pi", partial.reshape(len(chunk), -1, width), factors[axis])
        values[start:start + step] += partial.reshape(len(chunk)).real
    return values


def initial_values(case, points: np.ndarray, params: Mapping[str, float],
                   rng: np.random.Generator | None = None, *,
                   box: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """u(x, 0) of one scenario at ``points``: shape (n,), or (n, components) for navier-stokes.

    ``rng`` (needed for kind = "grf") should be ``scenario_rng(seed, split, index, "initial")``.
    """
    initial = case.initial
    if initial.kind == "grf":
        if rng is None:
            raise ValueError('[initial] kind = "grf" needs a random generator')
        return gaussian_random_field(points, rng, alpha=initial.alpha, tau=initial.tau,
                                     sigma=initial.sigma, mean=initial.mean,
                                     modes=initial.modes, box=box)
    if isinstance(initial.value, list):
        return np.stack([component(points, 0.0, params) for component in initial.value], axis=1)
    values = initial.value(points, 0.0, params)
    if case.pde["family"] == "navier-stokes":  # one expression for every velocity component
        gdim = 1 if np.ndim(points) == 1 else np.shape(points)[1]
        return np.repeat(values[:, None], gdim, axis=1)
    return values
