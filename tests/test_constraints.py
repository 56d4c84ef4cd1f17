"""The constraint engine's core: rows from control volumes, and the Gaussian update
against a dense numpy implementation of the formula."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from hybrid.constraints.rows import (StateLayout, conservation_rows, dirichlet_rows, global_rows,
                                     stack_rows)
from hybrid.constraints.update import ConstraintError, GaussianUpdate
from hybrid.mesh.control_volumes import build_control_volumes
from hybrid.mesh.shapes import generate


def dense_update(mu, G, b, Sigma, sigma):
    G = G.toarray()
    A = G @ Sigma @ G.T + sigma ** 2 * np.eye(G.shape[0])
    K = Sigma @ G.T @ np.linalg.inv(A)
    return mu - K @ (G @ mu - b), Sigma - K @ G @ Sigma


@pytest.mark.parametrize("ensemble", [False, True])
@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_update_matches_the_dense_formula(ensemble, sigma):
    rng = np.random.default_rng(1)
    n, rows, M = 40, 12, 5
    G = sp.random(rows, n, density=0.3, random_state=2, format="csr") + sp.eye(rows, n,
                                                                               format="csr")
    b = rng.standard_normal(rows)
    mu = rng.standard_normal(n)
    var = rng.uniform(0.1, 2.0, n)
    U = rng.standard_normal((n, M)) / np.sqrt(M - 1) if ensemble else None
    Sigma = np.diag(var) + (U @ U.T if ensemble else 0)
    upd = GaussianUpdate(G, b, var, U, sigma)
    mean_ref, cov_ref = dense_update(mu, G, b, Sigma, sigma)
    np.testing.assert_allclose(upd.mean(mu), mean_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(upd.variance(exact=True), np.diag(cov_ref), rtol=1e-9, atol=1e-11)
    if sigma == 0:
        assert np.abs(upd.residual(upd.mean(mu))).max() <= 1e-10 * max(1.0, np.abs(b).max())
    # Matheron samples: exact constraint (σ = 0) and the right spread
    samples = upd.sample(upd.prior_samples(mu, 4000, seed=11), seed=12)
    if sigma == 0:
        assert np.abs(samples @ G.T - b).max() < 1e-9
    np.testing.assert_allclose(samples.mean(0), mean_ref, atol=0.12)
    np.testing.assert_allclose(samples.var(0, ddof=1), np.diag(cov_ref), rtol=0.15, atol=0.02)


def test_hardc_is_the_euclidean_projection():
    rng = np.random.default_rng(3)
    G = sp.csr_matrix(rng.standard_normal((3, 9)))
    b, mu = rng.standard_normal(3), rng.standard_normal(9)
    projected = GaussianUpdate(G, b, 1.0).mean(mu)
    Gd = G.toarray()
    expected = mu - Gd.T @ np.linalg.solve(Gd @ Gd.T, Gd @ mu - b)
    np.testing.assert_allclose(projected, expected, atol=1e-12)


def _problem(kind="dual", T=3):
    mesh = generate({"shape": "rectangle", "h": 0.3}, seed=0)
    cv = build_control_volumes(mesh, kind)
    return cv, StateLayout(cv.num_cvs, cv.num_faces, T)


@pytest.mark.parametrize("kind", ["dual", "cells"])
def test_per_cell_rows_sum_to_the_global_rows(kind):
    cv, layout = _problem(kind)
    rng = np.random.default_rng(0)
    u0 = rng.standard_normal(cv.num_cvs)
    per_cell = conservation_rows(cv, layout, u0)
    glob = global_rows(cv, layout, u0)
    for n in range(layout.T):
        block = per_cell.G[n * cv.num_cvs:(n + 1) * cv.num_cvs]
        summed = np.asarray(block.sum(axis=0)).ravel()
        np.testing.assert_allclose(summed, glob.G[n].toarray().ravel(), atol=1e-15)
        assert per_cell.b[n * cv.num_cvs:(n + 1) * cv.num_cvs].sum() == pytest.approx(glob.b[n])
    # interior fluxes cancel: the global row touches boundary fluxes only
    interior = np.flatnonzero(cv.face_cv[:, 1] >= 0)
    cols = glob.G.tocoo().col
    assert not np.isin(cols,
                       [layout.flux(n).start + interior for n in range(1, layout.T + 1)]).any()


def test_a_conservative_trajectory_satisfies_the_rows():
    """The rows hold for fluxes and states that satisfy the balance law."""
    cv, layout = _problem("dual", T=2)
    rng = np.random.default_rng(4)
    u0 = rng.standard_normal(cv.num_cvs)
    flux = rng.standard_normal((2, cv.num_faces))
    D = cv.incidence()
    u1 = u0 - (D @ flux[0]) / cv.volume
    u2 = u1 - (D @ flux[1]) / cv.volume
    x = layout.pack(np.stack([u1, u2]), flux)
    rows = conservation_rows(cv, layout, u0)
    assert np.abs(rows.G @ x - rows.b).max() < 1e-12


def test_per_cell_update_is_exact_and_redundant_rows_are_reported():
    cv, layout = _problem("dual", T=2)
    rng = np.random.default_rng(5)
    u0 = rng.standard_normal(cv.num_cvs)
    rows = conservation_rows(cv, layout, u0)
    mu = rng.standard_normal(layout.size)
    upd = GaussianUpdate(rows.G, rows.b, rng.uniform(0.5, 1.5, layout.size))
    scale = np.abs(rows.G).max(axis=1).toarray().ravel() * np.abs(mu).max()
    assert np.max(np.abs(upd.residual(upd.mean(mu))) / scale) < 1e-10
    both = stack_rows([rows, global_rows(cv, layout, u0)])
    with pytest.raises(ConstraintError, match="redundant"):
        GaussianUpdate(both.G, both.b, 1.0)
    # Dirichlet rows on top of per-cell rows are independent
    ok = stack_rows([rows, dirichlet_rows(layout, np.array([0, 1]), np.zeros((2, 2)))])
    upd = GaussianUpdate(ok.G, ok.b, 1.0)
    x = upd.mean(mu)
    assert np.abs(layout.unpack(x)[0][:, :2]).max() < 1e-12


def test_requested_variants_follow_the_case():
    from types import SimpleNamespace

    from hybrid.constraints.driver import requested_variants

    case = SimpleNamespace(constraints={"conservation": "per-cell", "boundary": "exact",
                                        "compare": ["hardc"]})
    assert requested_variants(case) == ["raw", "hardc", "per-cell+boundary"]
    case.constraints = {"conservation": "global", "boundary": "none",
                        "compare": ["raw", "per-cell", "softc"]}
    # no SoftC ensemble was trained
    assert requested_variants(case) == ["raw", "global", "per-cell"]
    assert requested_variants(case, {"softc": {}}) == ["raw", "softc", "global", "per-cell"]


def test_predict_writes_exact_per_cell_variant(tmp_path):
    """The per-cell variant of a real (tiny) prediction balances every control volume."""
    import json
    from pathlib import Path

    import h5py

    from helpers import run_cli, small_case

    root = Path(__file__).resolve().parents[1]
    case = small_case(root / "cases" / "stefan-1d", tmp_path, train=6, test=2,
                      surrogate={"members": "2", "epochs": "3", "grid": "32", "modes": "8",
                                 "width": "8", "layers": "2", "batch": "4", "rollout_epochs": "3"},
                      time={"t_end": "0.02", "outputs": "4"},
                      constraints={"compare": '["raw", "hardc", "global", "per-cell"]'})
    proc = run_cli(["predict", str(case), "--quiet"])
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((case / "results/predict/metrics.json").read_text())["variants"]
    assert set(metrics) == {"raw", "hardc", "global", "per-cell", "per-cell+boundary"}
    assert metrics["per-cell"]["max_balance_residual"] < 1e-10
    assert metrics["per-cell+boundary"]["max_balance_residual"] < 1e-10
    assert metrics["raw"]["max_balance_residual"] > 1e-6      # the raw surrogate does not conserve
    with h5py.File(case / "results/predict/variants.h5", "r") as f:
        assert f["per-cell/u_mean"].shape == f["raw/u_mean"].shape


def test_cg_with_multigrid_agrees_with_the_direct_solve():
    mesh = generate({"shape": "rectangle", "h": 0.1}, seed=0)
    cv = build_control_volumes(mesh, "dual")
    layout = StateLayout(cv.num_cvs, cv.num_faces, 4)
    rng = np.random.default_rng(6)
    rows = conservation_rows(cv, layout, rng.standard_normal(cv.num_cvs))
    mu, var = rng.standard_normal(layout.size), rng.uniform(0.5, 1.5, layout.size)
    U = rng.standard_normal((layout.size, 3)) / np.sqrt(2)
    direct = GaussianUpdate(rows.G, rows.b, var, U, direct=True).mean(mu)
    iterative_update = GaussianUpdate(rows.G, rows.b, var, U, direct=False)
    iterative = iterative_update.mean(mu)
    np.testing.assert_allclose(iterative, direct, rtol=0, atol=1e-9 * np.abs(direct).max())
    scale = np.abs(rows.G).max(axis=1).toarray().ravel() * np.abs(mu).max()
    assert np.max(np.abs(iterative_update.residual(iterative)) / scale) < 1e-10


def test_normal_derivative_rows_hold_for_a_linear_field_and_are_imposed_exactly():
    from hybrid.constraints.rows import normal_derivative_rows

    cv, layout = _problem("dual", T=2)
    right, top = cv.faces_of("right"), cv.faces_of("top")
    u = 3 * cv.centre[:, 0] + 2 * cv.centre[:, 1]        # du/dn = 3 on the right, 2 on the top
    x = layout.pack(np.stack([u, u]), np.zeros((2, cv.num_faces)))
    rows_r = normal_derivative_rows(cv, layout, right, lambda p, n: np.full(len(p), 3.0))
    rows_t = normal_derivative_rows(cv, layout, top, lambda p, n: np.full(len(p), 2.0))
    # one row per boundary facet (its d dual faces share the cell's gradient) and output time
    assert rows_r.count == layout.T * len(right) // cv.dim
    assert (np.abs(rows_r.G @ x - rows_r.b).max() < 1e-12
            and np.abs(rows_t.G @ x - rows_t.b).max() < 1e-12)
    wrong = normal_derivative_rows(cv, layout, right, lambda p, n: np.full(len(p), 4.0))
    assert np.abs(wrong.G @ x - wrong.b).min() > 0.9
    # imposed on a random prediction together with the per-cell rows: exact
    rng = np.random.default_rng(8)
    rows = stack_rows([conservation_rows(cv, layout, rng.standard_normal(cv.num_cvs)), wrong])
    upd = GaussianUpdate(rows.G, rows.b, rng.uniform(0.5, 1.5, layout.size))
    post = upd.mean(rng.standard_normal(layout.size))
    assert np.abs(wrong.G @ post - wrong.b).max() < 1e-10
    with pytest.raises(ValueError, match="dual"):
        normal_derivative_rows(_problem("cells")[0], layout, right, lambda p, n: 0 * p[:, 0])


def _space_time_problem(shape: dict, T: int, flux_var: float, seed: int = 0):
    cv = build_control_volumes(generate(shape, seed=0), "dual")
    layout = StateLayout(cv.num_cvs, cv.num_faces, T)
    rng = np.random.default_rng(seed)
    walls = np.unique(cv.face_cv[cv.boundary_faces, 0])[:3]
    rows = stack_rows([conservation_rows(cv, layout, rng.standard_normal(cv.num_cvs)),
                       dirichlet_rows(layout, walls, rng.standard_normal((T, len(walls))))])
    states = T * cv.num_cvs
    var = np.concatenate([rng.uniform(0.5, 1.5, states) * 1e-3,
                          rng.uniform(0.5, 1.5, layout.size - states) * flux_var])
    return cv, layout, rows, var, rng.standard_normal(layout.size)


@pytest.mark.parametrize("method", ["cholesky", "pcg"])
@pytest.mark.parametrize("ensemble", [False, True])
def test_fast_update_matches_the_dense_reference(method, ensemble):
    """The plan's Cholesky (1-D and 2-D meshes) and the time-block PCG give the dense formula's
    mean to 1e-10 and, through the exact diagonal, its variance to 1e-8; a plan reused for another
    scenario's variances gives the same answer as a fresh one."""
    for shape in ({"shape": "interval", "cells": 40, "jitter": 0.3},
                  {"shape": "rectangle", "h": 0.3}):
        cv, layout, rows, var, mu = _space_time_problem(shape, 4, 1e-4)
        U = (np.random.default_rng(2).standard_normal((layout.size, 3)) * np.sqrt(var)[:, None]
             if ensemble else None)
        Sigma = np.diag(var) + (U @ U.T if ensemble else 0)
        mean_ref, cov_ref = dense_update(mu, rows.G, rows.b, Sigma, 0.0)
        other = GaussianUpdate(rows.G, rows.b, var * 2.0, U, layout=layout, method=method)
        upd = GaussianUpdate(rows.G, rows.b, var, U, plan=other.plan, layout=layout, method=method)
        assert upd.plan is other.plan and upd.plan.method == method
        scale = np.abs(mean_ref).max()
        np.testing.assert_allclose(upd.mean(mu), mean_ref, rtol=0, atol=1e-10 * scale)
        np.testing.assert_allclose(upd.variance(exact=True), np.diag(cov_ref), rtol=1e-8,
                                   atol=1e-14)
        fresh = GaussianUpdate(rows.G, rows.b, var, U, layout=layout, method=method)
        np.testing.assert_allclose(fresh.mean(mu), upd.mean(mu), rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("ensemble", [False, True])
def test_a_fixed_shape_reuses_one_factorisation(ensemble):
    """A plan fixed on a case's prior shape (UpdatePlan.fix) updates every multiple s of it without
    refactoring: the dense formula's mean to 1e-10 and variance to 1e-8 (an ensemble part through
    Woodbury on the scaled factor), the variance of a diagonal prior s times the shape's, computed
    once with the plan's seed; a prior that is not a multiple refactors and is exact too."""
    for shape in ({"shape": "interval", "cells": 40, "jitter": 0.3},
                  {"shape": "rectangle", "h": 0.3}):
        cv, layout, rows, var, mu = _space_time_problem(shape, 4, 1e-4)
        U = (np.random.default_rng(2).standard_normal((layout.size, 3)) * np.sqrt(var)[:, None]
             if ensemble else None)
        plan = GaussianUpdate(rows.G, rows.b, var, layout=layout).plan
        assert plan.fix(var, seed=5)
        scale, kept = None, []
        for s in (1.0, 3.7, 0.02):
            Sigma = s * np.diag(var) + (U @ U.T if ensemble else 0)
            mean_ref, cov_ref = dense_update(mu, rows.G, rows.b, Sigma, 0.0)
            upd = GaussianUpdate(rows.G, rows.b, s * var, U, plan=plan, layout=layout)
            assert upd.shape_scale == pytest.approx(s, rel=1e-14) and "factor" in upd.timings
            scale = np.abs(mean_ref).max()
            np.testing.assert_allclose(upd.mean(mu), mean_ref, rtol=0, atol=1e-10 * scale)
            m, v, post = upd.posterior(mu, 2000, seed=s_seed(s), probes=10 ** 6)
            # the kept work (the shape's samples and the normals drawn inside them) is the
            # plan's, counted once: no phase goes negative
            assert all(t >= 0 for t in upd.timings.values()), upd.timings
            np.testing.assert_allclose(v, np.diag(cov_ref), rtol=1e-8,   # pinned entries: 0
                                       atol=1e-8 * np.diag(cov_ref).max())
            # posterior samples: exact rows, the posterior's spread
            assert np.abs(rows.G @ post.T - rows.b[:, None]).max() <= 1e-9 * scale
            spread = ((post - m) ** 2).mean(axis=0)
            free = np.diag(cov_ref) > 1e-6 * np.diag(cov_ref).max()
            assert abs(np.mean(spread[free] / np.diag(cov_ref)[free]) - 1) < 0.05
            if not ensemble:   # the shape's deviations, scaled by √s: kept, not redrawn
                kept.append((post - m) / np.sqrt(s))
                np.testing.assert_allclose(kept[-1], kept[0], rtol=1e-9, atol=1e-12)
        if not ensemble:   # the shape's variance and samples are kept: one entry each,
                           # whatever the seeds
            assert len(plan.fixed_variance) == len(plan.fixed_samples) == 1
        other = var * np.random.default_rng(3).uniform(0.5, 2.0, len(var))
        upd = GaussianUpdate(rows.G, rows.b, other, U, plan=plan, layout=layout)
        assert upd.shape_scale is None
        mean_ref, _ = dense_update(mu, rows.G, rows.b,
                                   np.diag(other) + (U @ U.T if ensemble else 0), 0.0)
        np.testing.assert_allclose(upd.mean(mu), mean_ref, rtol=0, atol=1e-10 * scale)
        plan.destroy()
        assert plan.shape is None


def s_seed(s: float) -> int:
    return int(1000 * s)

@pytest.mark.parametrize("large", [False, True])
def test_a_pcg_that_does_not_converge_falls_back_to_another_solver(monkeypatch, large):
    """A time-block PCG short of its tolerance after PCG_MAX_ITERATIONS gives the exact answer
    all the same (not an error that would drop a λ from the validation table): through the
    plan's Cholesky up to DIRECT_ROWS rows, CG + GAMG above; the plan keeps that solver for
    its later scenarios."""
    import hybrid.constraints.update as update

    cv, layout, rows, var, mu = _space_time_problem({"shape": "rectangle", "h": 0.3}, 4, 1e-4)
    mean_ref, _ = dense_update(mu, rows.G, rows.b, np.diag(var), 0.0)
    monkeypatch.setattr(update, "PCG_MAX_ITERATIONS", 1)
    if large:
        monkeypatch.setattr(update, "DIRECT_ROWS", 10)   # the problem counts as large
    upd = GaussianUpdate(rows.G, rows.b, var, layout=layout, method="pcg")
    assert upd.plan.method == "pcg"
    np.testing.assert_allclose(upd.mean(mu), mean_ref, rtol=0, atol=1e-10 * np.abs(mean_ref).max())
    assert upd.plan.method == ("cg-amg" if large else "cholesky")
    later = GaussianUpdate(rows.G, rows.b, var * 2.0, plan=upd.plan, layout=layout)
    assert later.plan is upd.plan and not isinstance(later._lu, update._BlockPCG)
    later.destroy()


def test_a_large_cholesky_over_the_memory_limit_is_an_error_not_a_killed_run(monkeypatch):
    """Above DIRECT_ROWS a Cholesky is MUMPS's under the memory limit: past it, a
    ConstraintError the caller handles (a skipped λ)."""
    import hybrid.constraints.update as update

    cv, layout, rows, var, mu = _space_time_problem({"shape": "rectangle", "h": 0.03}, 3, 1e-4)
    monkeypatch.setattr(update, "DIRECT_ROWS", 10)
    # MB: far below this one's need
    monkeypatch.setattr(update, "memory_budget_mb", lambda comm=None: 1)
    with pytest.raises(ConstraintError, match="over the memory limit"):
        GaussianUpdate(rows.G, rows.b, var, layout=layout, method="cholesky").mean(mu)


@pytest.mark.parametrize("samples", [0, 20, 150])
@pytest.mark.parametrize("flux_var", [1e-8, 1e-5])
def test_probed_variance_is_within_its_stated_error(flux_var, samples):
    """The probe estimate of the posterior variance against the exact diagonal: relative RMS
    error over the states ≤ 5% (the estimate's own error, the stopping rule's input, is within
    a factor 2 of the true one), zero where a Dirichlet row fixes the value, and one block solve
    of posterior samples that meet the rows, whatever their number."""
    cv, layout, rows, var, mu = _space_time_problem({"shape": "interval", "cells": 100,
                                                     "jitter": 0.3}, 10, flux_var)
    states = slice(0, layout.T * layout.N)
    upd = GaussianUpdate(rows.G, rows.b, var, layout=layout)
    exact = upd.variance(exact=True)[states]
    m, v, post = upd.posterior(mu, samples, seed=4, probes=1024, entries=states)
    # the error measure of the stopping rule: relative to the variance, or to 1% of the prior
    # where the rows all but fix the entry
    from hybrid.constraints.update import PINNED

    rel = (v - exact) / np.maximum(exact, PINNED * var[states])
    rms = np.sqrt(np.mean(rel ** 2))
    assert rms <= 0.05, rms
    stated = np.sqrt(np.mean(upd.probe_error ** 2))
    assert 0.5 * rms <= stated <= 2.0 * rms, (stated, rms)
    fixed = exact <= 1e-12
    assert fixed.any() and np.abs(v[fixed]).max() <= 1e-6 * var.max()
    full = GaussianUpdate(rows.G, rows.b, var, layout=layout).posterior(mu, max(samples, 20),
                                                                        seed=4, probes=0)[2]
    assert post.shape == (samples, layout.T * layout.N)
    if samples:   # the returned samples are the full posterior samples' states
        np.testing.assert_allclose(post, full[:samples, states], rtol=0,
                                   atol=1e-12 * np.abs(full).max())
    assert np.abs(full @ rows.G.T - rows.b).max() <= 1e-9 * np.abs(rows.b).max()
    np.testing.assert_allclose(m, dense_update(mu, rows.G, rows.b, np.diag(var), 0.0)[0], rtol=0,
                               atol=1e-10 * np.abs(m).max())


def test_calibration_recovers_a_known_scale_per_block_and_time():
    from hybrid.surrogates.calibration import apply_scales, fit_scales

    rng = np.random.default_rng(9)
    S, T, N, F, M = 40, 3, 200, 240, 4
    var_u, var_f = rng.uniform(0.5, 2.0, (S, T + 1, N)), rng.uniform(0.5, 2.0, (S, T, F))
    true_u = np.array([4.0, 9.0, 0.25])          # the errors are this much larger
                                                 # than the variances claim
    err_u = (rng.standard_normal((S, T + 1, N))
             * np.sqrt(var_u * np.concatenate([[0.0], true_u])[None, :, None]))
    err_f = rng.standard_normal((S, T, F)) * np.sqrt(var_f * 16.0)
    mean_u, mean_f = rng.standard_normal((S, T + 1, N)), rng.standard_normal((S, T, F))
    scales = fit_scales(mean_u + err_u, {"mean": mean_u, "var": var_u}, mean_f + err_f,
                        {"mean": mean_f, "var": var_f})
    np.testing.assert_allclose(scales.state, true_u, rtol=0.08)
    np.testing.assert_allclose(scales.flux, 16.0, rtol=0.08)
    pred = {"u_mean": mean_u, "u_var": var_u, "u_dev": rng.standard_normal((S, M, T + 1, N)),
            "flux_mean": mean_f, "flux_var": var_f, "flux_dev": rng.standard_normal((S, M, T, F))}
    out = apply_scales(pred, scales)
    np.testing.assert_allclose(out["u_var"][:, 2], var_u[:, 2] * scales.state[1])
    # t = 0 stays as given
    np.testing.assert_allclose(out["u_dev"][:, :, 0], pred["u_dev"][:, :, 0])
    np.testing.assert_allclose(out["flux_dev"] ** 2,
                               pred["flux_dev"] ** 2 * scales.flux[None, None, :, None])


def test_flux_inflation_is_chosen_by_validation_error():
    """Fluxes that are wrong while their variances claim otherwise: at λ = 1 a diagonal prior's
    update pushes the balance defect into the states and makes them worse than predicted; the
    validation choice of λ has the smallest MSE ratio of the grid, below 1."""
    from hybrid.constraints.selection import ValidationScenario, choose_flux_inflation

    cv, layout, rows, var, _ = _space_time_problem({"shape": "interval", "cells": 60,
                                                    "jitter": 0.3}, 5, 1e-5)
    rng = np.random.default_rng(3)
    scenarios = []
    flux = np.zeros(layout.size, bool)
    flux[layout.T * layout.N:] = True
    for _ in range(3):
        truth = layout.pack(rng.standard_normal((layout.T, layout.N)),
                            rng.standard_normal((layout.T, layout.F)))
        truth = GaussianUpdate(rows.G, rows.b, 1.0).mean(truth)        # a state that meets the rows
        error = layout.pack(0.01 * rng.standard_normal((layout.T, layout.N)),
                            0.1 * rng.standard_normal((layout.T, layout.F)))
        scenarios.append(ValidationScenario(rows, truth + error, var, None, flux,
                                            truth[:layout.T * layout.N].reshape(layout.T,
                                                                                layout.N)))
    lam, table, safe = choose_flux_inflation(scenarios, cv.volume, layout=layout)
    assert safe >= 1.0 and (safe == lam or table[f"{safe:g}"] <= 1.0)
    assert table["1"] > 1.0
    assert lam > 1.0 and table[f"{lam:g}"] < 1.0
    assert table[f"{lam:g}"] <= min(table.values()) + 0.05  # the best, or within its standard error


def test_variant_rhs_is_the_right_hand_side_of_the_variant_rows():
    """A driver builds each variant's G once and only b per scenario: that b is variant_rows' b."""
    from hybrid.constraints.variants import variant_rhs, variant_rows

    cv, layout = _problem("dual", T=3)
    rng = np.random.default_rng(12)
    walls = np.unique(cv.face_cv[cv.boundary_faces, 0])[:4]
    for _ in range(2):
        u0, source = rng.standard_normal(cv.num_cvs), rng.standard_normal((layout.T, cv.num_cvs))
        boundary = dirichlet_rows(layout, walls, rng.standard_normal((layout.T, len(walls))))
        for variant in ("hardc", "global", "per-cell", "per-cell+boundary"):
            rows = variant_rows(variant, cv, layout, u0, source, boundary)
            np.testing.assert_allclose(variant_rhs(variant, cv, layout, u0, source, boundary),
                                       rows.b, rtol=1e-14, atol=1e-14 * np.abs(rows.b).max())


def test_stefan_mass_is_the_integral_of_the_similarity_solution():
    from scipy.integrate import quad
    from scipy.optimize import brentq
    from scipy.special import erf

    from hybrid.constraints.variants import stefan_mass

    for u_star in (0.5, 0.6):
        lam = brentq(lambda z, u_star=u_star: u_star * np.sqrt(np.pi) * z * erf(z) * np.exp(z * z)
                     - (1 - u_star),
                     1e-9, 10)
        for t in (0.01, 0.1):
            front = 2 * lam * np.sqrt(t)
            profile = (lambda x, u_star=u_star, t=t, lam=lam: 1
                       - (1 - u_star) * erf(x / (2 * np.sqrt(t))) / erf(lam))
            assert abs(stefan_mass(u_star, np.array([t]))[0] - quad(profile, 0, front)[0]) < 1e-12


def test_plan_values_are_g_diag_gt_beyond_int32_keys():
    """A₀'s values from the plan's map, on more rows than √(2³¹) (row × rows overflows int32)."""
    from hybrid.constraints.update import UpdatePlan

    rows = 50_000
    G = (sp.eye(rows, rows + 10, format="csr")
         + sp.eye(rows, rows + 10, k=7, format="csr") * 0.5).tocsr()
    var = np.random.default_rng(0).uniform(0.5, 1.5, rows + 10)
    plan = UpdatePlan(G)
    A0 = sp.csr_matrix((plan.values(var, 0.1), plan.pattern.indices, plan.pattern.indptr),
                       shape=plan.pattern.shape)
    expected = (G @ sp.diags(var) @ G.T + 0.01 * sp.identity(rows)).tocsr()
    assert abs(A0 - expected).max() <= 1e-14


def _insulated_problem(T: int = 4, cells: int = 40):
    """A 1-D interval whose every boundary flux is known (as heat-boon-1d's): per-cell rows plus
    the two end faces' fluxes, so the rows pin each output time's total mass."""
    from hybrid.constraints.rows import boundary_flux_rows

    cv = build_control_volumes(generate({"shape": "interval", "cells": cells, "jitter": 0.3},
                                        seed=0), "dual")
    layout = StateLayout(cv.num_cvs, cv.num_faces, T)
    rng = np.random.default_rng(5)
    ends = cv.boundary_faces
    rows = stack_rows([conservation_rows(cv, layout, rng.standard_normal(cv.num_cvs)),
                       boundary_flux_rows(layout, ends, rng.standard_normal((T, len(ends))))])
    return cv, layout, rows


def _state_mse(layout, x, truth, volume):
    n = layout.T * layout.N
    return float((((x[:n] - truth[:n]).reshape(layout.T, layout.N)) ** 2 * volume).sum())


def test_outside_prior_cannot_increase_the_state_error():
    """The prior of scenarios outside the training span: whatever the ensemble's variances and
    errors, the update does not increase the volume-weighted state error (the projection onto
    the rows' mass is orthogonal in that norm), while the ensemble's own variances can: a mass
    defect they place where the error already has the other sign (heat-boon-1d's ω = 4.5)."""
    from hybrid.constraints.selection import outside_prior

    cv, layout, rows = _insulated_problem()
    T, N = layout.T, layout.N
    x = cv.centre[:, 0]
    rng = np.random.default_rng(8)
    # meets the rows
    truth = GaussianUpdate(rows.G, rows.b, 1.0).mean(rng.standard_normal(layout.size))
    worse = 0
    for trial in range(20):
        var = rng.uniform(0.2, 5.0, layout.size) * 1e-3
        error = np.concatenate([rng.standard_normal(T * N) * 0.05 + rng.normal(0, 0.05),
                                rng.standard_normal(layout.size - T * N) * 0.01])
        if trial == 0:   # the adversarial case: excess mass, and a large
                         # negative error where the variance is large
            state = np.where(x > 0.8, -0.5, 0.3)
            error[:T * N] = np.tile(state, T)
            var[:T * N] = np.tile(np.where(x > 0.8, 1e-1, 1e-4), T)
        mu = truth + error
        raw = _state_mse(layout, mu, truth, cv.volume)
        own = _state_mse(
            layout, GaussianUpdate(rows.G, rows.b,
                                   var * np.where(np.arange(layout.size) < T * N, 1, 10)).mean(mu),
            truth, cv.volume)
        diag, U = outside_prior(var, layout, cv.volume)
        assert U is None
        flat = diag[:T * N].reshape(T, N) * cv.volume
        # even over the volume
        np.testing.assert_allclose(flat, flat[:, :1] * np.ones(N), rtol=1e-12)
        np.testing.assert_allclose(flat.sum(1), (var[:T * N].reshape(T, N) * cv.volume).sum(1),
                                   rtol=1e-12)
        # an ensemble covariance (floor + U Uᵀ) keeps its marginal variance's total, not the floor's
        members = rng.standard_normal((layout.size, 3)) * np.sqrt(var)[:, None]
        diag_e, U_e = outside_prior(np.full(layout.size, 1e-12), layout, cv.volume, members)
        assert U_e is None
        np.testing.assert_allclose((diag_e[:T * N].reshape(T, N) * cv.volume).sum(1),
                                   ((1e-12 + (members[:T * N] ** 2).sum(1)).reshape(T, N)
                                    * cv.volume).sum(1), rtol=1e-12)
        out = _state_mse(layout, GaussianUpdate(rows.G, rows.b, diag).mean(mu), truth, cv.volume)
        assert out <= raw * (1 + 1e-6), (trial, out / raw)
        worse += own > raw
        if trial == 0:
            assert own > 1.05 * raw and out < raw   # the ensemble's variances made it
                                                    # worse; the even prior did not
    assert worse >= 1


def test_defect_statistic_measures_the_prior_scale():
    """rᵀ (G Σ Gᵀ)⁻¹ r / rows is 1 on average for states drawn from the prior that meet the rows,
    s when they are drawn from s Σ (an overconfident prior); defect_scale widens by the excess
    over the largest validation statistic, never narrows, and is 1 without validation."""
    from hybrid.constraints.selection import defect_scale

    cv, layout, rows, var, mu = _space_time_problem({"shape": "interval", "cells": 60,
                                                     "jitter": 0.3}, 4, 1e-4)
    rng = np.random.default_rng(11)

    def statistic(s: float) -> float:
        truth = mu + np.sqrt(s * var) * rng.standard_normal(layout.size)
        update = GaussianUpdate(rows.G, rows.G @ truth, var)
        update.mean(mu)
        return update.defect

    calibrated = [statistic(1.0) for _ in range(20)]
    assert abs(np.mean(calibrated) - 1.0) < 0.08
    wide = [statistic(4.0) for _ in range(5)]
    assert 3.2 < np.mean(wide) < 4.8
    assert defect_scale(np.mean(wide), calibrated) > 2.5
    assert defect_scale(0.5 * min(calibrated), calibrated) == 1.0
    assert defect_scale(10.0, []) == 1.0 and defect_scale(None, calibrated) == 1.0


def test_free_flux_limit_is_the_limit_of_inflated_fluxes():
    """The even prior's two-stage update (states on the rows that leave the fluxes free, then the
    fluxes) is the λ → ∞ limit of the joint update with the fluxes' variances × λ: the gap shrinks
    like 1/λ; every row holds; with every boundary flux known the state rows are one mass
    balance per interval, with a free (Dirichlet) end there is none, and a flux column in three
    rows is refused."""
    from hybrid.constraints.freeflux import free_flux_split
    from hybrid.constraints.selection import outside_prior

    cv, layout, rows = _insulated_problem()
    T, N = layout.T, layout.N
    split = free_flux_split(rows.G, T * N)
    assert split.null_vectors == T and split.states.shape[0] == T
    rng = np.random.default_rng(1)
    truth = GaussianUpdate(rows.G, rows.b, 1.0).mean(rng.standard_normal(layout.size))
    var = rng.uniform(0.2, 5, layout.size) * 1e-3
    mu = truth + rng.standard_normal(layout.size) * 0.05
    diag, _ = outside_prior(var, layout, cv.volume)
    first = GaussianUpdate(split.states, split.state_rhs(rows.b), diag).mean(mu)
    limit = GaussianUpdate(split.fluxes, split.flux_rhs(rows.b, first), diag).mean(first)
    assert np.abs(rows.G @ limit - rows.b).max() <= 1e-13 * np.abs(rows.b).max()
    assert _state_mse(layout, limit, truth, cv.volume) <= _state_mse(layout, mu, truth, cv.volume)
    gaps = []
    for lam in (0.1, 10.0):   # outside_prior's fluxes are already × 10³
        inflated = np.where(np.arange(layout.size) < T * N, 1.0, lam) * diag
        gaps.append(np.abs(GaussianUpdate(rows.G, rows.b, inflated).mean(mu) - limit).max())
    assert gaps[1] < 2e-2 * gaps[0]
    # a Dirichlet end instead of a known flux there: its flux is free, no mass balance is left
    ends = cv.boundary_faces
    left = rows.G[:, T * N:].tocsc()[:, ends[0]].nnz
    cells = stack_rows([conservation_rows(cv, layout, np.zeros(N)),
                        dirichlet_rows(layout, np.array([0]), np.zeros((T, 1)))])
    bare = free_flux_split(cells.G, T * N)
    assert left == 2 and bare.null_vectors == 0 and bare.states.shape[0] == T
    three = sp.vstack([rows.G, rows.G[-1:]]).tocsr()
    assert free_flux_split(three, T * N) is None


def test_raw_samples_are_the_prior_samples_at_the_report_time():
    """The raw variant's posterior samples are prior samples at the report time, drawn with only
    the normals up to there: the same numbers as the whole state's draw, for a diagonal and an
    ensemble part alike."""
    from mpi4py import MPI

    from hybrid.constraints import driver
    from hybrid.constraints.rows import StateLayout
    from hybrid.constraints.update import prior_deviation

    layout = StateLayout(30, 70, 4)
    rng = np.random.default_rng(2)
    mean, diag = rng.standard_normal(layout.size), rng.uniform(0.1, 1.0, layout.size)
    final = layout.u(layout.T)
    for U in (None, rng.standard_normal((layout.size, 3))):
        _, _, post, _, _ = driver._constrain("raw", None, mean, diag, diag, U, 0.0, None,
                                             MPI.COMM_SELF, 11, layout, 6, {})
        whole = np.stack([prior_deviation(11, k, np.sqrt(diag), U, np.arange(layout.size))
                          for k in range(6)])
        np.testing.assert_array_equal(post, mean[final] + whole[:, final])
