"""Reference solver for the wave equation u_tt = ∇·(c² ∇u) on control volumes.

As a first-order system, v = u_t:  |K| v_t + Σ_f s F_f = 0, F = -c² ∇u·n |f| (the same
face fluxes as the GPME solver with k = c²), u_t = v. Time stepping is the trapezoidal
rule on (u, v) (θ = 1/2, energy conserving; θ = 1 damps), one sparse LU per step size:

    v^{k+1} = v^k - Δt/|K| D (θ F^{k+1} + (1 - θ) F^k)
    u^{k+1} = u^k + Δt (θ v^{k+1} + (1 - θ) v^k)

The balance law the project's constraint engine needs holds for u itself: with the
impulse J^k = Σ_{j<k} Δt (θ F^{j+1} + (1 - θ) F^j) through each face, |K| v^k = |K| v^0 - (D J^k)_K,
so

    |K| (u^{k+1} - u^k) + (D Φ)_K = Δt |K| v^0_K,   Φ = Δt (θ J^{k+1} + (1 - θ) J^k).

The recorded "flux" of a wave trajectory is this time-integrated impulse Φ (summed over
each output interval) and its "source" Δt |K| v^0: the per-control-volume balance holds
to round-off, so per-cell rows, fluxes and boundary rows mean for the wave equation what
they mean for diffusion. Boundary conditions: Dirichlet values (strong, dual control
volumes; the impulse through their faces is the reaction that closes their momentum
balance), Neumann flux q (F = q |f|) or normal derivative h (F = -c² h |f|), periodic.
The initial velocity is v^0 = 0 (released from rest) unless given.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from hybrid.mesh.control_volumes import ControlVolumes
from hybrid.solvers.gpme import BoundaryData, Trajectory, output_schedule

__all__ = ["WaveSolver"]


class WaveSolver:
    """Linear wave equation with speed ``c`` on control volumes; serial per scenario."""

    def __init__(self, cv: ControlVolumes, c: float, boundaries: list[BoundaryData], params: dict,
                 theta: float = 0.5):
        if not 0.5 <= theta <= 1.0:
            raise ValueError(f"theta = {theta}: use 0.5 (trapezoidal) to 1 (implicit)")
        self.cv, self.c2, self.params, self.theta = cv, float(c) ** 2, dict(params), float(theta)
        N, F = cv.num_cvs, cv.num_faces
        self.N, self.F = N, F
        P = cv.pieces
        # interior face fluxes are linear in u: F = A u (k = c², the GPME solver's pieces)
        self.A = sp.csr_matrix((self.c2 * P.weight.ravel(), (np.repeat(P.face, P.stencil.shape[1]),
                                                              P.stencil.ravel())), shape=(F, N))
        self.D = cv.incidence()
        bfaces = cv.boundary_faces
        self.data_faces = []      # (faces, kind, expr, points): flux / normal_derivative data
        dir_faces, self.dir_expr = [], []
        for bc in boundaries:
            if bc.name not in cv.boundary_names or bc.kind == "periodic":
                continue
            faces = bfaces[cv.face_tag[bfaces] == cv.boundary_names[bc.name]]
            if bc.kind == "dirichlet":
                if cv.kind != "dual":
                    raise ValueError("the wave solver imposes Dirichlet values on dual control "
                                     "volumes only")
                dir_faces.append(faces)
                cvs = np.unique(cv.face_cv[faces, 0])
                self.dir_expr.append((cvs, bc.expr))
            else:
                self.data_faces.append((faces, bc.kind, bc.expr, cv.face_centroid[faces]))
        self.dir_faces = np.concatenate(dir_faces) if dir_faces else np.zeros(0, np.int64)
        self.is_dir = np.zeros(N, bool)
        for cvs, _ in self.dir_expr:
            self.is_dir[cvs] = True
        self._factor: dict[float, object] = {}
        self.stats = {"steps": 0, "newton_its": 0, "max_correction": 0.0}

    # ------------------------------------------------------------------ data
    def boundary_flux(self, t: float) -> np.ndarray:
        """b(t): the prescribed fluxes of Neumann faces (F = A u + b)."""
        b = np.zeros(self.F)
        fa = self.cv.face_area
        for faces, kind, expr, pts in self.data_faces:
            values = np.broadcast_to(np.asarray(expr(pts, t=t, params=self.params), float),
                                     (len(faces),))
            b[faces] = values * fa[faces] if kind == "flux" else -self.c2 * values * fa[faces]
        return b

    def dirichlet_values(self, t: float) -> np.ndarray:
        """The Dirichlet values g(x_K, t) of the Dirichlet control volumes, 0 elsewhere: (N,)."""
        g = np.zeros(self.N)
        for cvs, expr in self.dir_expr:
            g[cvs] = np.broadcast_to(np.asarray(expr(self.cv.centre[cvs], t=t, params=self.params),
                                                float),
                                     (len(cvs),))
        return g

    def _system(self, dt: float) -> sp.csr_matrix:
        """M = diag|K| + (θ Δt)² D A, each Dirichlet control volume's row the identity's: the
        matrix of one step's u^{k+1}."""
        M = (sp.diags(self.cv.volume) + (self.theta * dt) ** 2 * (self.D @ self.A)).tolil()
        for k in np.flatnonzero(self.is_dir):
            M.rows[k], M.data[k] = [k], [1.0]
        return M.tocsr()

    def _solver(self, dt: float):
        """What solves M x = rhs for this step size (built once): the sparse LU."""
        if dt not in self._factor:
            self._factor[dt] = spla.splu(self._system(dt).tocsc())
        return self._factor[dt]

    # ------------------------------------------------------------------ one step
    def _step(self, u, v, J, t0: float, dt: float):
        th, vol, D = self.theta, self.cv.volume, self.D
        t1 = t0 + dt
        F0 = self.A @ u + self.boundary_flux(t0)
        b1 = self.boundary_flux(t1)
        rhs = vol * (u + dt * v) - (th * dt) ** 2 * (D @ b1) - th * (1 - th) * dt ** 2 * (D @ F0)
        g1 = self.dirichlet_values(t1)
        rhs[self.is_dir] = g1[self.is_dir]
        u1 = self._solver(dt).solve(rhs)
        F1 = self.A @ u1 + b1
        dJ = dt * (th * F1 + (1 - th) * F0)
        v1 = np.empty_like(v)
        free = ~self.is_dir
        if len(self.dir_faces):
            # Dirichlet control volumes: v from the trapezoidal relation, and the impulse through
            # their Dirichlet faces is what closes their momentum balance (shared by area)
            v1[self.is_dir] = ((u1 - u) / dt - (1 - th) * v)[self.is_dir] / th
            dJ[self.dir_faces] = 0.0
            need = -vol * (v1 - v) - D @ dJ                # what the Dirichlet faces must carry out
            a = self.cv.face_cv[self.dir_faces, 0]
            area = self.cv.face_area[self.dir_faces]
            share = np.bincount(a, weights=area, minlength=self.N)
            dJ[self.dir_faces] = need[a] * area / share[a]
        v1[free] = v[free] - (D @ dJ)[free] / vol[free]
        J1 = J + dJ
        phi = dt * (th * J1 + (1 - th) * J)
        # the recorded state follows from the recorded impulse (round-off balance, as in the GPME
        # solver)
        u_cons = u + dt * (th * v1 + (1 - th) * v)
        if free.any():
            self.stats["max_correction"] = max(self.stats["max_correction"],
                                               float(np.abs(u_cons - u1)[free].max()))
        u1 = np.where(free, u_cons, u1)
        self.stats["steps"] += 1
        return u1, v1, J1, phi

    # ------------------------------------------------------------------ trajectory
    def run(self, u_initial: np.ndarray, t_end: float, dt: float, outputs: int,
            v_initial: np.ndarray | None = None) -> Trajectory:
        """The trajectory from ``u_initial`` (N,) and ``v_initial`` (0 when None) to
        ``t_end``, in steps of at most ``dt``, at ``outputs`` equal output intervals
        (:func:`~hybrid.solvers.gpme.output_schedule`): ``flux`` the impulse Φ, ``source``
        Δt |K| v^0 (the module's docstring). The final velocity is left in ``velocity``."""
        times, steps, dt_used = output_schedule(t_end, dt, outputs)
        u = np.array(u_initial, dtype=float)
        if self.is_dir.any():
            u[self.is_dir] = self.dirichlet_values(0.0)[self.is_dir]
        v = np.zeros(self.N) if v_initial is None else np.array(v_initial, dtype=float)
        J = np.zeros(self.F)
        U = np.empty((outputs + 1, self.N))
        PHI = np.zeros((outputs, self.F))
        SRC = np.zeros((outputs, self.N))
        U[0] = u
        v0_mass = self.cv.volume * v
        for n in range(outputs):
            for s in range(steps):
                u, v, J, phi = self._step(u, v, J, times[n] + s * dt_used, dt_used)
                PHI[n] += phi
                SRC[n] += dt_used * v0_mass
            U[n + 1] = u
        self.velocity = v
        return Trajectory(times, U, PHI, SRC, dict(self.stats, dt=dt_used, steps_per_output=steps))

    def energy(self, u: np.ndarray, v: np.ndarray) -> float:
        """½ Σ |K| v² + ½ uᵀ (D A) u: the discrete energy the trapezoidal rule conserves
        (homogeneous boundary data)."""
        return 0.5 * float(self.cv.volume @ (v * v)) + 0.5 * float(u @ (self.D @ (self.A @ u)))

    def close(self) -> None:
        """Drop the LU factorisations."""
        self._factor.clear()
