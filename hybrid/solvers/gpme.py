"""Reference solver for the generalised porous medium equation on control volumes.

    u_t + ∇·(b u²/2) = ∇·(k(u) ∇u) + f(x, t)

with ``k`` constant, a power ``u^m`` (porous medium) or a step at ``u*`` (Stefan; the
step is smoothed over ``[u* - ε, u* + ε]`` by a C¹ cubic, exact where |u - u*| ≥ ε and
exactly degenerate where ``k_min = 0``). This is the GPME family of ProbConserv
(Hansen et al., ICML 2023). With a convection direction ``b`` (all ones: the scalar
viscous Burgers equation u_t + Σ_i (u²/2)_{x_i} = ν Δu, k = ν) the same solver is the
Burgers reference; ``b = None`` is the GPME.

Discretisation: finite volumes on :class:`~hybrid.mesh.control_volumes.ControlVolumes`
(cell-centred two-point fluxes, or median-dual cells = P1 with lumped mass), θ-scheme in
time (θ = 1 implicit Euler, θ = 1/2 Crank–Nicolson), each step solved by PETSc's Newton
(SNES, line search, direct LU). For one step from t to t + Δt:

    |K| (u_K^{n} - u_K^{n-1}) + Σ_f s_{K,f} Φ_f^n = S_K^n,
    Φ_f^n = Δt [θ F_f(u^n, t_n) + (1 - θ) F_f(u^{n-1}, t_{n-1})],
    S_K^n = Δt |K| [θ f(x_K, t_n) + (1 - θ) f(x_K, t_{n-1})].

Convective flux through a face with area vector n|f| and c = b·n|f|: ``central``
c (u_a² + u_b²)/4 (second order; the cell Péclet number should stay below 2) or
``upwind`` Engquist–Osher c (P(u_a)² + Q(u_b)²)/2 with P, Q the positive / negative
parts for c > 0 (swapped for c < 0): monotone, first order, C¹ for Newton.

Boundary faces: prescribed outward flux ``F·n = q`` gives ``F_f = q |f|`` (the whole
flux, convection included); a prescribed
outward normal derivative ``du/dn = h`` gives ``F_f = -k(u_K) h |f|`` (plus the outflow
c u_K²/2 with convection); Dirichlet values
are strong on dual control volumes (vertex values) and weak two-point fluxes on cells.
The flux through a Dirichlet face of a dual control volume is the reaction that closes
its balance: the gradient estimate of the adjacent cell, plus the remaining imbalance
shared in proportion to area.

Conservation to round-off: after Newton converges, every non-Dirichlet control volume
is updated from the recorded fluxes, ``u_K^n = u_K^{n-1} - ((DΦ^n)_K - S_K^n)/|K|``.
The change is the Newton residual divided by |K| (reported as ``max_correction``), and
the recorded states and fluxes then satisfy the balance law to round-off by
construction — the property the constraint engine and its tests rely on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from petsc4py import PETSc

from hybrid.errors import raise_if_interrupted
from hybrid.mesh.control_volumes import ControlVolumes
from hybrid.petsc_options import SOLVER_PREFIX, set_default

__all__ = ["Conductivity", "BoundaryData", "Trajectory", "GPMESolver", "SolverError",
           "output_schedule"]

Expr = Callable[..., np.ndarray]  # expr(points, t=..., params=...) -> (n,)


class SolverError(RuntimeError):
    """The nonlinear solve failed even after repeated step halving."""


@dataclass
class Conductivity:
    """k(u) and dk/du for the GPME family.

    ``kind``: ``constant`` (k), ``power`` (max(u, 0)^m), ``stefan`` (k_min below u*,
    k_max above, C¹ cubic over [u* - ε, u* + ε]; ε = 0 is the sharp step).
    """

    kind: str
    k: float = 1.0
    m: float = 1.0
    u_star: float = 0.5
    k_max: float = 1.0
    k_min: float = 0.0
    smoothing: float = 0.0

    @classmethod
    def from_params(cls, kind: str, params: dict) -> "Conductivity":
        """The ``kind`` conductivity with its coefficients from ``params`` (those absent keep
        the defaults)."""
        names = {"constant": ["k"], "power": ["m"],
                 "stefan": ["u_star", "k_max", "k_min", "smoothing"]}[kind]
        return cls(kind, **{n: float(params[n]) for n in names if n in params})

    def __call__(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(k(u), dk/du), each shaped like ``u``."""
        if self.kind == "constant":
            return np.full_like(u, self.k), np.zeros_like(u)
        if self.kind == "power":
            up = np.maximum(u, 0.0)
            k = up ** self.m
            dk = (np.where(u > 0, self.m * up ** (self.m - 1.0), 0.0) if self.m != 0
                  else np.zeros_like(u))
            return k, dk
        jump = self.k_max - self.k_min
        eps = self.smoothing
        if eps <= 0:
            return np.where(u >= self.u_star, self.k_max, self.k_min), np.zeros_like(u)
        s = np.clip((u - self.u_star + eps) / (2 * eps), 0.0, 1.0)
        return self.k_min + jump * s * s * (3 - 2 * s), jump * 6 * s * (1 - s) / (2 * eps)


@dataclass
class BoundaryData:
    """A boundary condition resolved for the solver.

    ``kind``: ``dirichlet`` (value u = g), ``flux`` (outward F·n = q), ``normal_derivative``
    (outward du/dn = h), ``periodic`` (handled by the control volumes). ``expr`` evaluates
    the data at points and time.
    """

    name: str
    kind: str
    expr: Expr | None = None


@dataclass
class Trajectory:
    """Solver output at the output times.

    ``u``: (T+1, N) states at ``times`` (t_0 = 0 included); ``flux``: (T, F) face fluxes
    integrated over each output interval; ``source``: (T, N) integrated sources.
    """

    times: np.ndarray
    u: np.ndarray
    flux: np.ndarray
    source: np.ndarray
    stats: dict = field(default_factory=dict)


def output_schedule(t_end: float, dt: float, outputs: int) -> tuple[np.ndarray, int, float]:
    """Output times, steps per output interval, and the step actually used.

    The step is the largest one not above ``dt`` that divides the output interval, so
    every output time is reached exactly.
    """
    interval = t_end / outputs
    steps = max(1, int(np.ceil(interval / dt - 1e-9)))
    return np.linspace(0.0, t_end, outputs + 1), steps, interval / steps


class GPMESolver:
    """Implicit finite-volume GPME solver on one mesh, serial per scenario (PETSc COMM_SELF).

    Scenarios are independent, so ``hybrid solve`` spreads them over MPI ranks; each
    scenario's result is bitwise independent of the number of ranks.
    """

    def __init__(self, cv: ControlVolumes, conductivity: Conductivity,
                 boundaries: list[BoundaryData], params: dict, source: Expr | None = None,
                 theta: float = 1.0, rtol: float = 1e-10, atol: float = 1e-13, max_it: int = 30,
                 max_halvings: int = 8, convection: np.ndarray | None = None,
                 scheme: str = "central"):
        self.cv, self.k, self.params, self.theta = cv, conductivity, dict(params), float(theta)
        if scheme not in ("central", "upwind"):
            raise ValueError(f"convection scheme {scheme!r}: use central or upwind")
        self.scheme = scheme
        # c_f = b·n_f|f| per face (None: no convection)
        self.conv = None if convection is None else \
            (cv.face_normal * cv.face_area[:, None]) @ np.asarray(convection, float).reshape(cv.dim)
        self.source_expr = source
        self.rtol, self.atol, self.max_it, self.max_halvings = rtol, atol, max_it, max_halvings
        self.D = cv.incidence()
        N, F = cv.num_cvs, cv.num_faces
        self.N, self.F = N, F
        self._classify_boundary(boundaries)
        self.P = self._assembly_pieces()   # the flux pieces Newton's residual and Jacobian assemble
        self._build_pattern()
        self._setup_snes()
        self._cache: dict = {}
        self.stats = {"steps": 0, "newton_its": 0, "halvings": 0, "max_correction": 0.0}

    # ------------------------------------------------------------------ set-up
    def _classify_boundary(self, boundaries: list[BoundaryData]) -> None:
        cv = self.cv
        bfaces = cv.boundary_faces
        by_tag = {cv.boundary_names[b.name]: b for b in boundaries if b.name in cv.boundary_names}
        kinds = {"flux": [], "normal_derivative": [], "dirichlet": []}
        self.face_expr: dict[str, list] = {k: [] for k in kinds}
        for tag, bc in by_tag.items():
            if bc.kind == "periodic":
                continue
            faces = bfaces[cv.face_tag[bfaces] == tag]
            kinds[bc.kind].append(faces)
            self.face_expr[bc.kind].append((faces, bc.expr, cv.face_centroid[faces]))
        cat = lambda lst: np.concatenate(lst) if lst else np.zeros(0, np.int64)
        self.flux_faces = cat(kinds["flux"])
        self.dn_faces = cat(kinds["normal_derivative"])
        self.dir_faces = cat(kinds["dirichlet"])
        a = cv.face_cv[:, 0]
        if cv.kind == "dual":
            # strong Dirichlet: the control volumes touching a Dirichlet face
            self.dir_cvs = np.unique(a[self.dir_faces])
            self.weak_dir_faces = np.zeros(0, np.int64)
        else:
            self.dir_cvs = np.zeros(0, np.int64)
            self.weak_dir_faces = self.dir_faces
        self.is_dir = np.zeros(self.N, bool)
        self.is_dir[self.dir_cvs] = True
        self.interior = np.flatnonzero(cv.face_cv[:, 1] >= 0)
        # Dirichlet values at control-volume centres (dual): which expression applies to each CV
        self.dir_cv_expr = []
        for faces, expr, _ in self.face_expr["dirichlet"]:
            cvs = np.unique(a[faces])
            self.dir_cv_expr.append((cvs, expr, cv.centre[cvs]))

    def _assembly_pieces(self):
        """Every interior flux piece (a partitioned solver keeps those of its own rows' faces)."""
        return self.cv.pieces

    def _build_pattern(self) -> None:
        cv, P = self.cv, self.P
        a, b = cv.face_cv[P.face, 0], cv.face_cv[P.face, 1]
        cols = np.concatenate([P.stencil, P.k_cvs], axis=1)           # (P, ns+nk)
        nc = cols.shape[1]
        rows = np.concatenate([np.repeat(a, nc), np.repeat(b, nc)])
        cc = np.concatenate([cols.ravel(), cols.ravel()])
        self._piece_rows_valid = rows >= 0
        bnd_a = cv.face_cv[np.concatenate([self.dn_faces, self.weak_dir_faces]), 0]
        diag = np.arange(self.N)
        conv_rows, conv_cols = np.zeros(0, np.int64), np.zeros(0, np.int64)
        if self.conv is not None:
            ia, ib = cv.face_cv[self.interior, 0], cv.face_cv[self.interior, 1]
            conv_rows = np.concatenate([ia, ia, ib, ib, bnd_a])
            conv_cols = np.concatenate([ia, ib, ia, ib, bnd_a])
        all_rows = np.concatenate([rows, bnd_a, conv_rows, diag])
        all_cols = np.concatenate([cc, bnd_a, conv_cols, diag])
        valid = all_rows >= 0
        key = all_rows[valid] * self.N + all_cols[valid]
        uniq, pos = np.unique(key, return_inverse=True)
        self._coo_valid = valid
        self._coo_pos = pos.ravel()
        self._coo_rows = all_rows
        self.nnz = len(uniq)
        r, c = uniq // self.N, uniq % self.N
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=self.N))]).astype(
            PETSc.IntType)
        self.indices = c.astype(PETSc.IntType)

    def _setup_snes(self) -> None:
        comm = PETSc.COMM_SELF
        self.J = PETSc.Mat().createAIJ([self.N, self.N], csr=(self.indptr, self.indices,
                                                              np.zeros(self.nnz)), comm=comm)
        self.J.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
        self.r = PETSc.Vec().createSeq(self.N, comm=comm)
        self.x = PETSc.Vec().createSeq(self.N, comm=comm)
        snes = PETSc.SNES().create(comm)
        ksp = snes.getKSP()
        ksp.setType("preonly")
        ksp.getPC().setType("lu")
        self._configure_snes(snes)

    def _configure_snes(self, snes) -> None:
        """Newton with a line search on J, r, x and the tolerances; the linear solver set before."""
        snes.setType("newtonls")
        snes.setFunction(self._snes_residual, self.r)
        snes.setJacobian(self._snes_jacobian, self.J)
        snes.setTolerances(rtol=self.rtol, atol=self.atol, stol=0.0, max_it=self.max_it)
        # the defaults above and a backtracking line search (petsc4py 3.18 has no SNESLineSearch
        # wrapper: by option), then whatever -hybrid_solver_* options the case or the user gave
        snes.setOptionsPrefix(SOLVER_PREFIX)
        opts = PETSc.Options()
        ours = set_default(opts, f"{SOLVER_PREFIX}snes_linesearch_type", "bt")
        snes.setFromOptions()
        if ours:
            opts.delValue(f"{SOLVER_PREFIX}snes_linesearch_type")
        snes.setConvergenceTest("default")
        self.snes = snes

    def close(self) -> None:
        """Free the PETSc objects: the SNES, the Jacobian and the vectors."""
        for obj in (self.snes, self.J, self.r, self.x):
            obj.destroy()

    # ------------------------------------------------------------------ physics
    def _eval(self, expr: Expr, points: np.ndarray, t: float) -> np.ndarray:
        # boundary and source data depend on (points, t) only: evaluate once per time level,
        # not once per Newton residual
        key = (id(expr), id(points), t)  # points: arrays held for the solver's lifetime
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) > 64:
                self._cache.clear()
            hit = np.broadcast_to(np.asarray(expr(points, t=t, params=self.params), float),
                                  (len(points),))
            self._cache[key] = hit
        return hit

    def source_rate(self, t: float) -> np.ndarray:
        """|K| f(x_K, t): the source integrated over each control volume (centre rule)."""
        if self.source_expr is None:
            return np.zeros(self.N)
        return self.cv.volume * self._eval(self.source_expr, self.cv.centre, t)

    def dirichlet_values(self, t: float) -> np.ndarray:
        """g(x_K, t) at the control volumes touching a Dirichlet face, 0 elsewhere: (N,)."""
        g = np.zeros(self.N)
        for cvs, expr, pts in self.dir_cv_expr:
            g[cvs] = self._eval(expr, pts, t)
        return g

    def face_flux(self, u: np.ndarray, t: float, with_derivatives: bool = False,
                  every_face: bool = False):
        """Flux through the faces (Dirichlet faces of dual control volumes: 0, they are
        reactions), and optionally the pieces' derivatives for the Jacobian. Interior faces:
        those of the assembly pieces, or all of them (``every_face``: the recorded fluxes)."""
        cv, P = self.cv, (self.cv.pieces if every_face else self.P)
        k, dk = self.k(u)
        grad = np.einsum("pj,pj->p", P.weight, u[P.stencil])
        nk = P.k_cvs.shape[1]
        kbar = k[P.k_cvs].mean(axis=1)
        flux = np.bincount(P.face, weights=kbar * grad, minlength=self.F)
        fa = cv.face_area
        derivs = {}
        if len(self.flux_faces):
            for faces, expr, pts in self.face_expr["flux"]:
                flux[faces] = self._eval(expr, pts, t) * fa[faces]
        if len(self.dn_faces):
            dn_h = np.zeros(0)
            for faces, expr, pts in self.face_expr["normal_derivative"]:
                h = self._eval(expr, pts, t)
                ua = u[cv.face_cv[faces, 0]]
                kk, dkk = self.k(ua)
                flux[faces] = -kk * h * fa[faces]
                dn_h = np.concatenate([dn_h, -dkk * h * fa[faces]])
            derivs["dn"] = dn_h
        if len(self.weak_dir_faces):
            dw = np.zeros(0)
            for faces, expr, pts in self.face_expr["dirichlet"]:
                g = self._eval(expr, pts, t)
                ua = u[cv.face_cv[faces, 0]]
                kk, dkk = self.k(ua)
                kg, _ = self.k(g)
                coef = fa[faces] / cv.boundary_distance[faces]
                kbar_f = 0.5 * (kk + kg)
                flux[faces] = kbar_f * coef * (ua - g)
                dw = np.concatenate([dw, 0.5 * dkk * coef * (ua - g) + kbar_f * coef])
            derivs["weak"] = dw
        if self.conv is not None:
            derivs["conv"] = self._convective_flux(u, flux, t)
        if with_derivatives:
            d_stencil = kbar[:, None] * P.weight
            d_k = dk[P.k_cvs] / nk * grad[:, None]
            derivs["pieces"] = np.concatenate([d_stencil, d_k], axis=1)
            return flux, derivs
        return flux

    def _pair_flux(self, c: np.ndarray, ua: np.ndarray, ub: np.ndarray):
        """Convective flux c·(u²/2) from a to b and its derivatives in u_a and u_b."""
        if self.scheme == "central":
            return 0.25 * c * (ua * ua + ub * ub), 0.5 * c * ua, 0.5 * c * ub
        forward = c > 0
        p = np.where(forward, np.maximum(ua, 0.0), np.minimum(ua, 0.0))
        q = np.where(forward, np.minimum(ub, 0.0), np.maximum(ub, 0.0))
        return 0.5 * c * (p * p + q * q), c * p, c * q

    def _convective_flux(self, u: np.ndarray, flux: np.ndarray, t: float) -> np.ndarray:
        """Add the convective flux to ``flux`` (interior faces; outflow/inflow through
        normal-derivative and weak Dirichlet faces); returns the Jacobian entries in the
        order of the pattern: (a,a) (a,b) on row a, (b,a) (b,b) on row b, boundary (a,a)."""
        cv, I, c = self.cv, self.interior, self.conv
        ia, ib = cv.face_cv[I, 0], cv.face_cv[I, 1]
        f, da, db = self._pair_flux(c[I], u[ia], u[ib])
        flux[I] += f
        bnd = []
        if len(self.dn_faces):
            fd = self.dn_faces
            ua = u[cv.face_cv[fd, 0]]
            flux[fd] += 0.5 * c[fd] * ua * ua
            bnd.append(c[fd] * ua)
        if len(self.weak_dir_faces):
            for faces, expr, pts in self.face_expr["dirichlet"]:
                g = self._eval(expr, pts, t)
                fw, dwa, _ = self._pair_flux(c[faces], u[cv.face_cv[faces, 0]], g)
                flux[faces] += fw
                bnd.append(dwa)
        return np.concatenate([da, db, -da, -db] + bnd)

    # ------------------------------------------------------------------ one step
    def _residual(self, u: np.ndarray) -> np.ndarray:
        st = self._step
        flux = self.face_flux(u, st["t1"])
        res = (self.cv.volume * (u - st["u0"])
               + st["dt"] * (self.theta * (self.D @ flux) + st["old_div"]) - st["src"])
        res[self.is_dir] = u[self.is_dir] - st["g1"][self.is_dir]
        return res

    def _jacobian_values(self, u: np.ndarray) -> np.ndarray:
        st = self._step
        _, derivs = self.face_flux(u, st["t1"], with_derivatives=True)
        w = st["dt"] * self.theta
        dp = derivs["pieces"].ravel()
        vals = [w * dp, -w * dp]
        if len(self.dn_faces):
            vals.append(w * derivs["dn"])
        if len(self.weak_dir_faces):
            vals.append(w * derivs["weak"])
        if self.conv is not None:
            vals.append(w * derivs["conv"])
        vals.append(self.cv.volume.copy())
        vals = np.concatenate(vals)
        rows = self._coo_rows
        vals = np.where((rows >= 0) & self.is_dir[np.maximum(rows, 0)], 0.0, vals)
        # identity rows for strong Dirichlet control volumes (the diagonal block comes last)
        vals[-self.N:][self.is_dir] = 1.0
        return np.bincount(self._coo_pos, weights=vals[self._coo_valid], minlength=self.nnz)

    def _residual_scale(self, u0: np.ndarray) -> float:
        """The largest residual at the step's start (Newton's absolute tolerance is relative to
        it)."""
        return float(np.abs(self._residual(u0)).max())

    def _set_state(self, u: np.ndarray) -> None:
        """Newton's initial guess, from every control volume's value."""
        self.x.setArray(u)

    def _get_state(self) -> np.ndarray:
        """Newton's solution, every control volume's value."""
        return self.x.getArray().copy()

    def _snes_residual(self, snes, x, f) -> None:
        f.setArray(self._residual(x.getArray(readonly=True)))

    def _snes_jacobian(self, snes, x, J, P) -> None:
        P.setValuesCSR(self.indptr, self.indices, self._jacobian_values(x.getArray(readonly=True)))
        P.assemble()
        if J != P:
            J.assemble()

    def _solve_step(self, u0: np.ndarray, t0: float, dt: float, depth: int = 0):
        """Advance from t0 by dt; returns (u1, Φ, S) with Φ, S integrated over the step.
        Halves the step when Newton fails."""
        theta = self.theta
        t1 = t0 + dt
        flux0 = self.face_flux(u0, t0, every_face=True) if theta < 1 else np.zeros(self.F)
        old_div = (1 - theta) * (self.D @ flux0)
        src = dt * (theta * self.source_rate(t1) + (1 - theta) * self.source_rate(t0))
        g1 = self.dirichlet_values(t1)
        self._step = dict(u0=u0, t1=t1, dt=dt, old_div=old_div, src=src, g1=g1)
        guess = u0.copy()
        guess[self.is_dir] = g1[self.is_dir]
        self._set_state(guess)
        scale = self._residual_scale(u0)
        self.snes.setTolerances(rtol=self.rtol, atol=max(self.atol * max(scale, 1e-300), 1e-300),
                                stol=0.0, max_it=self.max_it)
        self.snes.solve(None, self.x)
        raise_if_interrupted()   # Ctrl-C inside a callback looks like a failed Newton solve
        converged = self.snes.getConvergedReason() > 0
        u1 = self._get_state()
        if not converged or not np.all(np.isfinite(u1)):
            if depth >= self.max_halvings:
                raise SolverError(f"Newton did not converge at t = {t0:.6g} even with step "
                                  f"{dt:.3g} (reason {self.snes.getConvergedReason()})")
            self.stats["halvings"] += 1
            ua, fa_, sa = self._solve_step(u0, t0, dt / 2, depth + 1)
            ub, fb, sb = self._solve_step(ua, t0 + dt / 2, dt / 2, depth + 1)
            return ub, fa_ + fb, sa + sb
        self.stats["newton_its"] += self.snes.getIterationNumber()
        self.stats["steps"] += 1
        flux1 = self.face_flux(u1, t1, every_face=True)
        phi = dt * (theta * flux1 + (1 - theta) * flux0)
        if len(self.dir_cvs):
            self._close_dirichlet_balance(u0, u1, phi, src, t0, t1, dt)
        # conservative update: the recorded state follows from the recorded fluxes
        imbalance = self.cv.volume * (u1 - u0) + self.D @ phi - src
        free = ~self.is_dir
        corr = imbalance[free] / self.cv.volume[free]
        if corr.size:
            self.stats["max_correction"] = max(self.stats["max_correction"],
                                               float(np.abs(corr).max()))
        u1[free] -= corr
        return u1, phi, src

    def _close_dirichlet_balance(self, u0, u1, phi, src, t0, t1, dt) -> None:
        """Fluxes through Dirichlet faces of dual control volumes: the adjacent cell's
        gradient flux, plus the rest of the control volume's imbalance by area."""
        cv, B = self.cv, self.cv.boundary_pieces
        on_dir = np.isin(B.face, self.dir_faces)
        Bd = B.select(on_dir)
        def est(u):
            k, _ = self.k(u)
            return k[Bd.k_cvs].mean(axis=1) * np.einsum("pj,pj->p", Bd.weight, u[Bd.stencil])
        phi[Bd.face] = dt * (self.theta * est(u1) + (1 - self.theta) * est(u0))
        a = cv.face_cv[Bd.face, 0]
        imbalance = cv.volume * (u1 - u0) + self.D @ phi - src
        area = cv.face_area[Bd.face]
        area_sum = np.bincount(a, weights=area, minlength=self.N)
        phi[Bd.face] -= imbalance[a] * area / area_sum[a]

    # ------------------------------------------------------------------ trajectory
    def run(self, u_initial: np.ndarray, t_end: float, dt: float, outputs: int,
            progress: Callable[[int], None] | None = None) -> Trajectory:
        """The trajectory from ``u_initial`` (N,) (Dirichlet control volumes set to their
        values) to ``t_end``, in steps of at most ``dt``, at ``outputs`` equal output intervals
        (:func:`output_schedule`); ``progress(n)`` after output n. Raises :class:`SolverError`
        when a step fails to converge even after ``max_halvings`` halvings."""
        times, steps, dt_used = output_schedule(t_end, dt, outputs)
        u = np.array(u_initial, dtype=float)
        if len(self.dir_cvs):
            u[self.is_dir] = self.dirichlet_values(0.0)[self.is_dir]
        U = np.empty((outputs + 1, self.N))
        PHI = np.zeros((outputs, self.F))
        SRC = np.zeros((outputs, self.N))
        U[0] = u
        for n in range(outputs):
            for s in range(steps):
                t0 = times[n] + s * dt_used
                u, phi, src = self._solve_step(u, t0, dt_used)
                PHI[n] += phi
                SRC[n] += src
            U[n + 1] = u
            if progress:
                progress(n + 1)
        stats = dict(self.stats, dt=dt_used, steps_per_output=steps)
        return Trajectory(times, U, PHI, SRC, stats)
