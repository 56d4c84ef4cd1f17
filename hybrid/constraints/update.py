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

Solves with A₀ use a sparse Cholesky factorisation (PETSc: CHOLMOD, MUMPS or its own) up
to DIRECT_ROWS rows and PETSc's CG with algebraic multigrid (GAMG) above, serially; an
:class:`UpdatePlan` keeps what the scenarios of a case share (G, A₀'s pattern and the
symbolic factorisation), and one numeric factorisation serves the mean, the variance and
every sample, the latter two in one block solve. The marginal variance is estimated by
Hutchinson's method with Rademacher probes around the exact diagonal-of-A part
(:meth:`GaussianUpdate.posterior`), or computed exactly by the dense formula on request.
The distributed form assembles the same A₀ as a PETSc matrix over the control volumes'
partition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from hybrid.errors import CaseError

__all__ = ["ConstraintError", "GaussianUpdate", "UpdatePlan", "normals", "prior_deviation"]


EXACT_VARIANCE_ROWS = 2000  # variance(exact=None): the dense formula up to here, the probe estimate above
DIRECT_ROWS = 30000  # sparse Cholesky up to here (one factorisation serves every block solve), CG + AMG above
VARIANCE_PROBES = 256  # Rademacher probes of the marginal-variance estimate
OPTIONS_PREFIX = "hybrid_update_"  # PETSc options of the update's solvers: -hybrid_update_pc_factor_mat_solver_type mumps
_SINGULAR = ("G Σ Gᵀ is singular: some rows are redundant or inconsistent (e.g. global rows together with all per-cell "
             "rows), or touch only entries the prediction is certain of (zero variance)")


NOISE_DIAGONAL, NOISE_MEMBERS, NOISE_ROWS, NOISE_PROBES = 0, 1, 2, 3  # independent random streams of one seed


def normals(seed: int, stream: int, k: int, size: int) -> np.ndarray:
    """Standard normals of sample k: a function of (seed, stream, k) only, never of the
    number of ranks, so serial and distributed updates draw identical samples."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, k])).standard_normal(size)


def prior_deviation(seed: int, k: int, std: np.ndarray, U: np.ndarray | None, entries: np.ndarray,
                    size: int | None = None) -> np.ndarray:
    """Sample k of N(0, diag(std²) + U Uᵀ) at the given entries of the global state vector
    (std and U hold those entries' rows; ``size`` is the global length)."""
    z = normals(seed, NOISE_DIAGONAL, k, size or len(entries))[entries] * std
    if U is not None:
        z = z + U @ normals(seed, NOISE_MEMBERS, k, U.shape[1])
    return z


class ConstraintError(CaseError):
    """The rows cannot be imposed: redundant or inconsistent, or touching only certain entries.
    A case asking for such rows gets this one message (exit code 2)."""


class _CholeskySolver:
    """Sparse Cholesky factorisation of the SPD A₀ through PETSc (CHOLMOD's supernodal
    factorisation where PETSc has it, else MUMPS, else PETSc's own with nested dissection).
    The pattern is fixed when it is built: the fill-reducing ordering and the symbolic
    factorisation are done once, every :meth:`factor` of new values on that pattern is
    numeric only, and :meth:`solve` takes a block of right-hand sides in one call."""

    def __init__(self, pattern: sp.csr_matrix, solver: str | None = None):
        from petsc4py import PETSc

        self.PETSc = PETSc
        IT = PETSc.IntType
        self.indptr, self.indices = pattern.indptr.astype(IT), pattern.indices.astype(IT)
        self.rows = pattern.shape[0]
        self.mat = PETSc.Mat().createAIJ(pattern.shape, csr=(self.indptr, self.indices, np.ones(pattern.nnz)),
                                         comm=PETSc.COMM_SELF)
        self.mat.setOption(PETSc.Mat.Option.SPD, True)
        self.ksp = PETSc.KSP().create(PETSc.COMM_SELF)
        self.ksp.setOptionsPrefix(OPTIONS_PREFIX)
        self.ksp.setType("preonly")
        pc = self.ksp.getPC()
        pc.setType("cholesky")
        pc.setFactorSolverType(solver or _factor_package())
        if pc.getFactorSolverType() == "petsc":
            pc.setFactorOrdering("nd")
        self.ksp.setFromOptions()
        self.b, self.x = self.mat.createVecLeft(), self.mat.createVecRight()
        self.checked = False

    def factor(self, values: np.ndarray) -> None:
        """Numeric factorisation of the pattern's matrix with these (CSR-ordered) values."""
        self.mat.setValuesCSR(self.indptr, self.indices, values)
        self.mat.assemble()
        self.ksp.setOperators(self.mat)
        try:
            self.ksp.setUp()
        except self.PETSc.Error as exc:
            raise ConstraintError(f"{_SINGULAR} (Cholesky failed: PETSc error {exc.ierr})") from None
        if not self.checked:   # redundancy is a property of G's pattern: test one known solution once
            A = sp.csr_matrix((values, self.indices, self.indptr), shape=(self.rows, self.rows))
            v = np.random.default_rng(0).standard_normal(self.rows)
            err = np.abs(self.solve(A @ v) - v).max() / np.abs(v).max()
            if not np.isfinite(err) or err > 1e-6:
                raise ConstraintError(f"{_SINGULAR} (a test solve is off by {err:.1e})")
            self.checked = True

    def solve(self, r: np.ndarray) -> np.ndarray:
        if r.ndim == 1:
            self.b.setArray(r)
            self.ksp.solve(self.b, self.x)
            return self.x.getArray().copy()
        PETSc = self.PETSc
        B = PETSc.Mat().createDense(r.shape, array=np.asfortranarray(r, dtype=np.float64), comm=PETSc.COMM_SELF)
        X = PETSc.Mat().createDense(r.shape, comm=PETSc.COMM_SELF)
        X.setUp()
        self.ksp.getPC().getFactorMatrix().matSolve(B, X)
        out = X.getDenseArray().copy()
        B.destroy()
        X.destroy()
        return out

    def destroy(self) -> None:
        for obj in (self.ksp, self.mat, self.b, self.x):
            obj.destroy()


def _factor_package() -> str:
    """The fastest sparse Cholesky PETSc was built with (measured in benchmarks/constraints.py)."""
    global _PACKAGE
    if _PACKAGE is None:
        from petsc4py import PETSc

        one = PETSc.Mat().createAIJ((1, 1), csr=(np.array([0, 1], PETSc.IntType), np.array([0], PETSc.IntType),
                                                 np.ones(1)), comm=PETSc.COMM_SELF)
        for name in ("cholmod", "mumps", "petsc"):
            ksp = PETSc.KSP().create(PETSc.COMM_SELF)
            ksp.setOperators(one)
            ksp.setType("preonly")
            ksp.getPC().setType("cholesky")
            ksp.getPC().setFactorSolverType(name)
            try:
                ksp.setUp()
                _PACKAGE = name
                break
            except PETSc.Error:
                continue
            finally:
                ksp.destroy()
        one.destroy()
    return _PACKAGE


_PACKAGE: str | None = None


class UpdatePlan:
    """What an update of one set of rows needs that no scenario changes: G, the pattern of
    A₀ = G diag(v) Gᵀ + σ² I, the sparse map P with A₀'s CSR values = P v (+ σ² on the
    diagonal), and the solver built on that pattern (its ordering and symbolic factorisation).
    The rows of a variant have the same G in every scenario of a case (only b differs), so
    one plan serves all of them."""

    def __init__(self, G: sp.csr_matrix, direct: bool | None = None):
        G = sp.csr_matrix(G, dtype=np.float64)
        G.sort_indices()
        self.G = G
        rows, n = G.shape
        pattern = (abs(G) @ abs(G).T).tocsr()       # no cancellation: the structural pattern
        pattern.sort_indices()
        self.pattern = pattern
        keys = np.repeat(np.arange(rows), np.diff(pattern.indptr)) * rows + pattern.indices
        Gc = G.tocsc()
        Gc.sort_indices()
        counts = np.diff(Gc.indptr)
        pos, col, val = [], [], []
        for k in np.unique(counts[counts > 0]):   # columns with k entries: all k² pairs at once
            cols = np.flatnonzero(counts == k)
            idx = Gc.indptr[cols][:, None] + np.arange(k)
            r, g = Gc.indices[idx], Gc.data[idx]
            pos.append(np.searchsorted(keys, (r[:, :, None] * rows + r[:, None, :]).ravel()))
            col.append(np.repeat(cols, k * k))
            val.append((g[:, :, None] * g[:, None, :]).ravel())
        pos, col, val = (np.concatenate(a) if a else np.zeros(0) for a in (pos, col, val))
        self.P = sp.csr_matrix((val, (pos.astype(np.int64), col.astype(np.int64))), shape=(pattern.nnz, n))
        self.diagonal = np.searchsorted(keys, np.arange(rows) * rows + np.arange(rows))
        self.GT = G.T.tocsr()                      # Gᵀ and (G ∘ G)ᵀ by rows: the variance's products
        self.G2T = G.multiply(G).T.tocsr()
        self.direct = direct if direct is not None else rows <= DIRECT_ROWS
        self._solver = None

    def matches(self, G: sp.spmatrix) -> bool:
        G = sp.csr_matrix(G, dtype=np.float64)
        G.sort_indices()
        return (G.shape == self.G.shape and G.nnz == self.G.nnz and np.array_equal(G.indptr, self.G.indptr)
                and np.array_equal(G.indices, self.G.indices) and np.array_equal(G.data, self.G.data))

    def values(self, var: np.ndarray, sigma: float) -> np.ndarray:
        """A₀'s CSR values for diag(var) and σ_G."""
        out = self.P @ var
        if sigma:
            out[self.diagonal] += sigma ** 2
        return out

    def solver(self, values: np.ndarray):
        """The solver of A₀ with these values: the plan's Cholesky refactored, or CG + AMG."""
        if not self.direct:
            A0 = sp.csr_matrix((values, self.pattern.indices, self.pattern.indptr), shape=self.pattern.shape)
            return _IterativeSolver.from_scipy(A0)
        if self._solver is None:
            self._solver = _CholeskySolver(self.pattern)
        self._solver.factor(values)
        return self._solver

    def destroy(self) -> None:
        if self._solver is not None:
            self._solver.destroy()
            self._solver = None


class _IterativeSolver:
    """CG preconditioned by PETSc's algebraic multigrid (GAMG) on the SPD A₀ — near-linear
    in the number of rows, where the LU's fill-in grows like N^1.8 on space-time rows.
    The tolerance is tight because the constraint residual G μ̃ − b equals A y − r.
    ``mat`` is a PETSc matrix on ``comm`` (the distributed update passes its own); vectors
    are this process's rows."""

    def __init__(self, mat, comm=None, rtol: float = 1e-14):
        from petsc4py import PETSc

        self.mat = mat
        self.ksp = PETSc.KSP().create(comm or PETSc.COMM_SELF)
        self.ksp.setOperators(mat)
        self.ksp.setType("cg")
        self.ksp.getPC().setType("gamg")
        self.ksp.setTolerances(rtol=rtol, atol=0.0, max_it=2000)
        self.b, self.x = mat.createVecLeft(), mat.createVecRight()

    @classmethod
    def from_scipy(cls, A0: sp.spmatrix) -> "_IterativeSolver":
        from petsc4py import PETSc

        A = A0.tocsr()
        IT = PETSc.IntType
        mat = PETSc.Mat().createAIJ(A.shape, csr=(A.indptr.astype(IT), A.indices.astype(IT), A.data),
                                    comm=PETSc.COMM_SELF)
        return cls(mat)

    def destroy(self) -> None:
        for obj in (self.ksp, self.b, self.x):
            obj.destroy()

    def _solve1(self, r: np.ndarray) -> np.ndarray:
        self.b.setArray(r)
        self.x.set(0.0)
        self.ksp.solve(self.b, self.x)
        if self.ksp.getConvergedReason() < 0:
            raise ConstraintError(f"{_SINGULAR} (CG did not converge: reason {self.ksp.getConvergedReason()})")
        return self.x.getArray().copy()

    def solve(self, r: np.ndarray) -> np.ndarray:
        if r.ndim == 1:
            return self._solve1(r)
        return np.stack([self._solve1(r[:, j]) for j in range(r.shape[1])], axis=1)


@dataclass
class GaussianUpdate:
    """Conditioning of N(μ, diag(var) + U Uᵀ) on G x = b, factorised once for many uses.

    ``plan``: an :class:`UpdatePlan` of the same G (another scenario's), whose pattern, value
    map and symbolic factorisation are reused; None builds one. ``timings`` accumulates the
    seconds of each phase (``assemble``, ``factor``, ``mean``, ``posterior``)."""

    G: sp.csr_matrix
    b: np.ndarray
    var: np.ndarray
    U: np.ndarray | None = None
    sigma: float = 0.0
    direct: bool | None = None   # None: sparse Cholesky up to DIRECT_ROWS rows, else CG + algebraic multigrid
    plan: UpdatePlan | None = None

    def __post_init__(self) -> None:
        t0 = time.perf_counter()
        if self.plan is None or not self.plan.matches(self.G) or \
                (self.direct is not None and self.direct != self.plan.direct):
            self.plan = UpdatePlan(self.G, self.direct)
        self.G = self.plan.G
        self.b = np.asarray(self.b, np.float64)
        self.var = np.broadcast_to(np.asarray(self.var, np.float64), (self.G.shape[1],)).copy()
        if np.any(self.var < 0) or self.sigma < 0 or not np.all(np.isfinite(self.var)):
            raise ConstraintError("variances and sigma must be finite and >= 0")
        self.entries = np.arange(self.G.shape[1])  # every entry is this process's (cf. DistributedUpdate)
        values = self.plan.values(self.var, self.sigma)
        t1 = time.perf_counter()
        self._lu = self.plan.solver(values)
        self._A0_diagonal = values[self.plan.diagonal]
        if self.U is not None:
            self.U = np.asarray(self.U, np.float64)
            self.W = np.asarray(self.G @ self.U)
            self._A0inv_W = self._lu.solve(self.W)
            self._small = np.linalg.cholesky(np.eye(self.W.shape[1]) + self.W.T @ self._A0inv_W)
        self.timings = {"assemble": t1 - t0, "factor": time.perf_counter() - t1}

    def _tick(self, phase: str, t0: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - t0

    def solve(self, r: np.ndarray) -> np.ndarray:
        """A⁻¹ r with A = G Σ Gᵀ + σ_G² I (r: rows, or rows × k)."""
        y = self._lu.solve(r)
        if self.U is not None:
            t = np.linalg.solve(self._small.T, np.linalg.solve(self._small, self.W.T @ y))
            y = y - self._A0inv_W @ t
        return y

    def sigma_times(self, v: np.ndarray) -> np.ndarray:
        """Σ v for v: n, or n × k."""
        out = self.var * v if v.ndim == 1 else self.var[:, None] * v
        if self.U is not None:
            out = out + self.U @ (self.U.T @ v)
        return out

    def _apply_A(self, y: np.ndarray) -> np.ndarray:
        """A y = G Σ Gᵀ y + σ_G² y, without forming A."""
        return self.G @ self.sigma_times(self.G.T @ y) + self.sigma ** 2 * y

    def mean(self, mu: np.ndarray) -> np.ndarray:
        """μ̃ = μ − Σ Gᵀ A⁻¹ (G μ − b), with one step of iterative refinement of the solve
        (G μ̃ − b is exactly the solve's residual, so the rows hold to round-off)."""
        t0 = time.perf_counter()
        r = self.G @ mu - self.b
        y = self.solve(r)
        y += self.solve(r - self._apply_A(y))
        out = mu - self.sigma_times(self.G.T @ y)
        self._tick("mean", t0)
        if self.sigma == 0:
            after, scale = np.abs(self.residual(out)).max(), max(np.abs(r).max(), np.abs(self.b).max(), 1e-300)
            if not np.isfinite(after) or after > 1e-8 * scale:
                raise ConstraintError(f"{_SINGULAR} (residual {after:.1e} after the update, {scale:.1e} before)")
        return out

    def sample(self, x: np.ndarray, seed: int) -> np.ndarray:
        """Matheron's rule: prior samples x (k × n) to posterior samples, in one block solve."""
        xs = np.atleast_2d(x)
        r = self.b[:, None] - self.G @ xs.T
        if self.sigma:
            r -= self.sigma * np.stack([normals(seed, NOISE_ROWS, k, self.G.shape[0]) for k in range(xs.shape[0])], axis=1)
        return xs + self.sigma_times(self.G.T @ self.solve(r)).T

    def prior_samples(self, mu: np.ndarray, count: int, seed: int) -> np.ndarray:
        """Samples of N(μ, diag(var) + U Uᵀ), shape (count, n); sample k depends only on
        (seed, k), so a distributed update draws the very same samples."""
        return mu + np.stack([prior_deviation(seed, k, np.sqrt(self.var), self.U, np.arange(len(mu)))
                              for k in range(count)])

    def prior_variance(self) -> np.ndarray:
        return self.var + (0 if self.U is None else (self.U ** 2).sum(1))

    def posterior(self, mu: np.ndarray, samples: int, seed: int, probes: int = VARIANCE_PROBES,
                  entries: slice | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, marginal variance, posterior samples) from the one factorisation: the mean's
        solve, then the samples' and the variance probes' right-hand sides in a single block
        solve. ``entries`` (a slice of x, all by default) selects the entries of the variance
        and of the samples that are returned. The variance is the probe estimate of
        :meth:`variance` (``probes`` = 0: the exact dense formula)."""
        m = self.mean(mu)
        t0 = time.perf_counter()
        entries = slice(None) if entries is None else entries
        xs = self.prior_samples(mu, samples, seed) if samples else np.zeros((0, len(mu)))
        r_samples = self.b[:, None] - self.G @ xs.T
        if self.sigma and samples:
            r_samples -= self.sigma * np.stack([normals(seed, NOISE_ROWS, k, self.G.shape[0])
                                                for k in range(samples)], axis=1)
        if probes:
            Z, X, R = self._probe_rhs(probes, seed)
            Y = self.solve(np.concatenate([r_samples, R], axis=1))
            v = self._probe_variance(Z, X, R, Y[:, samples:], entries)
            Y = Y[:, :samples]
        else:
            Y = self.solve(r_samples)
            v = self.variance(exact=True)[entries]
        post = xs[:, entries] + self._sigma_Gt(Y, entries).T
        self._tick("posterior", t0)
        return m, v, post

    def _sigma_Gt(self, Y: np.ndarray, entries: slice) -> np.ndarray:
        """(Σ Gᵀ Y)[entries] for Y: rows × k."""
        GtY = self.plan.GT[entries] @ Y
        out = self.var[entries, None] * GtY
        if self.U is not None:
            out = out + self.U[entries] @ (self.W.T @ Y)
        return out

    # -- the marginal variance -----------------------------------------------------------
    def _probe_rhs(self, probes: int, seed: int):
        """Rademacher probes: X (n × K), samples of a zero-mean prior with covariance Σ
        (diag(√var) Z, plus U Z₂ with an ensemble part), and their right-hand sides R = G X."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, NOISE_PROBES]))
        Z = rng.integers(0, 2, size=(self.G.shape[1], probes), dtype=np.int8) * 2.0 - 1.0
        X = np.sqrt(self.var)[:, None] * Z
        if self.U is not None:
            X += self.U @ (rng.integers(0, 2, size=(self.U.shape[1], probes), dtype=np.int8) * 2.0 - 1.0)
        return Z, X, self.G @ X

    def _A_diagonal(self) -> np.ndarray:
        return self._A0_diagonal + (0 if self.U is None else (self.W ** 2).sum(1))

    def _local_reduction(self, entries: slice) -> np.ndarray:
        """diag(D Gᵀ D_A⁻¹ G D)[entries] for Σ = D = diag(var), D_A = diag(A): the variance
        reduction if A were its diagonal, exactly (the control variate of the probe estimate)."""
        return self.var[entries] ** 2 * (self.plan.G2T[entries] @ (1.0 / self._A_diagonal()))

    def _probe_variance(self, Z, X, R, Y, entries: slice = slice(None)) -> np.ndarray:
        """diag(Σ̃)[entries] from K probes X with Y = A⁻¹ G X, by two unbiased estimators
        weighted per entry by the inverse of their empirical variances:

        - squares: the probes conditioned by Matheron's rule, x̃ = X − Σ Gᵀ Y, have
          covariance Σ̃, so mean_k x̃_ik² estimates Σ̃_ii (relative error ≈ √(2/K), never < 0);
        - Hutchinson (diagonal Σ only): Σ̃_ii = var_i − diag(B)_i with B = Σ Gᵀ A⁻¹ G Σ, its exact
          local part diag(C) (C = Σ Gᵀ D_A⁻¹ G Σ) plus mean_k z_ik s_i ((B − C) S⁻¹ z_k)_i, whose
          error vanishes on entries the rows constrain little.

        ``self.probe_error`` is the estimate's own relative standard error per entry."""
        K = X.shape[1]
        post = X[entries] - self._sigma_Gt(Y, entries)
        squares = post ** 2
        est, se2 = squares.mean(axis=1), squares.var(axis=1) / K
        if self.U is None:
            rest = self._sigma_Gt(Y - R / self._A_diagonal()[:, None], entries)
            terms = np.sqrt(self.var[entries])[:, None] * Z[entries] * rest
            hutchinson = self.var[entries] - self._local_reduction(entries) - terms.mean(axis=1)
            h2 = terms.var(axis=1) / K
            w, wh = 1.0 / np.maximum(se2, 1e-300), 1.0 / np.maximum(h2, 1e-300)
            est, se2 = (w * est + wh * hutchinson) / (w + wh), 1.0 / (w + wh)
        est = np.maximum(est, 0.0)
        self.probe_error = np.sqrt(se2) / np.maximum(est, 1e-300)
        return est

    def variance(self, exact: bool | None = None, samples: int = VARIANCE_PROBES, seed: int = 0) -> np.ndarray:
        """diag(Σ̃): exact (the dense formula, rows × n: for small problems and as the
        reference), else the probe estimate with ``samples`` Rademacher probes."""
        rows = self.G.shape[0]
        if exact is None:
            exact = rows <= EXACT_VARIANCE_ROWS
        if exact:
            SGt = self.sigma_times(self.G.T.toarray())            # n × rows
            return self.prior_variance() - np.einsum("ij,ji->i", SGt, self.solve(SGt.T))
        Z, X, R = self._probe_rhs(samples, seed)
        return self._probe_variance(Z, X, R, self.solve(R))

    def gather(self, x: np.ndarray) -> np.ndarray:
        return x

    def residual(self, x: np.ndarray) -> np.ndarray:
        return self.G @ x - self.b

    def destroy(self) -> None:
        """Free a solver the plan does not keep (CG's)."""
        if isinstance(self._lu, _IterativeSolver):
            self._lu.destroy()
