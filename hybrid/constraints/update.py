"""The Gaussian update that imposes ``G x = b`` on a prediction ``x ~ N(μ, Σ)``.

ProbConserv (Hansen et al., ICML 2023, eq. 6), generalised from one global row to any
sparse set of rows:

    μ̃ = μ − Σ Gᵀ (G Σ Gᵀ + σ_G² I)⁻¹ (G μ − b)
    Σ̃ = Σ − Σ Gᵀ (G Σ Gᵀ + σ_G² I)⁻¹ G Σ

σ_G = 0 is the exact limit (the default). Σ is diagonal, ``diag(var)``, or an ensemble
covariance plus a diagonal, ``diag(var) + U Uᵀ`` with U the members' deviations divided
by √(M − 1). With ``A₀ = G diag(var) Gᵀ + σ_G² I`` (sparse, SPD) and ``W = G U`` (rows ×
M), Woodbury gives ``A⁻¹ = A₀⁻¹ − A₀⁻¹ W (I + Wᵀ A₀⁻¹ W)⁻¹ Wᵀ A₀⁻¹``: sparse solves plus
an M × M dense system, never a dense Σ. Posterior samples follow Matheron's rule,
``x̃ = x + Σ Gᵀ A⁻¹ (b − G x − ε)``, ε ~ N(0, σ_G² I). HardC (the Euclidean projection
of the paper's baseline) is the special case var = 1, U = 0. Everything is float64.

This module is the serial reference (scipy's sparse LU on A₀); the distributed form
assembles the same A₀ as a PETSc matrix over the control volumes' partition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from hybrid.errors import CaseError

__all__ = ["ConstraintError", "GaussianUpdate"]


class ConstraintError(CaseError):
    """The rows cannot be imposed: redundant or inconsistent, or touching only certain entries.
    A case asking for such rows gets this one message (exit code 2)."""


@dataclass
class GaussianUpdate:
    """Conditioning of N(μ, diag(var) + U Uᵀ) on G x = b, factorised once for many uses."""

    G: sp.csr_matrix
    b: np.ndarray
    var: np.ndarray
    U: np.ndarray | None = None
    sigma: float = 0.0

    def __post_init__(self) -> None:
        self.G = sp.csr_matrix(self.G, dtype=np.float64)
        self.b = np.asarray(self.b, np.float64)
        self.var = np.broadcast_to(np.asarray(self.var, np.float64), (self.G.shape[1],)).copy()
        if np.any(self.var < 0) or self.sigma < 0:
            raise ConstraintError("variances and sigma must be >= 0")
        rows = self.G.shape[0]
        A0 = (self.G @ sp.diags(self.var) @ self.G.T + self.sigma ** 2 * sp.identity(rows)).tocsc()
        if self.U is not None:
            self.U = np.asarray(self.U, np.float64)
            self.W = np.asarray(self.G @ self.U)
        singular = ("G Σ Gᵀ is singular: some rows are redundant (e.g. global rows together with all "
                    "per-cell rows), or touch only entries the prediction is certain of (zero variance)")
        try:
            self._lu = spla.splu(A0)
        except RuntimeError as exc:
            raise ConstraintError(f"{singular} — {exc}") from None
        # a numerically singular A₀ factorises with a pivot at round-off level
        pivots = np.abs(self._lu.U.diagonal())
        if rows and pivots.min() <= 1e-13 * pivots.max():  # redundant rows give ~1e-15; ill-conditioned real ones ~1e-11
            raise ConstraintError(f"{singular} (smallest/largest pivot {pivots.min() / pivots.max():.1e})")
        if self.U is not None:
            self._A0inv_W = self._lu.solve(self.W)
            self._small = np.linalg.cholesky(np.eye(self.W.shape[1]) + self.W.T @ self._A0inv_W)

    def solve(self, r: np.ndarray) -> np.ndarray:
        """A⁻¹ r with A = G Σ Gᵀ + σ_G² I (r: rows, or rows × k)."""
        y = self._lu.solve(r)
        if self.U is not None:
            t = np.linalg.solve(self._small.T, np.linalg.solve(self._small, self.W.T @ y))
            y = y - self._A0inv_W @ t
        return y

    def sigma_times(self, v: np.ndarray) -> np.ndarray:
        """Σ v for v: n, or n × k."""
        out = (self.var * v.T).T
        if self.U is not None:
            out = out + self.U @ (self.U.T @ v)
        return out

    def mean(self, mu: np.ndarray) -> np.ndarray:
        """μ̃ = μ − Σ Gᵀ A⁻¹ (G μ − b)."""
        y = self.solve(self.G @ mu - self.b)
        return mu - self.sigma_times(self.G.T @ y)

    def sample(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Matheron's rule: a prior sample x (n, or k × n) to a posterior sample."""
        xs = np.atleast_2d(x)
        eps = self.sigma * rng.standard_normal((xs.shape[0], self.G.shape[0]))
        r = (self.b - xs @ self.G.T - eps).T
        out = xs + self.sigma_times(self.G.T @ self.solve(r)).T
        return out if np.ndim(x) == 2 else out[0]

    def prior_samples(self, mu: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        """Samples of N(μ, diag(var) + U Uᵀ), shape (count, n)."""
        z = rng.standard_normal((count, len(mu))) * np.sqrt(self.var)
        if self.U is not None:
            z = z + rng.standard_normal((count, self.U.shape[1])) @ self.U.T
        return mu + z

    def variance(self, exact: bool | None = None, samples: int = 256,
                 rng: np.random.Generator | None = None) -> np.ndarray:
        """diag(Σ̃): exact (dense in the number of rows) for small problems, else a
        Matheron-sample estimate."""
        rows = self.G.shape[0]
        if exact is None:
            exact = rows <= 2000
        if exact:
            SGt = self.sigma_times(self.G.T.toarray())            # n × rows
            return self.var + (0 if self.U is None else (self.U ** 2).sum(1)) - \
                np.einsum("ij,ji->i", SGt, self.solve(SGt.T))
        rng = rng or np.random.default_rng(0)
        post = self.sample(self.prior_samples(np.zeros(self.G.shape[1]), samples, rng), rng)
        return post.var(axis=0, ddof=1)

    def residual(self, x: np.ndarray) -> np.ndarray:
        return self.G @ x - self.b
