"""One GPME / Burgers or wave scenario solved over the ranks of a communicator (``[solver]
parallel = "partition"``).

The serial :class:`~hybrid.solvers.gpme.GPMESolver` solves each Newton step with LU on one
rank. Here each rank owns the control volumes of its part of DOLFINx's partition of the mesh
(``cv.cv_owner``, :func:`hybrid.mesh.distribute.partition_owners`):

* the Jacobian is a PETSc MPIAIJ matrix whose rows are the owned control volumes, numbered
  rank by rank (the mesh's original numbering is kept everywhere else);
* each rank assembles its rows only: the flux pieces of the faces of its own control volumes
  (ghost faces included, each computed by both ranks that own an end), and the residual of
  its own rows;
* Newton–Krylov: GMRES preconditioned by algebraic multigrid (hypre's BoomerAMG; GAMG where
  PETSc has no hypre), with the case's ``[solver] petsc_options`` under the prefix
  ``hybrid_solver_`` on top;
* between Newton iterations the ranks exchange their states (one allgather), so every rank
  holds the whole state, and after each step the recorded fluxes and the conservative update
  are computed on the whole mesh as in the serial solver, so every control volume's balance
  closes to round-off, faces between ranks included, and every rank holds the same trajectory.

The wave equation's steps are linear with one matrix per step size
(:class:`PartitionWaveSolver`): the same rows over the partition, GMRES with BoomerAMG instead
of the serial LU, the rest of each step on the whole mesh.

The trajectory agrees with the serial solver's to the Newton (or linear) tolerance, in the
mesh's original numbering, at any number of ranks (tested at 1 and 2).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from mpi4py import MPI
from petsc4py import PETSc

from hybrid.petsc_options import SOLVER_PREFIX
from hybrid.solvers.gpme import GPMESolver
from hybrid.solvers.wave import WaveSolver

__all__ = ["PartitionGPMESolver", "PartitionWaveSolver", "KSP_RTOL"]

KSP_RTOL = 1e-12   # of each Newton step's linear solve (the Newton
                   # tolerance is 1e-10 of the first residual)


def _gmres_amg(ksp) -> None:
    """GMRES to KSP_RTOL preconditioned by hypre's BoomerAMG (GAMG where PETSc has no hypre)."""
    ksp.setType("gmres")
    ksp.setTolerances(rtol=KSP_RTOL, atol=0.0, max_it=500)
    pc = ksp.getPC()
    try:
        pc.setType("hypre")
        pc.setHYPREType("boomeramg")
    except PETSc.Error:   # a PETSc without hypre
        pc.setType("gamg")


class _Owned:
    """The control volumes' ownership over ``comm`` that both partitioned solvers share: PETSc
    numbering rank by rank (original order within), this rank's control volumes ``own``, and the
    whole state on every rank from each rank's own values."""

    def _own(self, cv, comm: MPI.Comm) -> None:
        if cv.cv_owner is None:
            raise RuntimeError("the control volumes have no owners: call assign_owners() first")
        self.comm = comm
        owner = np.asarray(cv.cv_owner, np.int64)
        order = np.argsort(owner, kind="stable")
        self.petsc_of = np.empty(len(owner), np.int64)
        self.petsc_of[order] = np.arange(len(owner))
        counts = np.bincount(owner, minlength=comm.size)
        start = np.concatenate([[0], np.cumsum(counts)])
        self.counts, self.order = counts, order
        # this rank's control volumes, PETSc order
        self.own = order[start[comm.rank]:start[comm.rank + 1]]
        self.mine = np.zeros(len(owner), bool)
        self.mine[self.own] = True

    def _whole(self, local: np.ndarray) -> np.ndarray:
        """Every control volume's value, original numbering, from each rank's own values."""
        gathered = np.empty(len(self.order))
        self.comm.Allgatherv(np.ascontiguousarray(local, float), [gathered, self.counts])
        out = np.empty(len(self.order))
        out[self.order] = gathered
        return out


class PartitionGPMESolver(_Owned, GPMESolver):
    """:class:`~hybrid.solvers.gpme.GPMESolver` over ``comm`` (see the module's docstring);
    ``cv`` must carry its owners (``cv.assign_owners``), the same on every rank."""

    def __init__(self, cv, *args, comm: MPI.Comm = MPI.COMM_WORLD, **kwargs):
        self._own(cv, comm)
        super().__init__(cv, *args, **kwargs)

    # ------------------------------------------------------------------ set-up
    def _assembly_pieces(self):
        """The pieces of the faces that have an own control volume at either end."""
        cv, P = self.cv, self.cv.pieces
        a, b = cv.face_cv[P.face, 0], cv.face_cv[P.face, 1]
        return P.select(self.mine[a] | ((b >= 0) & self.mine[np.maximum(b, 0)]))

    def _build_pattern(self) -> None:
        super()._build_pattern()
        # this rank's rows of the pattern, columns in PETSc numbering and sorted within each row
        rows, cols, take = [], [], []
        for r in self.own:
            lo, hi = self.indptr[r], self.indptr[r + 1]
            c = self.petsc_of[self.indices[lo:hi]]
            k = np.argsort(c)
            cols.append(c[k])
            take.append(lo + k)
            rows.append(hi - lo)
        self.local_indptr = np.concatenate([[0], np.cumsum(rows)]).astype(PETSc.IntType)
        self.local_indices = (np.concatenate(cols) if cols
                              else np.zeros(0, np.int64)).astype(PETSc.IntType)
        self.local_take = np.concatenate(take) if take else np.zeros(0, np.int64)

    def _setup_snes(self) -> None:
        comm, n = self.comm, len(self.own)
        self.J = PETSc.Mat().createAIJ([(n, self.N), (n, self.N)],
                                       csr=(self.local_indptr, self.local_indices,
                                            np.zeros(len(self.local_indices))),
                                       comm=comm)
        self.J.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
        self.r = self.J.createVecLeft()
        self.x = self.J.createVecRight()
        snes = PETSc.SNES().create(comm)
        _gmres_amg(snes.getKSP())
        self._configure_snes(snes)

    # ---------------------------------------------------------------- the whole state on every rank
    def _set_state(self, u: np.ndarray) -> None:
        self.x.setArray(u[self.own])

    def _get_state(self) -> np.ndarray:
        return self._whole(self.x.getArray(readonly=True))

    def _residual_scale(self, u0: np.ndarray) -> float:
        local = float(np.abs(self._residual(u0)[self.own]).max()) if len(self.own) else 0.0
        return self.comm.allreduce(local, op=MPI.MAX)

    def _snes_residual(self, snes, x, f) -> None:
        f.setArray(self._residual(self._whole(x.getArray(readonly=True)))[self.own])

    def _snes_jacobian(self, snes, x, J, P) -> None:
        values = self._jacobian_values(self._whole(x.getArray(readonly=True)))
        P.setValuesCSR(self.local_indptr, self.local_indices, values[self.local_take])
        P.assemble()
        if J != P:
            J.assemble()

    def linear_iterations(self) -> int:
        """The last Newton step's linear iterations, summed over its Newton iterations."""
        return int(self.snes.getLinearSolveIterations())


class PartitionWaveSolver(_Owned, WaveSolver):
    """:class:`~hybrid.solvers.wave.WaveSolver` over ``comm``: each step's linear system
    M u^{k+1} = rhs (fixed per step size) is a PETSc MPIAIJ matrix of each rank's own rows,
    solved by GMRES with BoomerAMG to KSP_RTOL (``[solver] petsc_options`` under
    ``hybrid_solver_`` on top) instead of the serial LU; the solution is gathered on every rank
    and the impulse, the velocities and the conservative update are the serial solver's, on the
    whole mesh, so every balance closes to round-off and every rank holds the same trajectory."""

    def __init__(self, cv, *args, comm: MPI.Comm = MPI.COMM_WORLD, **kwargs):
        self._own(cv, comm)
        super().__init__(cv, *args, **kwargs)

    def _solver(self, dt: float):
        if dt not in self._factor:
            M = self._system(dt)[self.own]
            local = sp.csr_matrix((M.data, self.petsc_of[M.indices], M.indptr), shape=M.shape)
            local.sort_indices()
            self._factor[dt] = _DistributedSolve(local, self)
        return self._factor[dt]

    def linear_iterations(self) -> int:
        """The linear iterations of the latest solve, the largest over the step sizes' solvers."""
        return max((f.ksp.getIterationNumber() for f in self._factor.values()), default=0)

    def close(self) -> None:
        """Free the PETSc solvers."""
        for solve in self._factor.values():
            solve.destroy()
        super().close()


class _DistributedSolve:
    """M x = rhs over the partition (``owned``: the solver's ownership; M's own rows in PETSc
    numbering); :meth:`solve` takes and returns whole vectors in the original numbering."""

    def __init__(self, M, owned: _Owned):
        self.owned = owned
        n, N = M.shape
        IT = PETSc.IntType
        self.M = PETSc.Mat().createAIJ([(n, N), (n, N)], csr=(M.indptr.astype(IT),
                                                            M.indices.astype(IT), M.data),
                                       comm=owned.comm)
        self.b, self.x = self.M.createVecLeft(), self.M.createVecRight()
        ksp = self.ksp = PETSc.KSP().create(owned.comm)
        ksp.setOperators(self.M)
        _gmres_amg(ksp)
        ksp.setOptionsPrefix(SOLVER_PREFIX)
        ksp.setFromOptions()

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """x, whole, from the whole right-hand side (each rank sets its own rows)."""
        self.b.setArray(rhs[self.owned.own])
        self.ksp.solve(self.b, self.x)
        if self.ksp.getConvergedReason() < 0:
            raise RuntimeError(f"the wave step's linear solve did not converge (reason "
                               f"{self.ksp.getConvergedReason()})")
        return self.owned._whole(self.x.getArray(readonly=True))

    def destroy(self) -> None:
        """Free the PETSc objects."""
        for obj in (self.ksp, self.M, self.b, self.x):
            obj.destroy()
