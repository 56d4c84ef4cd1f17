"""The variants a case compares: raw, HardC, global, per-cell, per-cell + boundary.

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

from hybrid.constraints.rows import (ConstraintRows, StateLayout, boundary_flux_rows, conservation_rows,
                                     dirichlet_rows, global_rows, stack_rows)
from hybrid.constraints.update import GaussianUpdate
from hybrid.mesh.control_volumes import ControlVolumes

__all__ = ["VARIANTS", "variant_rows", "apply_variant", "boundary_rows"]

VARIANTS = ("raw", "hardc", "global", "per-cell", "per-cell+boundary")
VARIANCE_FLOOR = 1e-8  # relative to the mean variance: keeps G Σ Gᵀ well conditioned where members agree exactly


def boundary_rows(case, cv: ControlVolumes, layout: StateLayout, times: np.ndarray, params: dict) -> ConstraintRows:
    """Known Neumann fluxes Φ_f^n = |f| ∫ q dt (Simpson over the interval), and Dirichlet
    values of dual control volumes at the output times."""
    from hybrid.stages.solve import boundary_data

    blocks = []
    bfaces = cv.boundary_faces
    for bc in boundary_data(case):
        if bc.name not in cv.boundary_names or bc.kind == "periodic":
            continue
        faces = bfaces[cv.face_tag[bfaces] == cv.boundary_names[bc.name]]
        if bc.kind == "flux":
            pts = cv.face_centroid[faces]
            values = []
            for n in range(1, layout.T + 1):
                ts = np.linspace(times[n - 1], times[n], 9)
                q = np.stack([bc.expr(pts, t=t, params=params) for t in ts])
                values.append(simpson(q, x=ts, axis=0) * cv.face_area[faces])
            blocks.append(boundary_flux_rows(layout, faces, np.array(values)))
        elif bc.kind == "dirichlet" and cv.kind == "dual":
            cvs = np.unique(cv.face_cv[faces, 0])
            values = np.stack([bc.expr(cv.centre[cvs], t=t, params=params) for t in times[1:]])
            blocks.append(dirichlet_rows(layout, cvs, values))
    if not blocks:
        return ConstraintRows(sp.csr_matrix((0, layout.size)), np.zeros(0), np.zeros(0, dtype="U16"))
    # a control volume on two Dirichlet boundaries gets one row, not two (they would be redundant)
    return _dedupe(stack_rows(blocks))


def _dedupe(rows: ConstraintRows) -> ConstraintRows:
    """Drop repeated single-entry rows (a corner control volume on two Dirichlet walls)."""
    G = rows.G.tocsr()
    single = np.diff(G.indptr) == 1
    cols = np.where(single, G.indices[np.minimum(G.indptr[:-1], len(G.indices) - 1)], -1 - np.arange(G.shape[0]))
    _, first = np.unique(cols, return_index=True)
    keep = np.sort(first)
    return ConstraintRows(G[keep], rows.b[keep], rows.kind[keep])


def variant_rows(variant: str, cv, layout, u0, source, boundary: ConstraintRows) -> ConstraintRows | None:
    """The rows of a variant; ``boundary`` is the scenario's :func:`boundary_rows`."""
    if variant == "raw":
        return None
    if variant in ("hardc", "global"):
        return global_rows(cv, layout, u0, source)
    rows = conservation_rows(cv, layout, u0, source)
    if variant == "per-cell+boundary" and boundary.count:
        rows = stack_rows([rows, boundary])
    return rows


def apply_variant(variant: str, rows: ConstraintRows | None, mean: np.ndarray, var: np.ndarray,
                  deviations: np.ndarray | None, covariance: str, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Constrained mean and marginal variance of one scenario's state vector."""
    if rows is None:
        return mean, var
    if variant == "hardc":
        return GaussianUpdate(rows.G, rows.b, 1.0, None, 0.0).mean(mean), var
    floor = VARIANCE_FLOOR * max(float(var.mean()), 1e-300)
    U = None
    diag = np.maximum(var, floor)
    if covariance in ("ensemble", "ensemble+diagonal") and deviations is not None:
        M = deviations.shape[0]
        U = deviations.T / np.sqrt(max(M - 1, 1))
        if covariance == "ensemble":
            diag = np.full_like(var, floor)
    update = GaussianUpdate(rows.G, rows.b, diag, U, sigma)
    return update.mean(mean), np.maximum(update.variance(), 0.0)
