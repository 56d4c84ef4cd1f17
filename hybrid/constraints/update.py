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


EXACT_VARIANCE_ROWS = 2000  # variance(exact=None): the dense formula
                            # up to here, the probe estimate above
DIRECT_ROWS = 30000  # sparse Cholesky up to here (one factorisation
                     # serves every block solve), CG + AMG above
NATIVE_ROWS = (2000, 20000)  # the plan's Cholesky of rows on 2-D and 3-D meshes:
                             # PETSc's own with nested dissection between these
# Measured on space-time rows of a 2-D mesh at 9,700 rows: PETSc's own refactors in 70 ms
# against CHOLMOD's 200 and MUMPS's 120, its solves 1.0 against 4.2 and 3.3 ms; at 98,710 rows
# CHOLMOD and MUMPS refactor faster; on 1-D meshes CHOLMOD refactors 15-60% faster
# (benchmarks/constraints.py --only packages).
VARIANCE_PROBES = 256  # Rademacher probes of the marginal-variance estimate
KEPT_NORMALS = 20_000_000   # standard normals a plan keeps for its scenarios' prior samples
PROBE_ROUND = 32  # probes per round of the variance estimate
PROBE_TARGET = 0.03  # the variance estimate stops adding probes at
                     # this relative RMS error (its own estimate)
PINNED = 1e-2  # posterior / prior variance below which an
               # entry's probe error counts against its prior
PROBE_RTOL = 1e-3  # relative residual of the probes' iterative
                   # solves (their statistical error is ~1e-2)
PCG_NEIGHBOURS = 3.0  # plan method "auto": PCG once rows have more
                      # same-time neighbours than this on average
PCG_MAX_ITERATIONS = 300
REFINEMENT_STEPS = 4  # of the mean's solve, until its residual is 1e-14 of the defect
PCG_SWITCH = 60  # mean iterations above which the samples
                 # and probes use the plan's Cholesky instead
OPTIONS_PREFIX = "hybrid_update_"  # PETSc options of the update's solvers:
                                   # -hybrid_update_pc_factor_mat_solver_type mumps
_SINGULAR = ("G Σ Gᵀ is singular: some rows are redundant or inconsistent (e.g. global rows "
             "together with all per-cell "
             "rows), or touch only entries the prediction is certain of (zero variance)")


# independent random streams of one seed
NOISE_DIAGONAL, NOISE_MEMBERS, NOISE_ROWS, NOISE_PROBES = 0, 1, 2, 3


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


def same_matrix(G: sp.spmatrix, reference: sp.csr_matrix) -> bool:
    """Whether ``G`` equals ``reference`` (a CSR matrix with sorted indices) in shape, sparsity
    pattern and values."""
    G = sp.csr_matrix(G, dtype=np.float64)
    G.sort_indices()
    return (G.shape == reference.shape and G.nnz == reference.nnz
            and np.array_equal(G.indptr, reference.indptr)
            and np.array_equal(G.indices, reference.indices)
            and np.array_equal(G.data, reference.data))


def multiple_of(var: np.ndarray, shape: np.ndarray) -> float | None:
    """The scale s > 0 with ``var`` = s · ``shape`` (to 1e-12 relative), else None."""
    k = int(np.argmax(shape))
    if shape[k] <= 0 or var[k] <= 0:
        return None
    s = float(var[k] / shape[k])
    return s if np.allclose(var, s * shape, rtol=1e-12, atol=0.0) else None


class ConstraintError(CaseError):
    """The rows cannot be imposed: redundant or inconsistent, or touching only certain entries.
    A case asking for such rows gets this one message (exit code 2)."""


MUMPS_MEMORY_SHARE = 0.6   # of the memory available when a factorisation
                           # starts, split evenly over the ranks


def memory_budget_mb(comm=None) -> int:
    """MUMPS's working-memory limit per process (ICNTL(23), MB): MUMPS_MEMORY_SHARE of the
    smallest MemAvailable any rank of ``comm`` sees, over the number of ranks (they share one
    machine under ``mpirun`` here; on several nodes the limit is only looser). Over it, MUMPS
    refuses the factorisation (INFO(1) = -19) instead of the kernel killing the run."""
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) for line in f
                             if line.startswith("MemAvailable:")) / 1024
    except (OSError, StopIteration, ValueError):
        return 0   # 0: no limit
    if comm is not None and comm.size > 1:
        from mpi4py import MPI
        available = comm.allreduce(available, op=MPI.MIN) / comm.size
    return max(int(MUMPS_MEMORY_SHARE * available), 1)


def limit_mumps_memory(pc, comm=None) -> None:
    """Set ICNTL(23) of a MUMPS Cholesky PC (operators set) to :func:`memory_budget_mb`."""
    pc.setFactorSetUpSolverType()
    pc.getFactorMatrix().setMumpsIcntl(23, memory_budget_mb(comm))


def factored_solve(ksp, b, x, r: np.ndarray, comm) -> np.ndarray:
    """A factored KSP's solution for this process's rows of one right-hand side (``b`` and
    ``x`` its work vectors) or of a block (rows × k: one MatMatSolve with the factor)."""
    from petsc4py import PETSc

    if r.ndim == 1:
        b.setArray(r)
        ksp.solve(b, x)
        return x.getArray().copy()
    B = PETSc.Mat().createDense(((r.shape[0], None), (None, r.shape[1])), comm=comm)
    B.setUp()
    B.getDenseArray()[:] = r
    B.assemble()
    X = B.duplicate()
    ksp.getPC().getFactorMatrix().matSolve(B, X)
    out = X.getDenseArray().copy()
    B.destroy()
    X.destroy()
    return out


def mumps_error(ksp) -> int:
    """MUMPS's INFOG(1) after a KSP's set-up when it is negative (a refused or failed
    factorisation, which PETSc reports in the factor, not as an exception); else 0."""
    pc = ksp.getPC()
    if pc.getType() not in ("cholesky", "lu") or pc.getFactorSolverType() != "mumps":
        return 0
    code = int(pc.getFactorMatrix().getMumpsInfog(1))
    return code if code < 0 else 0


class _CholeskySolver:
    """Sparse Cholesky factorisation of the SPD A₀ through PETSc: ``solver`` (a PETSc factor
    package; PETSc's own uses nested dissection), by default CHOLMOD where PETSc has it, else
    MUMPS (``limited``: MUMPS under the memory limit).
    The pattern is fixed when it is built: the fill-reducing ordering and the symbolic
    factorisation are done once, every :meth:`factor` of new values on that pattern is
    numeric only, and :meth:`solve` takes a block of right-hand sides in one call."""

    def __init__(self, pattern: sp.csr_matrix, solver: str | None = None, limited: bool = False):
        from petsc4py import PETSc

        self.PETSc = PETSc
        IT = PETSc.IntType
        self.indptr, self.indices = pattern.indptr.astype(IT), pattern.indices.astype(IT)
        self.rows = pattern.shape[0]
        self.mat = PETSc.Mat().createAIJ(pattern.shape,
                                         csr=(self.indptr, self.indices, np.ones(pattern.nnz)),
                                         comm=PETSc.COMM_SELF)
        self.mat.setOption(PETSc.Mat.Option.SPD, True)
        self.ksp = PETSc.KSP().create(PETSc.COMM_SELF)
        self.ksp.setOptionsPrefix(OPTIONS_PREFIX)
        self.ksp.setType("preonly")
        pc = self.ksp.getPC()
        pc.setType("cholesky")
        pc.setFactorSolverType("mumps" if limited else solver or _factor_package())
        if pc.getFactorSolverType() == "petsc":
            pc.setFactorOrdering("nd")
        if limited:   # a factorisation nobody sized: MUMPS under the memory limit, refusing past it
            self.ksp.setOperators(self.mat)
            limit_mumps_memory(pc)
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
            raise ConstraintError(f"{_SINGULAR} (Cholesky failed: PETSc error "
                                  f"{exc.ierr})") from None
        refused = mumps_error(self.ksp)
        if refused:
            raise ConstraintError(f"the Cholesky failed: MUMPS error INFOG(1) = {refused}"
                                  f"{' (over the memory limit)' if refused in (-9, -19) else ''}")
        if not self.checked:   # redundancy is a property of G's
                               # pattern: test one known solution once
            A = sp.csr_matrix((values, self.indices, self.indptr), shape=(self.rows, self.rows))
            v = np.random.default_rng(0).standard_normal(self.rows)
            err = np.abs(self.solve(A @ v) - v).max() / np.abs(v).max()
            if not np.isfinite(err) or err > 1e-6:
                raise ConstraintError(f"{_SINGULAR} (a test solve is off by {err:.1e})")
            self.checked = True

    def solve(self, r: np.ndarray, rtol: float | None = None) -> np.ndarray:
        """A₀⁻¹ r (exact: ``rtol`` is for the iterative solvers' signature)."""
        return factored_solve(self.ksp, self.b, self.x, r, self.PETSc.COMM_SELF)

    def destroy(self) -> None:
        for obj in (self.ksp, self.mat, self.b, self.x):
            obj.destroy()


def _factor_package() -> str:
    """The fastest sparse Cholesky PETSc was built with (measured in benchmarks/constraints.py)."""
    global _PACKAGE
    if _PACKAGE is None:
        from petsc4py import PETSc

        one = PETSc.Mat().createAIJ((1, 1), csr=(np.array([0, 1], PETSc.IntType),
                                                 np.array([0], PETSc.IntType), np.ones(1)),
                                    comm=PETSc.COMM_SELF)
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

    def __init__(self, G: sp.csr_matrix, direct: bool | None = None, layout=None,
                 method: str = "auto"):
        self._given = G   # the matrix as passed: the same object matches without a comparison
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
            r, g = Gc.indices[idx].astype(np.int64), Gc.data[idx]   # row × rows overflows int32
            pos.append(np.searchsorted(keys, (r[:, :, None] * rows + r[:, None, :]).ravel()))
            col.append(np.repeat(cols, k * k))
            val.append((g[:, :, None] * g[:, None, :]).ravel())
        pos, col, val = (np.concatenate(a) if a else np.zeros(0) for a in (pos, col, val))
        self.P = sp.csr_matrix((val, (pos.astype(np.int64), col.astype(np.int64))),
                               shape=(pattern.nnz, n))
        self.diagonal = np.searchsorted(keys, np.arange(rows) * rows + np.arange(rows))
        self.GT = G.T.tocsr()                      # Gᵀ and (G ∘ G)ᵀ by rows:
                                                   # the variance's products
        self.G2T = G.multiply(G).T.tocsr()
        if direct is not None:   # the older switch: the Cholesky or CG + AMG
            method = "cholesky" if direct else "cg-amg"
        self.same_time = None
        spatial = 0.0
        if layout is not None:
            # the output time of each row: the latest time among its entries (x's layout: T state
            # blocks, T flux blocks)
            entry_time = np.concatenate([np.repeat(np.arange(layout.T), layout.N),
                                         np.repeat(np.arange(layout.T), layout.F)])
            row_time = (np.maximum.reduceat(entry_time[G.indices], G.indptr[:-1]) if G.nnz
                        else np.zeros(rows, int))
            row_of = self._row_of = np.repeat(np.arange(rows), np.diff(pattern.indptr))
            self.same_time = row_time[row_of] == row_time[pattern.indices]
            off = row_of != pattern.indices
            spatial = np.count_nonzero(self.same_time & off) / max(rows, 1)
            # the preconditioners are principal block-diagonal parts of A₀ (so SPD): the rows of one
            # output time, or the rows joined by couplings across times (each control volume's
            # chain)
            from scipy.sparse.csgraph import connected_components

            across = ~self.same_time
            graph = sp.csr_matrix((np.ones(np.count_nonzero(across)),
                                   (row_of[across], pattern.indices[across])),
                                  shape=pattern.shape)
            chain = connected_components(graph, directed=False)[1]
            self._blocks = {"space": self.same_time,
                            "time": chain[row_of] == chain[pattern.indices]}
        self.wide = spatial > PCG_NEIGHBOURS   # rows of a 2-D or 3-D mesh
        if method == "auto":
            # 1-D meshes (two neighbours per row in space) factor cheaply; wider stencils fill in
            method = "pcg" if layout is not None and self.wide else \
                "cholesky" if rows <= DIRECT_ROWS else "cg-amg"
        if method == "pcg" and layout is None:
            raise ValueError("the time-block PCG needs the state layout")
        self.method = method
        self.direct = method != "cg-amg"
        self._solver, self._preconditioners = None, {}
        self.shape, self._fixed, self.fixed_variance, self.fixed_samples = None, None, {}, {}
        self.normals = {}   # (seed, count, n): the prior samples' standard normals

    def matches(self, G: sp.spmatrix) -> bool:
        """Whether ``G`` is the plan's G: the same shape, sparsity pattern and values (the
        object the plan was built from, or its copy, is taken as unchanged)."""
        return G is self._given or G is self.G or same_matrix(G, self.G)

    def values(self, var: np.ndarray, sigma: float) -> np.ndarray:
        """A₀'s CSR values for diag(var) and σ_G."""
        out = self.P @ var
        if sigma:
            out[self.diagonal] += sigma ** 2
        return out

    def prepare(self, var, sigma: float = 0.0) -> None:
        """Build what the plan keeps for every later solve (the Cholesky's ordering and symbolic
        factorisation, or the PCG preconditioner's) on these variances, so that the scenarios'
        updates on the plan do numeric work only."""
        values = self.values(np.broadcast_to(np.asarray(var, np.float64), (self.G.shape[1],)),
                             sigma)
        solver = self.solver(values)
        if self.method == "cg-amg":   # CG + AMG keeps nothing on the plan
            solver.destroy()

    def _cholesky(self) -> "_CholeskySolver":
        """A Cholesky solver on the plan's pattern (PETSc's own with nested dissection for rows of
        2-D and 3-D meshes within NATIVE_ROWS; above DIRECT_ROWS rows, MUMPS under the memory
        limit of :func:`memory_budget_mb`: past it, a ConstraintError)."""
        rows = self.pattern.shape[0]
        native = self.wide and NATIVE_ROWS[0] <= rows <= NATIVE_ROWS[1]
        return _CholeskySolver(self.pattern, solver="petsc" if native else None,
                               limited=rows > DIRECT_ROWS)

    def _exact(self, values: np.ndarray) -> "_CholeskySolver":
        """The plan's Cholesky with these values."""
        if self._solver is None:
            self._solver = self._cholesky()
        self._solver.factor(values)
        return self._solver

    @property
    def can_fix(self) -> bool:
        """Whether :meth:`fix` factors (up to DIRECT_ROWS rows)."""
        return self.pattern.shape[0] <= DIRECT_ROWS

    def fix(self, shape: np.ndarray, seed: int = 0) -> bool:
        """Factor A₀ = G diag(shape) Gᵀ once, for a case whose scenarios' priors are multiples
        s·diag(shape) of one shape (σ_G = 0, no ensemble part): a :class:`GaussianUpdate` whose
        variances are such a multiple solves with this factorisation divided by s instead of
        refactoring, and its marginal variance is s times the shape's, computed once (its probes
        seeded by ``seed``, so every rank and scenario order gets the same). False, and nothing
        kept, above DIRECT_ROWS rows, where one factorisation can take minutes."""
        if not self.can_fix:
            return False
        self.release_shape()
        self.shape = np.broadcast_to(np.asarray(shape, np.float64), (self.G.shape[1],)).copy()
        values = self.values(self.shape, 0.0)
        self._fixed = self._cholesky()
        self._fixed.factor(values)
        self.fixed_diagonal = values[self.diagonal]
        self.fixed_seed, self.fixed_variance, self.fixed_samples = seed, {}, {}
        return True

    def scale_of(self, var: np.ndarray) -> float | None:
        """The scale s with ``var`` = s · the fixed shape (to 1e-12 relative), else None."""
        return None if self.shape is None else multiple_of(var, self.shape)

    def release_shape(self) -> None:
        """Free the fixed shape's factorisation, variance and deviations (:meth:`fix`)."""
        if self._fixed is not None:
            self._fixed.destroy()
        self.shape, self._fixed, self.fixed_variance, self.fixed_samples = None, None, {}, {}

    def solver(self, values: np.ndarray):
        """The solver of A₀ with these values: the plan's Cholesky refactored, or CG + AMG."""
        if self.method == "cg-amg":
            A0 = sp.csr_matrix((values, self.pattern.indices, self.pattern.indptr),
                               shape=self.pattern.shape)
            return _IterativeSolver.from_scipy(A0)
        if self.method == "pcg":
            return self._pcg(values)
        return self._exact(values)

    def _pcg(self, values: np.ndarray) -> "_BlockPCG":
        """CG preconditioned by a block-diagonal part of A₀: the blocks of the output times (one
        spatial system per time) or of the chains in time, whichever drops the smaller sum of
        squares of A₀'s entries."""
        dropped = {keep: float(np.sum(values[~mask] ** 2)) for keep, mask in self._blocks.items()}
        keep = min(dropped, key=dropped.get)
        mask = self._blocks[keep]
        if keep not in self._preconditioners:
            counts = np.bincount(self._row_of[mask], minlength=self.pattern.shape[0])
            sub = sp.csr_matrix((np.ones(np.count_nonzero(mask)), self.pattern.indices[mask],
                                 np.concatenate([[0], np.cumsum(counts)])),
                                shape=self.pattern.shape)
            self._preconditioners[keep] = _CholeskySolver(sub)
        pre = self._preconditioners[keep]
        pre.factor(values[mask])
        A0 = sp.csr_matrix((values, self.pattern.indices, self.pattern.indptr),
                           shape=self.pattern.shape)
        return _BlockPCG(A0, pre, self)

    def destroy(self) -> None:
        """Free the plan's Cholesky and preconditioners; a later solve builds them again."""
        if self._solver is not None:
            self._solver.destroy()
            self._solver = None
        for pre in self._preconditioners.values():
            pre.destroy()
        self._preconditioners, self.normals = {}, {}
        self.release_shape()


class _BlockPCG:
    """Preconditioned CG on a block of right-hand sides at once (one independent CG per
    column, vectorised), to a relative residual ``rtol``; a column still short of it after
    PCG_MAX_ITERATIONS is solved by the exact Cholesky of the plan instead (up to DIRECT_ROWS
    rows; CG + GAMG above), and the plan uses that solver from then on (on a 28,469-CV
    L-shape × 10 intervals, the time-block preconditioner did not converge for flux inflations
    λ ≤ 10³: those λ were skipped before; on a 51,836-CV box the serial Cholesky of 518,360
    rows took more than 3 minutes)."""

    def __init__(self, A0: sp.csr_matrix, preconditioner: "_CholeskySolver", plan: "UpdatePlan"):
        self.A0, self.pre, self.plan = A0, preconditioner, plan
        self.iterations = 0

    def solve(self, r: np.ndarray, rtol: float = 1e-13) -> np.ndarray:
        one = r.ndim == 1
        R = r[:, None] if one else r
        X = np.zeros_like(R)
        norm0 = np.sqrt((R ** 2).sum(axis=0))
        target = rtol * np.maximum(norm0, 1e-300)
        res = R.copy()
        active = norm0 > 0
        Z = self.pre.solve(res)
        P = Z.copy()
        rz = (res * Z).sum(axis=0)
        for _ in range(PCG_MAX_ITERATIONS):
            if not active.any():
                break
            AP = self.A0 @ P
            pAp = (P * AP).sum(axis=0)
            alpha = np.where(active & (pAp > 0), rz / np.where(pAp > 0, pAp, 1.0), 0.0)
            X += alpha * P
            res -= alpha * AP
            active &= np.sqrt((res ** 2).sum(axis=0)) > target
            self.iterations += 1
            Z = self.pre.solve(res)
            rz_new = (res * Z).sum(axis=0)
            P = Z + np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0) * P
            rz = rz_new
        if active.any():   # not converged: another solver for these
                           # columns, and for the plan's later solves
            if self.A0.shape[0] <= DIRECT_ROWS:
                X[:, active] = self.plan._exact(self.A0.data).solve(R[:, active])
                self.plan.method = "cholesky"
            else:   # a factorisation of this size could take
                    # minutes and most of the memory (3-D meshes)
                fallback = _IterativeSolver.from_scipy(self.A0)
                try:
                    X[:, active] = fallback.solve(R[:, active], rtol)
                finally:
                    fallback.destroy()
                self.plan.method = "cg-amg"
        return X[:, 0] if one else X


class _ScaledSolver:
    """Solves with s · A₀ through A₀'s factorisation (the plan's fixed shape,
    :meth:`UpdatePlan.fix`)."""

    def __init__(self, factor: "_CholeskySolver", scale: float):
        self.factor, self.scale = factor, scale

    def solve(self, r: np.ndarray, rtol: float | None = None) -> np.ndarray:
        return self.factor.solve(r) / self.scale


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
        mat = PETSc.Mat().createAIJ(A.shape,
                                    csr=(A.indptr.astype(IT), A.indices.astype(IT), A.data),
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
            raise ConstraintError(f"{_SINGULAR} (CG did not converge: reason "
                                  f"{self.ksp.getConvergedReason()})")
        return self.x.getArray().copy()

    def solve(self, r: np.ndarray, rtol: float | None = None) -> np.ndarray:
        """A₀⁻¹ r (a vector or a block, column by column) to the relative residual ``rtol``
        (the solver's own when None: the probes of the variance ask for less)."""
        default = self.ksp.getTolerances()[0]
        if rtol is not None:
            self.ksp.setTolerances(rtol=rtol)
        try:
            if r.ndim == 1:
                return self._solve1(r)
            return np.stack([self._solve1(r[:, j]) for j in range(r.shape[1])], axis=1)
        finally:
            self.ksp.setTolerances(rtol=default)


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
    direct: bool | None = None   # None: sparse Cholesky up to DIRECT_ROWS
                                 # rows, else CG + algebraic multigrid
    plan: UpdatePlan | None = None
    layout: object = None        # x's StateLayout: lets the plan precondition CG by output time
    method: str = "auto"         # cholesky | pcg | auto (PCG for 2-D and 3-D stencils)

    def __post_init__(self) -> None:
        t0 = time.perf_counter()
        wanted = self.method if self.direct is None else ("cholesky" if self.direct else "cg-amg")
        if self.plan is None or not self.plan.matches(self.G) or \
                (wanted != "auto" and wanted != self.plan.method):
            self.plan = UpdatePlan(self.G, self.direct, self.layout, self.method)
        self.G = self.plan.G
        self.b = np.asarray(self.b, np.float64)
        self.var = np.broadcast_to(np.asarray(self.var, np.float64), (self.G.shape[1],)).copy()
        if np.any(self.var < 0) or self.sigma < 0 or not np.all(np.isfinite(self.var)):
            raise ConstraintError("variances and sigma must be finite and >= 0")
        self.entries = np.arange(self.G.shape[1])  # every entry is this process's
                                                   # (cf. DistributedUpdate)
        # a multiple of the plan's fixed shape solves with its one factorisation
        self.shape_scale = self.plan.scale_of(self.var) if self.sigma == 0 else None
        values = None if self.shape_scale is not None else self.plan.values(self.var, self.sigma)
        t1 = time.perf_counter()
        if values is None:
            self._lu = _ScaledSolver(self.plan._fixed, self.shape_scale)
            self._A0_diagonal = self.shape_scale * self.plan.fixed_diagonal
        else:
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

    def solve(self, r: np.ndarray, rtol: float = 1e-13) -> np.ndarray:
        """A⁻¹ r with A = G Σ Gᵀ + σ_G² I (r: rows, or rows × k; ``rtol``: the relative
        residual an iterative solve stops at)."""
        y = self._lu.solve(r, rtol)
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
        return self.G @ self.sigma_times(self.plan.GT @ y) + self.sigma ** 2 * y

    def mean(self, mu: np.ndarray) -> np.ndarray:
        """μ̃ = μ − Σ Gᵀ A⁻¹ (G μ − b), with iterative refinement of the solve (G μ̃ − b is
        exactly the solve's residual, so the rows hold to round-off). Sets ``defect``, the
        prior's Mahalanobis statistic of the rows' residual, rᵀ A⁻¹ r / rows (1 in expectation
        when x ~ N(μ, Σ) and the rows hold for x)."""
        t0 = time.perf_counter()
        r = self.G @ mu - self.b
        y = self.solve(r)
        target, before, kept = 1e-14 * np.abs(r).max(), np.inf, y
        for _ in range(REFINEMENT_STEPS):   # iterative refinement: A can be
                                            # ill-conditioned (inflated fluxes)
            left = r - self._apply_A(y)
            size = np.abs(left).max()
            if size > before:   # the last correction made it worse: round-off, undo it
                y = kept
                break
            if size <= target or size > 0.5 * before:   # done, or stalled at round-off
                break
            kept, before = y, size
            y = y + self.solve(left)
        out = mu - self.sigma_times(self.plan.GT @ y)
        self.defect = float(r @ y) / max(len(r), 1)
        if self.sigma == 0:   # Σ Gᵀ y's round-off (large with inflated
                              # fluxes) left in G μ̃ − b: project it out once
            scale = max(np.abs(r).max(), np.abs(self.b).max(), 1e-300)
            left = self.residual(out)
            if np.abs(left).max() > 1e-15 * scale:
                out -= self.sigma_times(self.plan.GT @ self.solve(left))
                left = self.residual(out)
        self._tick("mean", t0)
        self.mean_iterations = getattr(self._lu, "iterations", 0)
        if self.sigma == 0:
            after = np.abs(left).max()
            if not np.isfinite(after) or after > 1e-8 * scale:
                raise ConstraintError(f"{_SINGULAR} (residual {after:.1e} after the update, "
                                      f"{scale:.1e} before)")
        return out

    def sample(self, x: np.ndarray, seed: int) -> np.ndarray:
        """Matheron's rule: prior samples x (k × n) to posterior samples, in one block solve."""
        xs = np.atleast_2d(x)
        r = self.b[:, None] - self.G @ xs.T
        if self.sigma:
            r -= self.sigma * np.stack([normals(seed, NOISE_ROWS, k, self.G.shape[0])
                                        for k in range(xs.shape[0])], axis=1)
        return xs + self.sigma_times(self.plan.GT @ self.solve(r)).T

    def prior_samples(self, mu: np.ndarray, count: int, seed: int) -> np.ndarray:
        """Samples of N(μ, diag(var) + U Uᵀ), shape (count, n); sample k depends only on
        (seed, k), so a distributed update draws the very same samples. The standard normals
        of the diagonal part are drawn once per (seed, count, n) and kept on the plan (up to
        KEPT_NORMALS of them; their seconds are the plan's): scenarios that share a seed scale
        the same normals by their own deviations, as they share the case shape's."""
        n = len(mu)
        draw = lambda: np.stack([normals(seed, NOISE_DIAGONAL, k, n) for k in range(count)])
        z = (self._kept(self.plan.normals, (seed, count, n), draw) if count * n <= KEPT_NORMALS
             else draw())
        out = mu + z * np.sqrt(self.var)
        if self.U is not None:
            out += np.stack([normals(seed, NOISE_MEMBERS, k, self.U.shape[1])
                             for k in range(count)]) @ self.U.T
        return out

    def prior_variance(self) -> np.ndarray:
        """diag(Σ) = var + the row sums of U ∘ U, length n."""
        return self.var + (0 if self.U is None else (self.U ** 2).sum(1))

    def posterior(self, mu: np.ndarray, samples: int, seed: int, probes: int = VARIANCE_PROBES,
                  entries: slice | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, marginal variance, posterior samples) from the one factorisation (or
        preconditioner): the mean's solve, the samples' right-hand sides in one block solve,
        and the variance of :meth:`variance` with at most ``probes`` probes (the exact dense
        formula when the rows are fewer). ``entries`` (a slice of x, all by default) selects
        the entries of the variance and of the samples that are returned."""
        m = self.mean(mu)
        t0 = time.perf_counter()
        if isinstance(self._lu, _BlockPCG) and self.mean_iterations > PCG_SWITCH and \
                self.G.shape[0] <= DIRECT_ROWS:   # a slow preconditioner: factor,
                                                  # here and for later scenarios
            self._lu = self.plan._exact(self._lu.A0.data)
            self.plan.method = "cholesky"
        entries = slice(None) if entries is None else entries
        before = self.timings.get("plan", 0.0)
        if samples and self.shape_scale is not None and self.U is None:
            post = m[entries] + np.sqrt(self.shape_scale) * self._shape_deviations(samples, entries)
        else:
            xs = self.prior_samples(mu, samples, seed) if samples else np.zeros((0, len(mu)))
            r_samples = self.b[:, None] - self.G @ xs.T
            if self.sigma and samples:
                r_samples -= self.sigma * np.stack([normals(seed, NOISE_ROWS, k, self.G.shape[0])
                                                    for k in range(samples)], axis=1)
            post = (xs[:, entries] + self._sigma_Gt(self.solve(r_samples), entries).T if samples
                    else xs[:, entries])
        v = self._variance(probes, seed, entries)
        self._tick("posterior", t0 + self.timings.get("plan", 0.0) - before)
        return m, v, post

    def _shape_deviations(self, samples: int, entries: slice) -> np.ndarray:
        """Posterior deviations δ_k = d_k − Σ₀ Gᵀ A₀⁻¹ G d_k, d_k ~ N(0, diag(shape)), of the
        plan's fixed shape (samples × entries), drawn with the plan's seed once and kept: by
        Matheron's rule μ̃ + √s δ_k are posterior samples of every multiple s of the shape (the
        rows' right-hand side and the prior mean only move μ̃), so a scenario's samples cost one
        addition. The same deviations serve every scenario (each scenario's samples are exact;
        they are not independent across scenarios)."""
        def draw():
            d = self.prior_samples(np.zeros(self.G.shape[1]), samples, self.plan.fixed_seed)
            delta = d[:, entries] - self._sigma_Gt(self.solve(self.G @ d.T), entries).T
            return delta / np.sqrt(self.shape_scale)
        return self._kept(self.plan.fixed_samples, (entries.start, entries.stop, samples), draw)

    def _kept(self, cache: dict, key, compute):
        """``cache[key]``, computed by ``compute()`` on first use (its seconds in
        ``timings["plan"]``: the fixed shape's once-per-case work)."""
        if key not in cache:
            before, t0 = self.timings.get("plan", 0.0), time.perf_counter()
            cache[key] = compute()
            # a nested _kept inside compute() added its own seconds: they are part of these
            self.timings["plan"] = before + time.perf_counter() - t0
        return cache[key]

    def _sigma_Gt(self, Y: np.ndarray, entries: slice) -> np.ndarray:
        """(Σ Gᵀ Y)[entries] for Y: rows × k."""
        GtY = self.plan.GT[entries] @ Y
        out = self.var[entries, None] * GtY
        if self.U is not None:
            out = out + self.U[entries] @ (self.W.T @ Y)
        return out

    # -- the marginal variance -----------------------------------------------------------
    def _variance(self, probes: int, seed: int, entries: slice) -> np.ndarray:
        """diag(Σ̃)[entries]: exact when the rows are no more than ``probes``, else probed in
        rounds until the estimate's own relative RMS error is PROBE_TARGET or ``probes`` are
        spent. A multiple s of the plan's fixed shape (without an ensemble part) gets s times the
        shape's variance, computed by the first such update with the plan's seed and kept (its
        seconds in ``timings["plan"]``: once per case)."""
        if self.shape_scale is None or self.U is not None:
            return self._estimate_variance(probes, seed, entries)
        def estimate():
            v = self._estimate_variance(probes, self.plan.fixed_seed, entries) / self.shape_scale
            return v, self.probe_error, getattr(self, "probes_used", 0)
        v, self.probe_error, self.probes_used = self._kept(
            self.plan.fixed_variance, (entries.start, entries.stop, probes), estimate)
        self.timings["count_probes"] = float(self.probes_used)   # behind the shape's variance
        return self.shape_scale * v

    def _estimate_variance(self, probes: int, seed: int, entries: slice) -> np.ndarray:
        """diag(Σ̃)[entries] of this update (:meth:`_variance`)."""
        if not probes or self.G.shape[0] <= probes:
            self.probe_error = np.zeros(0)
            return self.variance(exact=True)[entries]
        if self.U is None:   # Hutchinson's exact part: var − diag(D Gᵀ D_A⁻¹ G D)
            var = self.var[entries]
            self._h_base = var - var ** 2 * (self.plan.G2T[entries] @ (1.0 / self._A_diagonal()))
        self._prior_entries = self.prior_variance()[entries]
        sums, K, round_ = None, 0, 0
        count = min(PROBE_ROUND, probes)
        while count > 0:
            sums = self._probe_sums(count, seed, round_, entries, sums)
            K += count
            est, rel = self._probe_estimate(sums, K)
            rms = float(np.sqrt(np.mean(rel ** 2))) if rel.size else 0.0
            want = int(np.ceil(K * (rms / PROBE_TARGET) ** 2)) if rms > PROBE_TARGET else K
            count, round_ = min(want - K, probes - K), round_ + 1
        self.probe_error, self.probes_used = rel, K
        self.timings["count_probes"] = float(K)
        self.timings["count_iterations"] = float(getattr(self._lu, "iterations", 0))
        return est

    def _probe_sums(self, count: int, seed: int, round_: int, entries: slice,
                    sums: dict | None) -> dict:
        """Running sums over ``count`` new Rademacher probes of the two estimators' terms:
        ``sq`` = x̃_i² of the probes conditioned by Matheron's rule (X − Σ Gᵀ A⁻¹ G X, X a
        zero-mean prior sample: diag(√var) Z, plus U Z₂ with an ensemble part), and, for a
        diagonal Σ, Hutchinson's ``h`` = s_i z_i ((B − C) S⁻¹ z)_i with B = Σ Gᵀ A⁻¹ G Σ and
        its diagonal-of-A part C = Σ Gᵀ D_A⁻¹ G Σ."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, NOISE_PROBES, round_]))
        Z = rng.integers(0, 2, size=(self.G.shape[1], count), dtype=np.int8) * 2.0 - 1.0
        X = np.sqrt(self.var)[:, None] * Z
        if self.U is not None:
            X += self.U @ (rng.integers(0, 2, size=(self.U.shape[1], count), dtype=np.int8) * 2.0
                           - 1.0)
        R = self.G @ X
        Y = self.solve(R, PROBE_RTOL)
        terms = {"sq": (X[entries] - self._sigma_Gt(Y, entries)) ** 2}
        if self.U is None:
            rest = self._sigma_Gt(Y - R / self._A_diagonal()[:, None], entries)
            terms["h"] = np.sqrt(self.var[entries])[:, None] * Z[entries] * rest
        new = {k: (t.sum(axis=1), (t ** 2).sum(axis=1)) for k, t in terms.items()}
        if sums is None:
            return new
        return {k: (sums[k][0] + new[k][0], sums[k][1] + new[k][1]) for k in new}

    def _probe_estimate(self, sums: dict, K: int) -> tuple[np.ndarray, np.ndarray]:
        """(estimate, its relative standard error) from the running sums of K probes: the
        squares' mean (relative error ≈ √(2/K), never < 0) and, for a diagonal Σ, Hutchinson's
        var − diag(C) − mean(h) (its error vanishes on entries the rows constrain little),
        weighted per entry by the inverses of their empirical variances."""
        def mean_and_se2(key):
            total, total2 = sums[key]
            mean = total / K
            return mean, np.maximum(total2 / K - mean ** 2, 0.0) / K
        est, se2 = mean_and_se2("sq")
        if "h" in sums:
            h, h2 = mean_and_se2("h")
            hutchinson = self._h_base - h
            w, wh = 1.0 / np.maximum(se2, 1e-300), 1.0 / np.maximum(h2, 1e-300)
            est, se2 = (w * est + wh * hutchinson) / (w + wh), 1.0 / (w + wh)
        est = np.maximum(est, 0.0)
        # relative to the estimate, or to 1% of the prior where the rows all but fix the entry
        # (a Dirichlet value's variance is 0 up to the probes' solve tolerance)
        return est, np.sqrt(se2) / np.maximum(est, PINNED * self._prior_entries)

    def _A_diagonal(self) -> np.ndarray:
        return self._A0_diagonal + (0 if self.U is None else (self.W ** 2).sum(1))

    def variance(self, exact: bool | None = None, samples: int = VARIANCE_PROBES,
                 seed: int = 0) -> np.ndarray:
        """diag(Σ̃): exact (the dense formula, rows × n: for small problems and as the
        reference), else estimated with up to ``samples`` Rademacher probes (:meth:`_variance`)."""
        rows = self.G.shape[0]
        if exact is None:
            exact = rows <= min(EXACT_VARIANCE_ROWS, max(samples, 1))
        if exact:
            SGt = self.sigma_times(self.G.T.toarray())            # n × rows
            return self.prior_variance() - np.einsum("ij,ji->i", SGt, self.solve(SGt.T))
        return self._variance(samples, seed, slice(None))

    def gather(self, x: np.ndarray) -> np.ndarray:
        """``x`` itself: every entry is this process's (cf. ``DistributedUpdate.gather``)."""
        return x

    def residual(self, x: np.ndarray) -> np.ndarray:
        """G x − b."""
        return self.G @ x - self.b

    def destroy(self) -> None:
        """Free a solver the plan does not keep (CG's)."""
        if isinstance(self._lu, _IterativeSolver):
            self._lu.destroy()
