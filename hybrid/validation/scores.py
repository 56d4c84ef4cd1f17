"""The scores of one variant's prediction of the test scenarios (docs/metrics.md):
:func:`variant_scores` for the scalar families, :func:`flow_scores` for navier-stokes, and
:func:`residual_by_kind`, the exactness of a variant's own rows; and the surrogate-level
scores of the raw ensemble (:func:`score_prediction`, against the nearest training scenario of
:func:`nearest_training_baseline`)."""

from __future__ import annotations

import numpy as np

from hybrid.constraints.flow import wall_rows
from hybrid.constraints.rows import StateLayout
from hybrid.constraints.selection import within_training_span
from hybrid.dataset import scenario_parameters
from hybrid.mesh.control_volumes import balance_residual
from hybrid.metrics import (coverage, crps_gaussian, gaussian_log_likelihood, mass_error, max_error,
                            mse, relative_l2, variance_floor)

__all__ = ["variant_scores", "flow_scores", "residual_by_kind", "score_prediction",
           "nearest_training_baseline", "REPEAT_TOLERANCE"]


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


REPEAT_TOLERANCE = 1e-12   # relative L2 of the nearest training scenario below which it repeats
                           # the test one


def nearest_training_baseline(train: dict, test: dict) -> np.ndarray:
    """Index of the training scenario nearest to each test scenario, in normalised
    parameters and initial state together."""
    p_tr, p_te = train["params"], test["params"]
    std = p_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    u_tr, u_te = train["u"][:, 0], test["u"][:, 0]
    dist = (((p_te[:, None, :] - p_tr[None]) / std) ** 2).sum(-1)
    u_scale = u_tr.std()
    if u_scale > 0:  # initial states that differ between scenarios count too
        dist += ((u_te[:, None, :] - u_tr[None]) ** 2).mean(-1) / u_scale ** 2
    return np.argmin(dist, axis=1)


def score_prediction(data: dict, cv, u_mean, u_var, flux_mean, surrogate_seconds,
                     declared=None) -> dict:
    """The surrogate-level scores of a prediction of the test scenarios (docs/metrics.md);
    ``declared`` the training laws' bounds that widen the training span
    (:func:`~hybrid.constraints.selection.within_training_span`)."""
    test, train = data.test, data.train
    truth = test.u[:, 1:]
    w = np.tile(cv.volume, truth.shape[-1] // cv.num_cvs)   # a velocity's components share their
                                                            # volumes
    rel = relative_l2(u_mean[:, 1:], truth, w)
    nearest = nearest_training_baseline(train, test)
    rel_base = relative_l2(train.u[nearest][:, 1:], truth, w)
    flux_rel = relative_l2(flux_mean, test.flux, 1.0)
    per = [{"params": scenario_parameters(test, i),
            "rel_l2": float(rel[i]), "rel_l2_nearest_train": float(rel_base[i]),
            "flux_rel_l2": float(flux_rel[i])}
           for i in range(len(rel))]
    # a test scenario whose parameters and initial state repeat a training one's has the solver's
    # answer in the training set: there the lookup is exact and its ratio says nothing
    repeats = bool(np.all(rel_base <= REPEAT_TOLERANCE))
    # test parameters inside the training scenarios' span, and outside it (extrapolation), apart
    inside = within_training_span(train.params, test.params, declared)
    by_range = {}
    for label, chosen in (("in_range", inside), ("out_of_range", ~inside)):
        if chosen.any():
            r, b = float(rel[chosen].mean()), float(rel_base[chosen].mean())
            by_range[label] = {"scenarios": int(chosen.sum()), "rel_l2_mean": r,
                               "rel_l2_nearest_train": b,
                               "nearest_over_ensemble": (None if np.all(rel_base[chosen]
                                                                        <= REPEAT_TOLERANCE)
                                                         else b / max(r, 1e-300)),
                               "coverage90": coverage(u_mean[chosen, 1:],
                                                      np.maximum(u_var[chosen, 1:], 1e-300),
                                                      truth[chosen])}
    for i, scenario in enumerate(per):
        scenario["in_training_span"] = bool(inside[i])
    return {"rel_l2_mean": float(rel.mean()), "rel_l2_nearest_train": float(rel_base.mean()),
            "nearest_over_ensemble": (None if repeats
                                      else float(rel_base.mean() / max(rel.mean(), 1e-300))),
            "coverage90": coverage(u_mean[:, 1:], np.maximum(u_var[:, 1:], 1e-300), truth),
            "flux_rel_l2": float(flux_rel.mean()), "by_range": by_range,
            "solver_seconds": float(np.mean(test.solve_seconds)),
            "surrogate_seconds": float(np.mean(surrogate_seconds)), "scenarios": per}
