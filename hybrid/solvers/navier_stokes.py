"""Reference solver for the incompressible Navier–Stokes equations (ρ = 1), DOLFINx/PETSc.

    u_t + (u·∇)u - ν Δu + ∇p = 0,    ∇·u = 0

Taylor–Hood elements (P2 velocity, P1 pressure) on the case's triangle mesh, implicit
Euler in time, each step solved by Newton's method (DOLFINx's NewtonSolver, MUMPS LU for
the saddle-point systems). Velocity Dirichlet data on every named wall (the lid-driven
cavity: u = (U, 0) on the lid, 0 on the other walls); the pressure is fixed to 0 at the
lowest-leftmost vertex. Where walls meet, the wall listed later in the case file wins at
the shared corner nodes (the cavity lists the lid first: its corners are no-slip).

Outputs at the vertices of the mesh (MeshData order): the velocity (its P2 field's nodal
values), the pressure, and the vorticity ω = ∂v/∂x - ∂u/∂y of the P2 velocity, projected
onto P1 with a lumped mass matrix, ω_i = ∫ φ_i ω dx / ∫ φ_i dx.

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

__all__ = ["NavierStokesSolver", "FlowTrajectory", "Wall"]

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


class NavierStokesSolver:
    """Taylor–Hood Navier–Stokes on one mesh, serial per scenario."""

    def __init__(self, meshdata: MeshData, nu: float, walls: list[Wall], params: dict,
                 rtol: float = 1e-10, atol: float = 1e-12, max_it: int = 30):
        import dolfinx.fem
        import dolfinx.fem.petsc
        import dolfinx.nls.petsc
        import ufl
        from petsc4py import PETSc
        from scipy.spatial import cKDTree

        from hybrid.mesh.distribute import to_dolfinx

        if meshdata.cell_type != "triangle":
            raise ValueError(f"the Navier–Stokes solver needs a triangle mesh, not {meshdata.cell_type}")
        self.meshdata, self.params = meshdata, dict(params)
        comm = MPI.COMM_SELF
        mesh, tags = to_dolfinx(meshdata, comm, ghost_mode="none")
        self.mesh = mesh
        W = compat.taylor_hood_space(mesh)
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
        corner = meshdata.points[np.lexsort((meshdata.points[:, 0], meshdata.points[:, 1]))[0]]
        pin = dolfinx.fem.locate_dofs_geometrical(
            (W.sub(1), Q), lambda x: np.isclose(x[0], corner[0]) & np.isclose(x[1], corner[1]))
        bcs.append(dolfinx.fem.dirichletbc(dolfinx.fem.Function(Q), pin, W.sub(1)))
        self.bcs = bcs

        problem = dolfinx.fem.petsc.NonlinearProblem(F, self.w, bcs)
        solver = dolfinx.nls.petsc.NewtonSolver(comm, problem)
        solver.rtol, solver.atol, solver.max_it = rtol, atol, max_it
        solver.convergence_criterion = "residual"
        solver.report = False
        ksp = solver.krylov_solver
        ksp.setType("preonly")
        ksp.getPC().setType("lu")
        ksp.getPC().setFactorSolverType("mumps")
        self.newton = solver

        # vertex outputs: P1 spaces and the lumped projection of the vorticity
        V1 = compat.vector_space(mesh, 1)
        self.u1, self.p1 = dolfinx.fem.Function(V1), dolfinx.fem.Function(Q)
        phi = ufl.TestFunction(Q)
        u_now = ufl.split(self.w)[0]
        self._curl = dolfinx.fem.form(phi * (u_now[1].dx(0) - u_now[0].dx(1)) * dx)
        self._lumped = dolfinx.fem.petsc.assemble_vector(dolfinx.fem.form(phi * dx)).getArray().copy()
        self._divergence = dolfinx.fem.form(phi * ufl.div(u_now) * dx)
        tree = cKDTree(meshdata.points[:, :2])
        self._v1_order = tree.query(V1.tabulate_dof_coordinates()[:, :2])[1]
        self._q_order = tree.query(Q.tabulate_dof_coordinates()[:, :2])[1]
        self.stats = {"steps": 0, "newton_its": 0}

    # ------------------------------------------------------------------ boundary data
    def _set_walls(self, t: float) -> None:
        for wall, g in self.walls:
            def values(x, wall=wall):
                pts = x[: self.meshdata.gdim].T
                return np.vstack([np.broadcast_to(np.asarray(c(pts, t=t, params=self.params), float), (len(pts),))
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
        self.u1.interpolate(self.w.sub(0).collapse())
        self.p1.interpolate(self.w.sub(1).collapse())
        u = np.zeros((nv, d))
        u[self._v1_order] = self.u1.x.array.reshape(-1, d)
        p = np.zeros(nv)
        p[self._q_order] = self.p1.x.array
        curl = dolfinx.fem.petsc.assemble_vector(self._curl).getArray()
        w = np.zeros(nv)
        w[self._q_order] = curl / self._lumped
        return u, p, w

    def weak_divergence(self) -> np.ndarray:
        """∫ φ_i ∇·u dx for every P1 pressure basis function φ_i: zero to the Newton
        tolerance (the discrete incompressibility Taylor–Hood imposes), per vertex."""
        import dolfinx.fem.petsc

        values = np.zeros(self.meshdata.num_vertices)
        values[self._q_order] = dolfinx.fem.petsc.assemble_vector(self._divergence).getArray()
        return values

    # ------------------------------------------------------------------ solves
    def steady(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The steady flow (Newton from rest); returns :meth:`vertex_values`."""
        self.inv_dt.value = 0.0
        self._set_walls(0.0)
        self._newton()
        return self.vertex_values()

    def run(self, t_end: float, dt: float, outputs: int, initial: Callable[[np.ndarray], np.ndarray] | None = None,
            progress: Callable[[int], None] | None = None) -> FlowTrajectory:
        """From the initial velocity ``initial(points (n, d)) -> (n, d)`` (default: rest), with
        the walls' data applied from the first step on; implicit Euler."""
        from hybrid.solvers.gpme import output_schedule

        times, steps, dt_used = output_schedule(t_end, dt, outputs)
        self.inv_dt.value = 1.0 / dt_used
        self.w.x.array[:] = 0.0
        if initial is not None:
            d = self.meshdata.gdim
            self.w.sub(0).interpolate(lambda x: np.asarray(initial(x[:d].T), float).reshape(-1, d).T)
            self.w.x.scatter_forward()
        U, P, Wv = [], [], []
        for field_, value in zip((U, P, Wv), self.vertex_values()):
            field_.append(value)
        for n in range(outputs):
            for s in range(steps):
                self.w_old.x.array[:] = self.w.x.array
                self._set_walls(times[n] + (s + 1) * dt_used)
                self._newton()
                self.stats["steps"] += 1
            for field_, value in zip((U, P, Wv), self.vertex_values()):
                field_.append(value)
            if progress:
                progress(n + 1)
        return FlowTrajectory(times, np.array(U), np.array(P), np.array(Wv),
                              dict(self.stats, dt=dt_used, steps_per_output=steps))
