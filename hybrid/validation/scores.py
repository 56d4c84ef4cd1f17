"""The scores of one variant's prediction of the test scenarios (docs/metrics.md):
:func:`variant_scores` for the scalar families, :func:`flow_scores` for navier-stokes, and
:func:`residual_by_kind`, the exactness of a variant's own rows."""

from __future__ import annotations

import numpy as np

from hybrid.constraints.flow import wall_rows
from hybrid.constraints.rows import StateLayout
from hybrid.mesh.control_volumes import balance_residual
from hybrid.metrics import (coverage, crps_gaussian, gaussian_log_likelihood, mass_error, max_error,
                            mse, relative_l2, variance_floor)

__all__ = ["variant_scores", "flow_scores", "residual_by_kind"]


def variant_scores(cv, data: dict, layout: StateLayout, boundary: list, u, var, flux) -> dict:
    """Every metric of one variant over the test scenarios (docs/metrics.md): u, var (S, T+1, N)
    and flux (S, T, F); t = 0, the given state, is not scored."""
    test = data["test"]
    truth, var = test["u"][:, 1:], np.maximum(var[:, 1:], 0.0)
    w = cv.volume
    scale = np.abs(test["u"]).max() * w.max()
    balance = max(float(np.abs(balance_residual(w, cv.face_cv, u[i], flux[i],
                                                test["source"][i])).max())
                  for i in range(len(u))) / scale
    u = u[:, 1:]
    errors = {"dirichlet": 0.0, "neumann-flux": 0.0, "normal-derivative": 0.0}
    for i, rows in enumerate(boundary):
        x = layout.pack(u[i], flux[i])
        for kind in errors:
            sel = rows.kind == kind
            if sel.any():
                errors[kind] = max(errors[kind], float(np.abs(rows.G[sel] @ x - rows.b[sel]).max()))
    has = {kind: any((rows.kind == kind).any() for rows in boundary) for kind in errors}
    per_time = np.stack([relative_l2(u[:, n], truth[:, n], w) for n in range(u.shape[1])], axis=1)
    return {"rel_l2": float(relative_l2(u, truth, w).mean()), "mse": mse(u, truth, w),
            "max_error": max_error(u, truth), "mass_error": mass_error(u, truth, w),
            "max_balance_residual": balance,
            "dirichlet_error": errors["dirichlet"] if has["dirichlet"] else None,
            "neumann_flux_error": errors["neumann-flux"] if has["neumann-flux"] else None,
            "normal_derivative_error": (errors["normal-derivative"] if has["normal-derivative"]
                                        else None),
            "log_likelihood": gaussian_log_likelihood(u, var, truth, variance_floor(var)),
            "crps": crps_gaussian(u, var, truth), "coverage90": coverage(u, var, truth),
            "rel_l2_over_time": per_time.mean(axis=0).tolist()}


def flow_scores(cv, data: dict, boundary: list, u: np.ndarray, var: np.ndarray,
                flux: np.ndarray) -> dict:
    """Scores of one variant: u, var (S, T+1, d N) and flux (S, T, F); t = 0 is not scored.
    ``boundary``: :func:`~hybrid.constraints.flow.wall_data` of each test scenario."""
    test = data["test"]
    N = cv.num_cvs
    d = test["u"].shape[-1] // N
    truth, u, var = test["u"][:, 1:], u[:, 1:], np.maximum(var[:, 1:], 0.0)
    w = np.tile(cv.volume, d)
    D = cv.incidence()
    scale = float(np.abs(test["u"]).max() * cv.face_area.max())
    divergence = (np.abs(D @ flux.reshape(-1, flux.shape[-1]).T).T.reshape(*flux.shape[:2], N)
                  / scale)  # (S, T, N)
    wall_err, bflux_err = 0.0, 0.0
    faces = cv.boundary_faces
    for i, (walls_t, bflux) in enumerate(boundary):
        for n, walls in enumerate(walls_t):
            rows = wall_rows(cv, walls)
            x = np.concatenate([u[i, n], flux[i, n]])
            wall_err = max(wall_err, float(np.abs(rows.G @ x - rows.b).max()))
        bflux_err = max(bflux_err, float(np.abs(flux[i][:, faces] - bflux[:, faces]).max()))
    per_time = np.stack([relative_l2(u[:, n], truth[:, n], w) for n in range(u.shape[1])], axis=1)
    return {"rel_l2": float(relative_l2(u, truth, w).mean()), "mse": mse(u, truth, w),
            "max_error": max_error(u, truth),
            "flux_rel_l2": float(relative_l2(flux, test["flux"], 1.0).mean()),
            "max_divergence": float(divergence.max()),
            "divergence_over_time": divergence.max(axis=(0, 2)).tolist(),
            "wall_error": wall_err, "boundary_flux_error": bflux_err,
            "log_likelihood": gaussian_log_likelihood(u, var, truth, variance_floor(var)),
            "crps": crps_gaussian(u, var, truth), "coverage90": coverage(u, var, truth),
            "rel_l2_over_time": per_time.mean(axis=0).tolist()}


def residual_by_kind(rows, x: np.ndarray, into: dict) -> None:
    """Largest |G x − b| per row kind, relative to the row's scale ‖G_i‖_∞ max|x| + |b_i|."""
    if not rows.count:
        return
    G = rows.G.tocsr()
    row_scale = np.abs(G).max(axis=1).toarray().ravel() * np.abs(x).max() + np.abs(rows.b)
    rel = np.abs(G @ x - rows.b) / np.maximum(row_scale, 1e-300)
    for kind in np.unique(rows.kind):
        into[str(kind)] = max(into.get(str(kind), 0.0), float(rel[rows.kind == kind].max()))
