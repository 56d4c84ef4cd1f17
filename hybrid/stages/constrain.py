"""The constraint variants of ``hybrid predict``: every variant the case asks for, per test
scenario, with the scores of the ablation table.

Written to ``OUTPUT/predict/variants.h5`` (``VARIANT/u_mean`` (S, T+1, N), ``u_var``,
``flux_mean`` (S, T, F)) and into ``metrics.json`` under ``variants``: MSE, relative L2,
the largest per-cell balance residual relative to |K| max|u|, the global mass error, the
Dirichlet boundary error, and the update's wall time per scenario. This is the serial
reference (rank 0); the distributed PETSc solve is still to come.
"""

from __future__ import annotations

import time

import h5py
import numpy as np

from hybrid.constraints.rows import StateLayout
from hybrid.constraints.variants import VARIANTS, apply_variant, boundary_rows, variant_rows
from hybrid.files import atomic_path
from hybrid.mesh.control_volumes import balance_residual
from hybrid.metrics import coverage, gaussian_log_likelihood, relative_l2

__all__ = ["requested_variants", "run_variants"]


def requested_variants(case) -> list[str]:
    c = case.constraints
    main = "raw" if c["conservation"] == "none" else c["conservation"]
    if main == "per-cell" and c["boundary"] == "exact":
        main = "per-cell+boundary"
    wanted = ["raw", main] + [v for v in c["compare"] if v in VARIANTS]
    return [v for v in VARIANTS if v in wanted]


def run_variants(case, cv, data: dict, u_mean, u_var, u_dev, flux_mean, flux_var, flux_dev, out_path) -> dict:
    test = data["test"]
    times = data["times"]
    S, T1, N = test["u"].shape
    layout = StateLayout(N, cv.num_faces, T1 - 1)
    names = test["parameter_names"]
    # the boundary rows of each scenario: used by the per-cell+boundary variant and by the scores
    boundary = [boundary_rows(case, cv, layout, times, dict(zip(names, map(float, test["params"][i]))))
                for i in range(S)]
    results, seconds = {}, {}
    for variant in requested_variants(case):
        means, variances, fluxes, spent = [], [], [], 0.0
        for i in range(S):
            t0 = time.perf_counter()
            rows = variant_rows(variant, cv, layout, test["u"][i, 0], test["source"][i], boundary[i])
            mean = layout.pack(u_mean[i, 1:], flux_mean[i])
            var = layout.pack(u_var[i, 1:], flux_var[i])
            dev = np.stack([layout.pack(u_dev[i, m, 1:], flux_dev[i, m]) for m in range(u_dev.shape[1])])
            m, v = apply_variant(variant, rows, mean, var, dev, case.constraints["covariance"],
                                 case.constraints["sigma"])
            spent += time.perf_counter() - t0
            um, fm = layout.unpack(m)
            uv, _ = layout.unpack(v)
            means.append(np.concatenate([test["u"][i, :1], um]))
            variances.append(np.concatenate([np.zeros((1, N)), uv]))
            fluxes.append(fm)
        results[variant] = (np.array(means), np.array(variances), np.array(fluxes))
        seconds[variant] = spent / max(S, 1)
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, "w") as f:
            for variant, (m, v, fl) in results.items():
                f[f"{variant}/u_mean"] = m
                f[f"{variant}/u_var"] = v
                f[f"{variant}/flux_mean"] = fl
    return {variant: _scores(cv, data, layout, boundary, *results[variant], seconds[variant]) for variant in results}


def _scores(cv, data, layout, boundary, u, var, flux, seconds) -> dict:
    test = data["test"]
    truth = test["u"]
    err = u[:, 1:] - truth[:, 1:]
    w = cv.volume
    rel = relative_l2(u[:, 1:], truth[:, 1:], w)
    scale = np.abs(truth).max() * cv.volume.max()
    balance = max(float(np.abs(balance_residual(cv.volume, cv.face_cv, u[i], flux[i], test["source"][i])).max())
                  for i in range(len(u))) / scale
    # relative to the total amount Σ|K||u| (the signed total can be 0, e.g. sin x on a period)
    mass_err = float(np.abs((u[:, 1:] - truth[:, 1:]) @ w).max() / max((np.abs(truth[:, 1:]) @ w).max(), 1e-300))
    dirichlet_error = 0.0
    for i, rows in enumerate(boundary):
        dirichlet = rows.kind == "dirichlet"
        if dirichlet.any():
            x = layout.pack(u[i, 1:], flux[i])
            dirichlet_error = max(dirichlet_error, float(np.abs(rows.G[dirichlet] @ x - rows.b[dirichlet]).max()))
    return {"mse": float(np.mean(err ** 2)), "rel_l2": float(rel.mean()), "max_balance_residual": balance,
            "mass_error": mass_err, "dirichlet_error": dirichlet_error,
            "coverage90": coverage(u[:, 1:], var[:, 1:], truth[:, 1:]),
            "log_likelihood": gaussian_log_likelihood(u[:, 1:], var[:, 1:], truth[:, 1:]), "update_seconds": seconds}
