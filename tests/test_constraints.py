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
    G = sp.random(rows, n, density=0.3, random_state=2, format="csr") + sp.eye(rows, n, format="csr")
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
    assert not np.isin(cols, [layout.flux(n).start + interior for n in range(1, layout.T + 1)]).any()


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

    from hybrid.stages.constrain import requested_variants

    case = SimpleNamespace(constraints={"conservation": "per-cell", "boundary": "exact", "compare": ["hardc"]})
    assert requested_variants(case) == ["raw", "hardc", "per-cell+boundary"]
    case.constraints = {"conservation": "global", "boundary": "none", "compare": ["raw", "per-cell", "softc"]}
    assert requested_variants(case) == ["raw", "global", "per-cell"]       # no SoftC ensemble was trained
    assert requested_variants(case, {"softc": {}}) == ["raw", "softc", "global", "per-cell"]


def test_predict_writes_exact_per_cell_variant(tmp_path):
    """The per-cell variant of a real (tiny) prediction balances every control volume."""
    import json
    from pathlib import Path

    import h5py

    from helpers import run_cli, small_case

    root = Path(__file__).resolve().parents[1]
    case = small_case(root / "cases" / "stefan-1d", tmp_path, train=6, test=2,
                      surrogate={"members": "2", "epochs": "3", "grid": "32", "modes": "8", "width": "8",
                                 "layers": "2", "batch": "4"},
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
    assert np.abs(rows_r.G @ x - rows_r.b).max() < 1e-12 and np.abs(rows_t.G @ x - rows_t.b).max() < 1e-12
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
