"""The distributed constraint engine: at 2 ranks (PETSc over the control volumes' partition,
CG + GAMG) it reproduces the serial update on every shipped case's mesh, exactly enough:
every row kind to 1e-10 of its scale, Dirichlet values to 1e-12, 1- and 2-rank results to
1e-8, posterior samples included; and ``hybrid predict`` gives the same variants at 1 and
2 ranks."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import CASES, SCALAR_CASES, run_cli, small_case
from hybrid.constraints.rows import StateLayout
from hybrid.constraints.update import GaussianUpdate
from hybrid.constraints.variants import boundary_rows, variant_rows


def _relative_row_residual(rows, x):
    G = rows.G.tocsr()
    scale = np.abs(G).max(axis=1).toarray().ravel() * np.abs(x).max() + np.abs(rows.b)
    rel = np.abs(G @ x - rows.b) / scale
    return {kind: rel[rows.kind == kind].max() for kind in np.unique(rows.kind)}


@pytest.mark.parallel(nprocs=2)
@pytest.mark.parametrize("name", SCALAR_CASES)
def test_distributed_update_matches_serial_on_every_case(name, comm):
    from hybrid.case import load_case
    from hybrid.constraints.distributed import DistributedUpdate, entry_owners
    from hybrid.mesh.distribute import partition_owners
    from hybrid.stages.solve import case_control_volumes, case_mesh

    case = load_case(CASES / name)
    mesh = case_mesh(case, comm)
    cv = case_control_volumes(case, mesh)
    cv.assign_owners(*partition_owners(mesh, comm))
    assert set(np.unique(cv.cv_owner)) == {0, 1}      # really split over both ranks
    T = 3
    times = np.linspace(0.0, case.time["t_end"], case.time["outputs"] + 1)[:T + 1]
    layout = StateLayout(cv.num_cvs, cv.num_faces, T)
    rng = np.random.default_rng(42)             # the same numbers on every rank
    params = case.scenarios("test")[0]
    boundary = boundary_rows(case, cv, layout, times, params)
    rows = variant_rows("per-cell+boundary", cv, layout, rng.uniform(0, 1, cv.num_cvs), None,
                        boundary)
    mu = rng.standard_normal(layout.size)
    var = rng.uniform(0.2, 2.0, layout.size)
    U = rng.standard_normal((layout.size, 4)) / np.sqrt(3)

    serial = GaussianUpdate(rows.G, rows.b, var, U)
    expected = serial.mean(mu)
    expected_samples = serial.sample(serial.prior_samples(mu, 2, seed=3), seed=3)
    update = DistributedUpdate(rows.G, rows.b, var, U, 0.0, entry_owners(cv, T), comm)
    assert 0 < len(update.entries) < layout.size  # each rank holds part of the state
    mean = update.gather(update.mean(mu[update.entries]))
    samples = update.gather(update.sample(update.prior_samples(mu[update.entries], 2, seed=3),
                                          seed=3))
    if comm.rank == 0:
        scale = np.abs(expected).max()
        assert np.abs(mean - expected).max() <= 1e-8 * scale
        # the same defect statistic
        assert abs(update.defect - serial.defect) <= 1e-8 * serial.defect
        assert np.abs(samples - expected_samples).max() <= 1e-8 * np.abs(expected_samples).max()
        for result in (mean, expected, *samples):
            for kind, residual in _relative_row_residual(rows, result).items():
                assert residual <= 1e-10, (kind, residual)
        dirichlet = rows.kind == "dirichlet"
        if dirichlet.any():
            assert np.abs(rows.G[dirichlet] @ mean - rows.b[dirichlet]).max() <= 1e-12
    update.destroy()


@pytest.mark.parallel(nprocs=2)
def test_a_factorisation_over_the_memory_budget_falls_back_to_cg(comm, monkeypatch):
    """The distributed update factors A₀ with MUMPS under a working-memory limit; where the
    factorisation would exceed it, MUMPS refuses and the update runs CG + GAMG instead, with
    the same mean (1e-8) and the rows still exact. Variance-only samples may stop CG early
    (``rtol``); the default meets the rows."""
    import hybrid.constraints.distributed as distributed
    import hybrid.constraints.update as update_module
    from hybrid.constraints.rows import conservation_rows, dirichlet_rows, stack_rows
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.distribute import partition_owners
    from hybrid.mesh.shapes import generate

    mesh = generate({"shape": "rectangle", "h": 0.03}, seed=0)
    cv = build_control_volumes(mesh, "dual")
    cv.assign_owners(*partition_owners(mesh, comm))
    layout = StateLayout(cv.num_cvs, cv.num_faces, 3)
    rng = np.random.default_rng(5)
    walls = np.unique(cv.face_cv[cv.boundary_faces, 0])[:10]
    rows = stack_rows([conservation_rows(cv, layout, rng.standard_normal(cv.num_cvs)),
                       dirichlet_rows(layout, walls, rng.standard_normal((3, len(walls))))])
    var, mu = rng.uniform(0.5, 1.5, layout.size), rng.standard_normal(layout.size)
    owner = distributed.entry_owners(cv, 3)
    results = {}
    for budget in (None, 1):   # MB per rank: 1 is far below this factorisation's need
        if budget is not None:
            monkeypatch.setattr(update_module, "memory_budget_mb", lambda comm=None, mb=budget: mb)
        update = distributed.DistributedUpdate(rows.G, rows.b, var, None, 0.0, owner, comm)
        mean = update.gather(update.mean(mu[update.entries]))
        x = update.prior_samples(mu[update.entries], 1, seed=2)
        loose = update.gather(update.sample(x, seed=2, rtol=1e-3))
        results[update.method] = mean, update.gather(update.sample(x, seed=2)), loose
        update.destroy()
    assert set(results) == {"cholesky", "cg-amg"}
    if comm.rank == 0:
        (m1, s1, _), (m2, s2, loose) = results["cholesky"], results["cg-amg"]
        assert np.abs(m1 - m2).max() <= 1e-8 * np.abs(m1).max()
        for x in (m1, m2, s1[0], s2[0]):
            assert np.abs(rows.G @ x - rows.b).max() <= 1e-10 * np.abs(rows.b).max()
        # the tolerance was honoured
        assert np.abs(rows.G @ loose[0] - rows.b).max() > 1e-8 * np.abs(rows.b).max()


def _predict(case, ranks):
    proc = run_cli(["predict", str(case), "--quiet"], ranks=ranks, timeout=600)
    assert proc.returncode == 0, proc.stderr
    import json

    import h5py
    metrics = json.loads((case / "results/predict/metrics.json").read_text())
    with h5py.File(case / "results/predict/variants.h5", "r") as f:
        groups = [k for k in f if isinstance(f[k], h5py.Group)]
        return ({k: f[f"{k}/u_mean"][()] for k in groups},
                {k: f[f"{k}/u_samples"][()] for k in groups}, metrics,
                {k: f[f"{k}/u_var"][()] for k in groups})


@pytest.mark.parametrize("name", ["heat-2d", "cavity-2d"])
def test_predict_variants_agree_at_one_and_two_ranks(tmp_path, name):
    """The real command: a tiny heat-2d pipeline (dual, Dirichlet walls) and a tiny cavity (the
    same driver, each time's rows on their own) at 1 rank and at 2 ranks with every update,
    the validation scenarios' too, distributed over the partition. heat-2d takes the case-level
    prior shape (2 validation scenarios): one factorisation serially and one distributed
    (DistributedShapePlan), the same means and variances (the serial variance is probed, the
    distributed one sampled: their totals per time within 5%)."""
    edits = dict(train=4, test=2,
                 surrogate={"members": "2", "epochs": "2", "grid": "16", "modes": "4", "width": "8",
                            "layers": "2", "batch": "2", "validation": "0.5"},
                 time={"t_end": "0.05", "outputs": "3"},
                 constraints={"compare": '["hardc", "global", "per-cell"]',
                              "prior_shape": '"case"'})
    if name == "cavity-2d":
        edits.update(mesh={"generate": '{ shape = "rectangle", h = 0.125 }'},
                     time={"t_end": "0.15", "dt": "0.05", "outputs": "3"})
    one = small_case(CASES / name, tmp_path / "one", **edits)
    # the PETSc update, not scenarios
    edits["constraints"] = {**edits["constraints"], "parallel": '"partition"'}
    two = small_case(CASES / name, tmp_path / "two", **edits)
    mean1, samples1, metrics1, var1 = _predict(one, 1)
    mean2, samples2, metrics2, var2 = _predict(two, 2)
    # the validation's choice of λ (distributed at 2 ranks, as the test updates): the same table
    assert metrics1["flux_inflation"] == metrics2["flux_inflation"]
    table1, table2 = metrics1["validation_mse_ratio"], metrics2["validation_mse_ratio"]
    assert set(table1) == set(table2) and all(abs(table1[k] - table2[k]) <= 1e-8 * abs(table1[k])
                                              for k in table1)
    chosen = {m["prior_shape"]["chosen"] for m in (metrics1, metrics2)}
    if name == "heat-2d":   # at 2 ranks each variant's scenarios share one distributed plan
        assert all(metrics2["variants"][v]["plan_seconds"] > 0
                   for v in ("global", "per-cell", "per-cell+boundary"))
    # the cavity's covariance is the ensemble's: no case shape
    assert chosen == {"case" if name == "heat-2d" else "scenario"}
    assert set(mean1) == set(mean2) == {"raw", "hardc", "global", "per-cell", "per-cell+boundary"}
    for variant in mean1:
        scale = np.abs(mean1[variant]).max()
        assert np.abs(mean1[variant] - mean2[variant]).max() <= 1e-8 * scale, variant
        # the states' total variance at each time (the serial probes and the distributed samples
        # estimate the same diagonal)
        total1, total2 = var1[variant][:, 1:].sum(axis=-1), var2[variant][:, 1:].sum(axis=-1)
        assert np.all(np.abs(total2 / total1 - 1) <= 0.05), variant   # measured: within 2%
        assert samples1[variant].shape == samples2[variant].shape
        if samples1[variant].size:   # posterior samples are kept where the case has a front
            assert (np.abs(samples1[variant] - samples2[variant]).max()
                    <= 1e-8 * np.abs(samples1[variant]).max())


@pytest.mark.parallel(nprocs=2)
def test_distributed_update_reports_inconsistent_rows(comm):
    import scipy.sparse as sp

    from hybrid.constraints.distributed import DistributedUpdate
    from hybrid.constraints.update import ConstraintError

    n = 8
    G = sp.csr_matrix(np.array([[1.0] * 4 + [0.0] * 4, [1.0] * 4 + [0.0] * 4,
                                [0.0] * 4 + [1.0] * 4]))
    owner = np.repeat([0, 1], 4)
    # redundant but consistent
    ok = DistributedUpdate(G, np.array([1.0, 1.0, 2.0]), 1.0, None, 0.0, owner, comm)
    mean = ok.gather(ok.mean(np.zeros(n)[ok.entries]))
    if comm.rank == 0:
        np.testing.assert_allclose(G @ mean, [1.0, 1.0, 2.0], atol=1e-10)
    with pytest.raises(ConstraintError, match="inconsistent"):
        bad = DistributedUpdate(G, np.array([1.0, 3.0, 2.0]), 1.0, None, 0.0, owner, comm)
        bad.mean(np.zeros(n)[bad.entries])


@pytest.mark.parallel(nprocs=2)
def test_scenarios_on_a_case_shape_share_one_distributed_factorisation(comm):
    """Under parallel = partition, test scenarios whose priors are multiples s · diag(shape) of
    the case's shape are updated on one MUMPS factorisation (DistributedShapePlan), their
    variance and samples scaled from the shape's, drawn once: the same mean, defect, variance
    and samples (1e-8) as each scenario's own distributed update, and the rows exact."""
    from hybrid.constraints import driver
    from hybrid.constraints.distributed import entry_owners
    from hybrid.constraints.rows import (ConstraintRows, conservation_rows, dirichlet_rows,
                                         stack_rows)
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.distribute import partition_owners
    from hybrid.mesh.shapes import generate

    mesh = generate({"shape": "rectangle", "h": 0.05}, seed=0)
    cv = build_control_volumes(mesh, "dual")
    cv.assign_owners(*partition_owners(mesh, comm))
    T = 3
    layout = StateLayout(cv.num_cvs, cv.num_faces, T)
    owner = entry_owners(cv, T)
    rng = np.random.default_rng(9)
    walls = np.unique(cv.face_cv[cv.boundary_faces, 0])[:8]
    rows = stack_rows([conservation_rows(cv, layout, rng.standard_normal(cv.num_cvs)),
                       dirichlet_rows(layout, walls, rng.standard_normal((T, len(walls))))])
    shape = rng.uniform(0.5, 1.5, layout.size)
    plans, results = {}, []
    for scale in (0.3, 2.5):   # two scenarios: their own b, their own scale of the shape
        b = rows.b + rng.standard_normal(len(rows.b))
        scenario = ConstraintRows(rows.G, b, rows.kind)
        mean = rng.standard_normal(layout.size)
        # the shape's samples are seeded by the case's seed (7 here, as the scenario's own)
        shared = driver._constrain("main", scenario, mean, scale * shape, scale * shape, None,
                                   0.0, owner, comm, 7, layout, 5, plans, shape, 7)
        own = driver._constrain("main", scenario, mean, scale * shape, scale * shape, None, 0.0,
                                owner, comm, 7, layout, 5, {}, None)
        results.append((shared, own, b))
    assert list(plans) == ["main"]        # one plan, kept for the second scenario
    first, second = (r[0][3] for r in results)
    assert first["plan"] > 0 and second["plan"] == 0.0   # the shape's work is done once
    for (m, v, post, _, defect), (m0, v0, post0, _, defect0), b in results:
        assert abs(defect - defect0) <= 1e-8 * defect0
        if comm.rank == 0:
            assert np.abs(m - m0).max() <= 1e-8 * np.abs(m0).max()
            assert np.abs(v - v0).max() <= 1e-8 * np.abs(v0).max()
            assert post.shape == post0.shape == (5, cv.num_cvs)
            assert np.abs(post - post0).max() <= 1e-8 * np.abs(post0).max()
            assert np.abs(rows.G @ m - b).max() <= 1e-10 * np.abs(b).max()
    kept = plans["main"]
    # variances that are no multiple of the shape: the scenario's own factorisation, the plan kept
    own_var = shape * rng.uniform(0.5, 2.0, layout.size)
    phases = driver._constrain("main", scenario, mean, own_var, own_var, None, 0.0, owner, comm,
                               7, layout, 5, plans, shape, 7)[3]
    assert phases["plan"] == 0.0 and plans["main"] is kept
    # other rows (no Dirichlet rows): the plan is rebuilt on them
    other = conservation_rows(cv, layout, rng.standard_normal(cv.num_cvs))
    m, *_, phases, _ = driver._constrain("main", other, mean, shape, shape, None, 0.0, owner, comm,
                                         7, layout, 5, plans, shape, 7)
    assert phases["plan"] > 0 and plans["main"] is not kept
    if comm.rank == 0:
        assert np.abs(other.G @ m - other.b).max() <= 1e-10 * np.abs(other.b).max()
    for plan in plans.values():
        plan.destroy()
