"""Reference solver for the incompressible Navier–Stokes equations (ρ = 1), DOLFINx/PETSc.

    u_t + (u·∇)u - ν Δu + ∇p = 0,    ∇·u = 0

Scott–Vogelius elements by default: P2 velocity and discontinuous P1 pressure on the
barycentric (Alfeld) split of the case's triangle mesh (Arnold & Qin 1992: inf-sup stable
there), whose discrete velocity is divergence-free pointwise, so the volume flux out of
*any* region — every median-dual control volume of the case mesh — vanishes;
:meth:`NavierStokesSolver.dual_face_fluxes` records those fluxes exactly. At the domain's
corners, where no-slip walls meet, div u = 0 holds automatically and leaves pressure
modes the continuity equation does not see; a pressure penalty ε ∫ p q dx (ε = 1e-12)
fixes them (and the constant), at the price of div u = ε p, i.e. ~1e-12. With
``element = "taylor-hood"`` (continuous P1 pressure fixed at one corner, no split) the
velocity is divergence-free only weakly. Implicit Euler in time, each step solved by
Newton's method (DOLFINx's NewtonSolver, MUMPS LU for the saddle-point systems). Velocity Dirichlet
data on every named wall (the lid-driven cavity: u = (U, 0) on the lid, 0 on the other walls); the
pressure is fixed to 0 at the lowest-leftmost vertex. Where walls meet, the wall listed later in the
case file wins at the shared corner nodes (the cavity lists the lid first: its corners are no-slip).

Outputs at the vertices of the case mesh (MeshData order; the split's centroids are not output): the
velocity (its P2 field's nodal values), the pressure, and the vorticity ω = ∂v/∂x - ∂u/∂y of the P2
velocity, projected onto P1 with a lumped mass matrix, ω_i = ∫ φ_i ω dx / ∫ φ_i dx.

:meth:`NavierStokesSolver.steady` solves the steady equations (no time derivative) by
Newton from rest; tests/test_navier_stokes.py checks its centreline velocities against
Ghia, Ghia & Shin (J. Comput. Phys. 48, 1982) at Re = 100.

Scenarios are solved serially on one rank each (PETSc COMM_SELF), like the GPME solver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from mpi4py import MPI

from hybrid import compat
from hybrid.errors import raise_if_interrupted
from hybrid.mesh.meshdata import MeshData
from hybrid.petsc_options import SOLVER_PREFIX, set_default

__all__ = ["NavierStokesSolver", "FlowTrajectory", "Wall", "barycentric_split", "PRESSURE_PENALTY"]

PRESSURE_PENALTY = 1e-12

Expr = Callable[..., np.ndarray]


@dataclass
class Wall:
    """Velocity data (one expression per component) on the boundary named ``name``."""

    name: str
    components: tuple[Expr, ...]


@dataclass
class FlowTrajectory:
    """Solver output at the output times (vertex values in MeshData order).

    ``u``: (T+1, V, d) velocity; ``p``: (T+1, V) pressure; ``vorticity``: (T+1, V)."""

    times: np.ndarray
    u: np.ndarray
    p: np.ndarray
    vorticity: np.ndarray
    stats: dict = field(default_factory=dict)


def barycentric_split(meshdata: MeshData) -> MeshData:
    """Each triangle (v0, v1, v2) split at its centroid c into (v0, v1, c), (v1, v2, c),
    (v2, v0, c) — cells 3K, 3K+1, 3K+2. The case mesh's vertices keep their numbers (the
    centroids follow them) and its boundary facets, hence the boundary tags, are unchanged."""
    pts, cells = meshdata.points, meshdata.cells
    centroid = pts[cells].mean(axis=1)
    c = len(pts) + np.arange(len(cells))
    split = np.stack([np.stack([cells[:, 0], cells[:, 1], c], 1),
                      np.stack([cells[:, 1], cells[:, 2], c], 1),
                      np.stack([cells[:, 2], cells[:, 0], c], 1)], axis=1).reshape(-1, 3)
    return MeshData(np.vstack([pts, centroid]), split, meshdata.cell_type, meshdata.facets,
                    meshdata.facet_tags, dict(meshdata.boundary_names))


class NavierStokesSolver:
    """Scott–Vogelius (default) or Taylor–Hood Navier–Stokes on one mesh, serial per scenario."""

    def __init__(self, meshdata: MeshData, nu: float, walls: list[Wall], params: dict,
                 rtol: float = 1e-10, atol: float = 1e-12, max_it: int = 30,
                 element: str = "scott-vogelius"):
        import dolfinx.fem
        import dolfinx.fem.petsc
        import dolfinx.nls.petsc
        import ufl
        from petsc4py import PETSc
        from scipy.spatial import cKDTree

        from hybrid.mesh.distribute import to_dolfinx

        if meshdata.cell_type != "triangle":
            raise ValueError("the Navier–Stokes solver needs a triangle mesh, not "
                             f"{meshdata.cell_type}")
        if element not in ("scott-vogelius", "taylor-hood"):
            raise ValueError(f"element {element!r}: use scott-vogelius or taylor-hood")
        self.meshdata, self.params, self.element = meshdata, dict(params), element
        sv = element == "scott-vogelius"
        self.solved_on = barycentric_split(meshdata) if sv else meshdata
        comm = MPI.COMM_SELF
        mesh, tags = to_dolfinx(self.solved_on, comm, ghost_mode="none")
        self.mesh = mesh
        W = compat.taylor_hood_space(mesh, discontinuous_pressure=sv)
        V, _ = W.sub(0).collapse()
        Q, _ = W.sub(1).collapse()
        self.W, self.V, self.Q = W, V, Q
        self.w, self.w_old = dolfinx.fem.Function(W), dolfinx.fem.Function(W)
        u, p = ufl.split(self.w)
        u_old, _ = ufl.split(self.w_old)
        v, q = ufl.TestFunctions(W)
        self.inv_dt = dolfinx.fem.Constant(mesh, PETSc.ScalarType(0.0))    # 0: steady
        nu_c = dolfinx.fem.Constant(mesh, PETSc.ScalarType(nu))
        dx = ufl.dx
        F = (self.inv_dt * ufl.inner(u - u_old, v) + ufl.inner(ufl.grad(u) * u, v)
             + nu_c * ufl.inner(ufl.grad(u), ufl.grad(v)) - p * ufl.div(v) - q * ufl.div(u)) * dx
        if sv:
            F = F - PRESSURE_PENALTY * p * q * dx

        fdim = mesh.topology.dim - 1
        self.walls: list[tuple[Wall, object]] = []
        bcs = []
        for wall in walls:
            tag = meshdata.boundary_names[wall.name]
            facets = tags.indices[tags.values == tag]
            dofs = dolfinx.fem.locate_dofs_topological((W.sub(0), V), fdim, facets)
            g = dolfinx.fem.Function(V)
            bcs.append(dolfinx.fem.dirichletbc(g, dofs, W.sub(0)))
            self.walls.append((wall, g))
        if not sv:   # Taylor–Hood: the pressure's constant is fixed at one corner
            corner = meshdata.points[np.lexsort((meshdata.points[:, 0], meshdata.points[:, 1]))[0]]
            pin = dolfinx.fem.locate_dofs_geometrical(
                (W.sub(1), Q), lambda x: np.isclose(x[0], corner[0]) & np.isclose(x[1], corner[1]))
            bcs.append(dolfinx.fem.dirichletbc(dolfinx.fem.Function(Q), pin, W.sub(1)))
        self.bcs = bcs

        problem = dolfinx.fem.petsc.NonlinearProblem(F, self.w, bcs)
        self._problem = problem
        solver = dolfinx.nls.petsc.NewtonSolver(comm, problem)
        solver.rtol, solver.atol, solver.max_it = rtol, atol, max_it
        solver.convergence_criterion = "residual"
        solver.report = False
        ksp = solver.krylov_solver
        ksp.setType("preonly")
        ksp.getPC().setType("lu")
        ksp.getPC().setFactorSolverType("mumps")
        # the discontinuous pressure's delayed pivots overflow MUMPS' default workspace (error -9)
        # (read at each factorisation, so left in the database under the solvers' prefix), then
        # whatever -hybrid_solver_* options the case or the user gave
        ksp.setOptionsPrefix(SOLVER_PREFIX)
        set_default(PETSc.Options(), f"{SOLVER_PREFIX}mat_mumps_icntl_14", "300")
        ksp.setFromOptions()
        self.newton = solver

        # vertex outputs: P1 spaces and the lumped projection of the vorticity
        V1, P1 = compat.vector_space(mesh, 1), compat.scalar_space(mesh, 1)
        self.u1, self.p1 = dolfinx.fem.Function(V1), dolfinx.fem.Function(P1)
        phi = ufl.TestFunction(P1)
        u_now = ufl.split(self.w)[0]
        self._curl = dolfinx.fem.form(phi * (u_now[1].dx(0) - u_now[0].dx(1)) * dx)
        self._lumped = dolfinx.fem.petsc.assemble_vector(
            dolfinx.fem.form(phi * dx)).getArray().copy()
        self._divergence = dolfinx.fem.form(phi * ufl.div(u_now) * dx)
        tree = cKDTree(self.solved_on.points[:, :2])
        self._v1_order = tree.query(V1.tabulate_dof_coordinates()[:, :2])[1]
        self._q_order = tree.query(P1.tabulate_dof_coordinates()[:, :2])[1]
        # local cell of each cell of the mesh solved on (for evaluating the velocity)
        original = np.asarray(mesh.topology.original_cell_index, dtype=np.int64)
        self._local_cell = np.empty(len(original), dtype=np.int32)
        self._local_cell[original] = np.arange(len(original), dtype=np.int32)
        self._pieces = None
        self.stats = {"steps": 0, "newton_its": 0}

    # ------------------------------------------------------------------ boundary data
    def _set_walls(self, t: float) -> None:
        for wall, g in self.walls:
            def values(x, wall=wall):
                pts = x[: self.meshdata.gdim].T
                return np.vstack([np.broadcast_to(np.asarray(c(pts, t=t, params=self.params),
                                                             float), (len(pts),))
                                  for c in wall.components])
            g.interpolate(values)

    def _newton(self) -> None:
        its, converged = self.newton.solve(self.w)
        raise_if_interrupted()
        if not converged:
            raise RuntimeError("Newton did not converge")
        self.w.x.scatter_forward()
        self.stats["newton_its"] += int(its)

    # ------------------------------------------------------------------ outputs
    def vertex_values(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(velocity (V, d), pressure (V,), vorticity (V,)) of the current state."""
        import dolfinx.fem.petsc

        nv, d = self.meshdata.num_vertices, self.meshdata.gdim
        n_all = self.solved_on.num_vertices
        self.u1.interpolate(self.w.sub(0).collapse())
        self.p1.interpolate(self.w.sub(1).collapse())
        u = np.zeros((n_all, d))
        u[self._v1_order] = self.u1.x.array.reshape(-1, d)
        p = np.zeros(n_all)
        p[self._q_order] = self.p1.x.array
        curl = dolfinx.fem.petsc.assemble_vector(self._curl).getArray()
        w = np.zeros(n_all)
        w[self._q_order] = curl / self._lumped
        return u[:nv], p[:nv], w[:nv]   # the case mesh's vertices come first

    def weak_divergence(self) -> np.ndarray:
        """∫ φ_i ∇·u dx for every P1 pressure basis function φ_i: zero to the Newton
        tolerance (the discrete incompressibility Taylor–Hood imposes), per vertex."""
        import dolfinx.fem.petsc

        values = np.zeros(self.solved_on.num_vertices)
        values[self._q_order] = dolfinx.fem.petsc.assemble_vector(self._divergence).getArray()
        return values

    def dual_face_fluxes(self, cv, t: float) -> np.ndarray:
        """Volume flux ∫ u·n dA through every face of the case mesh's median-dual control
        volumes ``cv`` (its face order; positive from a to b). Interior faces: each piece,
        the segment from an edge midpoint m to a cell centroid c, lies in one cell of the
        split, where u is quadratic, so Simpson's rule (u(m) + 4 u((m+c)/2) + u(c))/6 · S is
        exact. Boundary faces: the wall data at the face centroid · S (exact for data linear
        along the wall, as the cavity's). Scott–Vogelius only (pieces must lie in one cell)."""
        if self.element != "scott-vogelius" or cv.kind != "dual":
            raise ValueError("dual face fluxes need the Scott–Vogelius solver and dual control "
                             "volumes")
        geom = self._piece_geometry(cv)
        u = self.w.sub(0).collapse()
        values = u.eval(geom["points"], geom["cells"]).reshape(-1, 3, self.meshdata.gdim)
        mean = (values[:, 0] + 4 * values[:, 1] + values[:, 2]) / 6.0
        flux = np.bincount(geom["face"], weights=np.einsum("pd,pd->p", mean, geom["S"]),
                           minlength=cv.num_faces)
        inner = cv.face_cv[:, 1] >= 0
        S_b = cv.face_normal[~inner] * cv.face_area[~inner, None]
        data = np.zeros_like(S_b)
        pts_b, tags_b = cv.face_centroid[~inner], cv.face_tag[~inner]
        for wall, _ in self.walls:
            on = tags_b == cv.boundary_names[wall.name]
            data[on] = np.stack([np.broadcast_to(np.asarray(c(pts_b[on], t=t, params=self.params),
                                                            float), (int(on.sum()),))
                                 for c in wall.components], axis=1)
        flux[~inner] = np.einsum("fd,fd->f", data, S_b)
        return flux

    def _piece_geometry(self, cv) -> dict:
        """Evaluation points (3 per interior dual-face piece), their cells in the split, the
        pieces' area vectors (oriented a -> b of their face) and face indices; cached."""
        if self._pieces is not None:
            return self._pieces
        pts, cells = self.meshdata.points[:, :2], self.meshdata.cells
        m = len(cells)
        pairs = [(0, 1), (1, 2), (0, 2)]     # the split's cell 3K + s holds
                                             # edge pairs[s] and the centroid
        K = np.repeat(np.arange(m), 3)
        li = np.tile([p[0] for p in pairs], m)
        lj = np.tile([p[1] for p in pairs], m)
        vi, vj = cells[K, li], cells[K, lj]
        mid = 0.5 * (pts[vi] + pts[vj])
        c = pts[cells].mean(axis=1)[K]
        t = c - mid
        S = np.stack([t[:, 1], -t[:, 0]], axis=1)
        S *= np.sign(np.einsum("pd,pd->p", S, pts[vj] - pts[vi]))[:, None]
        ci, cj = cv.cv_of_entity[vi], cv.cv_of_entity[vj]
        flip = ci > cj
        S = np.where(flip[:, None], -S, S)
        lo, hi = np.where(flip, cj, ci), np.where(flip, ci, cj)
        inner = np.flatnonzero(cv.face_cv[:, 1] >= 0)
        keys = cv.face_cv[inner, 0] * cv.num_cvs + cv.face_cv[inner, 1]
        order = np.argsort(keys)
        face = inner[order[np.searchsorted(keys[order], lo * cv.num_cvs + hi)]]
        points = np.stack([mid, 0.5 * (mid + c), c], axis=1).reshape(-1, 2)
        points = np.hstack([points, np.zeros((len(points), 1))])
        sub_cell = 3 * K + np.tile(np.arange(3), m)
        self._pieces = {"points": points, "cells": np.repeat(self._local_cell[sub_cell], 3), "S": S,
                        "face": face}
        return self._pieces

    # ------------------------------------------------------------------ solves
    def steady(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The steady flow (Newton from rest); returns :meth:`vertex_values`."""
        self.inv_dt.value = 0.0
        self._set_walls(0.0)
        self._newton()
        return self.vertex_values()

    def run(self, t_end: float, dt: float, outputs: int,
            initial: Callable[[np.ndarray], np.ndarray] | None = None,
            progress: Callable[[int], None] | None = None,
            at_output: Callable[[float], None] | None = None) -> FlowTrajectory:
        """From the initial velocity ``initial(points (n, d)) -> (n, d)`` (default: rest), with
        the walls' data applied from the first step on; implicit Euler."""
        from hybrid.solvers.gpme import output_schedule

        times, steps, dt_used = output_schedule(t_end, dt, outputs)
        self.inv_dt.value = 1.0 / dt_used
        self.w.x.array[:] = 0.0
        if initial is not None:
            d = self.meshdata.gdim
            self.w.sub(0).interpolate(
                lambda x: np.asarray(initial(x[:d].T), float).reshape(-1, d).T)
            self.w.x.scatter_forward()
        U, P, Wv = [], [], []
        for field_, value in zip((U, P, Wv), self.vertex_values()):
            field_.append(value)
        if at_output:
            at_output(0.0)
        for n in range(outputs):
            for s in range(steps):
                self.w_old.x.array[:] = self.w.x.array
                self._set_walls(times[n] + (s + 1) * dt_used)
                self._newton()
                self.stats["steps"] += 1
            for field_, value in zip((U, P, Wv), self.vertex_values()):
                field_.append(value)
            if at_output:
                at_output(float(times[n + 1]))
            if progress:
                progress(n + 1)
        return FlowTrajectory(times, np.array(U), np.array(P), np.array(Wv),
                              dict(self.stats, dt=dt_used, steps_per_output=steps))
