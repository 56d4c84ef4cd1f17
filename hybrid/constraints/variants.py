"""The variants a case compares: raw, HardC, SoftC, global, per-cell, per-cell + boundary.

Each variant is a small switch (as in ProbConserv's code): which rows, and which
covariance. The covariance of a prediction comes from the ensemble: ``diagonal`` uses the
per-entry variance over members, ``ensemble`` the members' deviations U (Σ = U Uᵀ plus a
variance floor, since a rank-M covariance cannot satisfy more than M independent rows),
``ensemble+diagonal`` both. HardC projects the mean with Σ = I and leaves the variance
unchanged (the paper's baseline).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.integrate import simpson

from hybrid.constraints.rows import (ConstraintRows, StateLayout, boundary_flux_rows,
                                     conservation_rhs, conservation_rows, dirichlet_rows,
                                     global_rows, normal_derivative_rows, stack_rows)
from hybrid.constraints.update import GaussianUpdate
from hybrid.mesh.control_volumes import ControlVolumes

__all__ = ["LOW_RANK", "VARIANTS", "variant_rows", "variant_rhs", "known_mass_rows", "stefan_mass",
           "boundary_rows", "prediction_covariance", "make_update"]

VARIANTS = ("raw", "hardc", "softc", "boon", "unpadded", "global", "per-cell", "per-cell+boundary",
            "known-mass")
# differently trained ensembles, scored as they come (no rows)
ENSEMBLE_VARIANTS = ("softc", "boon", "unpadded")
VARIANCE_FLOOR = 1e-8  # relative to the mean variance: keeps G Σ Gᵀ
                       # well conditioned where members agree exactly


def boundary_rows(case, cv: ControlVolumes, layout: StateLayout, times: np.ndarray, params: dict,
                  derivative_rows: bool = False) -> ConstraintRows:
    """The scenario's exact boundary conditions as rows: known Neumann fluxes Φ_f^n = |f| ∫ q dt
    (Simpson over the interval); Dirichlet values of dual control volumes at the output
    times; normal derivatives as known fluxes −k |f| ∫ h dt when the conductivity is a
    constant k, else (dual) on the values through the boundary cell's P1 gradient (a wave's
    free edges, h = 0, get both: zero impulses and the gradient rows)
    (``derivative_rows``: on the values as well, for scoring what a variant does to the
    states' boundary derivative). Periodic pairs need no rows: partner vertices share one
    control volume, so values and fluxes match by construction."""
    from hybrid.solvers.boundaries import boundary_data

    blocks = []
    bfaces = cv.boundary_faces

    def integrated(expr, pts, n):
        ts = np.linspace(times[n - 1], times[n], 9)
        return simpson(np.stack([expr(pts, t=t, params=params) * np.ones(len(pts)) for t in ts]),
                       x=ts, axis=0)

    constant_k = case.pde.get("k") == "constant" and "k" in params
    wave = case.pde.get("family") == "wave"
    for bc in boundary_data(case):
        if bc.name not in cv.boundary_names or bc.kind == "periodic":
            continue
        faces = bfaces[cv.face_tag[bfaces] == cv.boundary_names[bc.name]]
        if not len(faces):
            continue
        pts = cv.face_centroid[faces]
        if bc.kind == "flux" and case.pde.get("family") == "wave":
            continue   # a wave trajectory records impulses, not ∫ q dt: no rows from flux data
        if bc.kind == "flux":
            values = [integrated(bc.expr, pts, n) * cv.face_area[faces]
                      for n in range(1, layout.T + 1)]
            blocks.append(boundary_flux_rows(layout, faces, np.array(values)))
        elif bc.kind == "normal_derivative":
            # the reference solver imposes du/dn = h through the flux -k h |f|, so with a constant k
            # that flux is what its solution satisfies exactly; the P1 gradient of the boundary
            # cell only approximates h (imposing it measurably hurts: heat-2d rel. L2 0.216 ->
            # 0.233)
            if constant_k:
                values = [-params["k"] * integrated(bc.expr, pts, n) * cv.face_area[faces]
                          for n in range(1, layout.T + 1)]
                blocks.append(boundary_flux_rows(layout, faces, np.array(values)))
            # a free edge of a membrane (du/dn = 0) passes no impulse: the wave solver's recorded
            # boundary fluxes are exactly zero there (other data would need a double time integral).
            # Both rows are kept: measured on wave-neumann-1d / -2d, rel. L2 0.0741 / 0.339 with
            # both (mass and du/dn exact), 0.0743 / 0.342 with the zero impulses alone (du/dn swings
            # to 60), 0.0737 / 0.321 with the gradients alone (mass error 4e-2)
            if wave and bc.expr.is_constant and bc.expr.constant_value(params) == 0.0:
                blocks.append(boundary_flux_rows(layout, faces, np.zeros((layout.T, len(faces)))))
            if (derivative_rows or not constant_k) and cv.kind == "dual":
                blocks.append(normal_derivative_rows(cv, layout, faces,
                                                     lambda x, n, e=bc.expr: e(x, t=times[n],
                                                                               params=params)))
        elif bc.kind == "dirichlet" and cv.kind == "dual":
            cvs = np.unique(cv.face_cv[faces, 0])
            values = np.stack([bc.expr(cv.centre[cvs], t=t, params=params) * np.ones(len(cvs))
                               for t in times[1:]])
            blocks.append(dirichlet_rows(layout, cvs, values))
    if not blocks:
        return ConstraintRows(sp.csr_matrix((0, layout.size)), np.zeros(0),
                              np.zeros(0, dtype="U24"))
    # a control volume on two Dirichlet boundaries gets one row, not two (they would be redundant)
    return _dedupe(stack_rows(blocks))


def _dedupe(rows: ConstraintRows) -> ConstraintRows:
    """Drop repeated single-entry rows (a corner control volume on two Dirichlet walls)."""
    G = rows.G.tocsr()
    single = np.diff(G.indptr) == 1
    cols = np.where(single, G.indices[np.minimum(G.indptr[:-1], len(G.indices) - 1)],
                    -1 - np.arange(G.shape[0]))
    _, first = np.unique(cols, return_index=True)
    keep = np.sort(first)
    return ConstraintRows(G[keep], rows.b[keep], rows.kind[keep])


def variant_rows(variant: str, cv, layout, u0, source, boundary: ConstraintRows,
                 known_mass: ConstraintRows | None = None) -> ConstraintRows | None:
    """The rows of a variant; ``boundary`` is the scenario's :func:`boundary_rows`, ``known_mass``
    its :func:`known_mass_rows` (the ``known-mass`` variant: per-cell + boundary + those)."""
    if variant == "raw" or variant in ENSEMBLE_VARIANTS:   # other ensembles, not constraints
        return None
    if variant in ("hardc", "global"):
        return global_rows(cv, layout, u0, source)
    rows = conservation_rows(cv, layout, u0, source)
    if variant in ("per-cell+boundary", "known-mass") and boundary.count:
        rows = stack_rows([rows, boundary])
    if variant == "known-mass":
        rows = stack_rows([rows, known_mass])
    return rows


def stefan_mass(u_star: float, t: np.ndarray) -> np.ndarray:
    """∫ u dx of the one-phase Stefan similarity solution (u = 1 at x = 0, u = 0 ahead of the
    front, k = 1 behind it): u = 1 − (1 − u*) erf(ξ)/erf(λ), ξ = x / (2√t), up to the front
    ξ = λ, λ the root of u* √π λ erf(λ) e^{λ²} = 1 − u*; so
    M(t) = 2√t [λ − (1 − u*)(λ erf λ + (e^{−λ²} − 1)/√π) / erf λ]."""
    from scipy.optimize import brentq
    from scipy.special import erf

    lam = brentq(lambda z: u_star * np.sqrt(np.pi) * z * erf(z) * np.exp(z * z) - (1 - u_star),
                 1e-9, 10)
    inner = lam * erf(lam) + (np.exp(-lam * lam) - 1) / np.sqrt(np.pi)
    return 2 * np.sqrt(np.asarray(t, float)) * (lam - (1 - u_star) * inner / erf(lam))


def known_mass_rows(case, cv, layout, u0, params: dict, boundary: ConstraintRows,
                    times: np.ndarray) -> ConstraintRows | None:
    """ProbConserv's known-mass setting: Σ_K |K| u_K^n = M(t_n) with M the closed-form total
    mass, for a 1-D Stefan case started from 0 with u = 1 held at its left end (k_max = 1,
    k_min = 0); None for any other case. Data no surrogate has: the variant is labelled so."""
    get = lambda name, default: float(params.get(name, case.pde.get(name, default)))
    if cv.dim != 1 or case.pde.get("family") != "gpme" or case.pde.get("k") != "stefan":
        return None
    if get("k_max", 1.0) != 1.0 or get("k_min", 0.0) != 0.0 or "u_star" not in params:
        return None
    dirichlet = boundary.kind == "dirichlet"
    left = int(np.argmin(cv.centre[:, 0]))
    cols = boundary.G[dirichlet].indices % layout.N if dirichlet.any() else np.zeros(0, int)
    if not dirichlet.any() or np.any(cols != left) or np.any(boundary.b[dirichlet] != 1.0) or \
            np.any(np.delete(u0, left) != 0):   # started from 0 (the wall's own value is its data)
        return None
    T, N = layout.T, layout.N
    G = sp.csr_matrix((np.tile(cv.volume, T), np.arange(T * N), np.arange(0, T * N + 1, N)),
                      shape=(T, layout.size))
    return ConstraintRows(G, stefan_mass(params["u_star"], times[1:]),
                          np.full(T, "known-mass", dtype="U24"))


def variant_rhs(variant: str, cv, layout, u0, source, boundary: ConstraintRows,
                known_mass: ConstraintRows | None = None) -> np.ndarray:
    """The right-hand side b of :func:`variant_rows` alone: G is the same for every scenario of
    a case, so a driver builds the rows once and this per scenario."""
    per_cell = conservation_rhs(cv, layout, u0, source)
    if variant in ("hardc", "global"):
        return per_cell.reshape(layout.T, layout.N).sum(axis=1)
    parts = [per_cell]
    if variant in ("per-cell+boundary", "known-mass") and boundary.count:
        parts.append(boundary.b)
    if variant == "known-mass":
        parts.append(known_mass.b)
    return np.concatenate(parts)


LOW_RANK = ("ensemble", "ensemble+diagonal")   # the [constraints] covariance settings with U


def prediction_covariance(var: np.ndarray, deviations: np.ndarray | None,
                          covariance: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(diagonal, U) of the prediction's covariance diag + U Uᵀ from the ensemble: the
    per-entry variance, or the members' deviations / √(M − 1) over a variance floor."""
    floor = VARIANCE_FLOOR * max(float(var.mean()), 1e-300)
    diag, U = np.maximum(var, floor), None
    if covariance in LOW_RANK and deviations is not None:
        M = deviations.shape[0]
        U = deviations.T / np.sqrt(max(M - 1, 1))
        if covariance == "ensemble":
            diag = np.full_like(var, floor)
    return diag, U


def make_update(rows: ConstraintRows, diag, U, sigma: float, owner: np.ndarray | None = None,
                comm=None):
    """The Gaussian update of these rows: serial (sparse LU / CG) on one rank, the PETSc
    update over the control volumes' partition on several (``owner``: rank of each entry)."""
    if comm is None or comm.size == 1:
        return GaussianUpdate(rows.G, rows.b, diag, U, sigma)
    from hybrid.constraints.distributed import DistributedUpdate
    return DistributedUpdate(rows.G, rows.b, diag, U, sigma, owner, comm)
