"""The Navier–Stokes reference solver (hybrid/solvers/navier_stokes.py: Scott–Vogelius by
default, Taylor–Hood) and the cavity case: steady centreline velocities at Re = 100 against
Ghia, Ghia & Shin (1982), zero net volume flux through every control volume, the walls' data
and incompressibility in time, the flow constraint rows, and ``hybrid run`` on a small cavity."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from scipy.interpolate import LinearNDInterpolator

from paraview_check import HAVE_PARAVIEW, assert_drawn, open_in_paraview
from helpers import CASES, run_cli, small_case
from hybrid.mesh.shapes import generate
from hybrid.solvers.navier_stokes import NavierStokesSolver, Wall

# Ghia, Ghia & Shin, J. Comput. Phys. 48 (1982) 387-411, Re = 100: u on the vertical
# centreline x = 0.5 (their Table I) and v on the horizontal centreline y = 0.5 (Table II)
GHIA_Y = [0.9766, 0.9688, 0.9609, 0.9531, 0.8516, 0.7344, 0.6172, 0.5, 0.4531, 0.2813, 0.1719,
          0.1016, 0.0703, 0.0625, 0.0547]
GHIA_U = [0.84123, 0.78871, 0.73722, 0.68717, 0.23151, 0.00332, -0.13641, -0.20581, -0.21090,
          -0.15662, -0.10150, -0.06434, -0.04775, -0.04192, -0.03717]
GHIA_X = [0.9688, 0.9609, 0.9531, 0.9453, 0.9063, 0.8594, 0.8047, 0.5, 0.2344, 0.2266, 0.1563,
          0.0938, 0.0781, 0.0703, 0.0625]
GHIA_V = [-0.05906, -0.07391, -0.08864, -0.10313, -0.16914, -0.22445, -0.24533, 0.05454, 0.17527,
          0.17507, 0.16077, 0.12317, 0.10890, 0.10091, 0.09233]


def const(value):
    return lambda points, t=0.0, params=None: np.full(len(points), float(value))


def cavity(h: float, lid: float = 1.0, nu: float = 0.01, element: str = "scott-vogelius"):
    mesh = generate({"shape": "rectangle", "h": h}, seed=0)
    walls = [Wall("top", (const(lid), const(0)))] + [Wall(n, (const(0), const(0)))
                                                     for n in ("left", "right", "bottom")]
    return mesh, NavierStokesSolver(mesh, nu, walls, {}, element=element)


@pytest.mark.parametrize("element", ["scott-vogelius", "taylor-hood"])
def test_steady_cavity_matches_ghia_at_re_100(element):
    mesh, solver = cavity(0.04, element=element)
    u, p, w = solver.steady()
    at = lambda k: LinearNDInterpolator(mesh.points[:, :2], u[:, k])
    du = at(0)(np.c_[np.full(len(GHIA_Y), 0.5), GHIA_Y]) - GHIA_U
    dv = at(1)(np.c_[GHIA_X, np.full(len(GHIA_X), 0.5)]) - GHIA_V
    # within 2% of the lid speed at every tabulated point (measured: about 1%)
    assert np.abs(du).max() < 0.02 and np.abs(dv).max() < 0.02
    # the primary vortex turns clockwise: negative vorticity in the core
    core = np.argmin(np.hypot(mesh.points[:, 0] - 0.62, mesh.points[:, 1] - 0.74))
    assert w[core] < 0
    assert np.abs(solver.weak_divergence()).max() < 1e-10


def test_scott_vogelius_fluxes_balance_every_control_volume():
    """The Scott–Vogelius velocity is divergence-free pointwise: the exact volume fluxes of
    the case mesh's dual faces sum to zero around every control volume, while the estimate
    from the vertex velocities alone does not."""
    from hybrid.constraints.flow import flow_size, vertex_divergence_rows
    from hybrid.mesh.control_volumes import build_control_volumes

    mesh, solver = cavity(0.05)
    cv = build_control_volumes(mesh, "dual")
    u = solver.steady()[0][cv.entity_of_cv]
    flux = solver.dual_face_fluxes(cv, 0.0)
    scale = np.abs(u).max() * cv.face_area.max()
    assert np.abs(cv.incidence() @ flux).max() <= 1e-12 * scale
    assert np.abs(flux[cv.face_cv[:, 1] >= 0]).max() > 1e-3 * scale       # real, non-zero fluxes
    vertex = np.zeros(flow_size(cv))
    vertex[:2 * cv.num_cvs] = np.concatenate([u[:, 0], u[:, 1]])
    # the vertex estimate: O(h²) off
    assert np.abs(vertex_divergence_rows(cv).G @ vertex).max() > 1e-2 * scale
    with pytest.raises(ValueError, match="Scott"):
        cavity(0.25, element="taylor-hood")[1].dual_face_fluxes(cv, 0.0)


def test_transient_cavity_walls_incompressibility_and_approach_to_steady():
    mesh, solver = cavity(0.1, lid=1.0)
    flow = solver.run(1.0, 0.05, 5)
    top = mesh.points[:, 1] > 1 - 1e-12
    corners = top & ((mesh.points[:, 0] < 1e-12) | (mesh.points[:, 0] > 1 - 1e-12))
    lid = top & ~corners
    walls = ((mesh.points[:, 1] < 1e-12) | (mesh.points[:, 0] < 1e-12)
             | (mesh.points[:, 0] > 1 - 1e-12))
    for n in range(1, 6):
        assert np.allclose(flow.u[n][lid], [1.0, 0.0], atol=1e-14)
        assert np.abs(flow.u[n][walls]).max() < 1e-14        # no-slip, the corners included
    assert np.abs(solver.weak_divergence()).max() < 1e-10
    assert np.all(flow.u[0] == 0)
    _, steady = cavity(0.1, lid=1.0)
    u_steady = steady.steady()[0]
    gap = [np.abs(flow.u[n] - u_steady).max() for n in range(1, 6)]
    assert gap[-1] < gap[0] and gap[-1] < 0.2


def test_cavity_case_runs_end_to_end_with_exact_walls_and_incompressibility(tmp_path):
    """``mpirun -n 2 hybrid run`` on a small cavity: solve, a vector-output ensemble and a BOON
    one, every flow variant, the report and ParaView series. Checked from the files, not from
    the scores alone: the per-cell variants' face fluxes leave no control volume with a net
    volume flux, the per-cell+boundary and BOON velocities meet the walls exactly, and t = 0
    is the given state."""
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.stages.solve import read_dataset

    case = small_case(CASES / "cavity-2d", tmp_path, train=4, test=2,
                      mesh={"generate": '{ shape = "rectangle", h = 0.125 }'},
                      time={"t_end": "0.2", "dt": "0.05", "outputs": "4"},
                      surrogate={"members": "2", "epochs": "3", "grid": "16", "modes": "4",
                                 "width": "8"})
    done = run_cli(["run", str(case), "--quiet"], ranks=2, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    data = read_dataset(case / "results/solve/dataset.h5")
    u = data["test"]["u"]
    S, T1, N, d = u.shape
    assert (T1, d) == (5, 2) and data["test"]["vorticity"].shape == u.shape[:-1]
    cv = build_control_volumes(data["mesh"], "dual")
    scale = np.abs(u).max() * cv.face_area.max()
    assert np.abs(data["test"]["net_volume_flux"]).max() <= 1e-12 * scale
    D = cv.incidence()
    x, y = cv.centre[:, 0], cv.centre[:, 1]
    # the side walls own the lid's corners
    on_lid = np.isclose(y, 1.0) & (x > 1e-12) & (x < 1 - 1e-12)
    lid = list(np.flatnonzero(on_lid))
    walls = list(np.flatnonzero(~on_lid & (np.isclose(cv.centre, 0.0)
                                           | np.isclose(cv.centre, 1.0)).any(axis=1)))
    U = data["test"]["params"][:, data["test"]["parameter_names"].index("U")]
    with h5py.File(case / "results/predict/variants.h5") as f:
        assert sorted(f) == sorted(["raw", "hardc", "boon", "global", "per-cell",
                                    "per-cell+boundary"])
        flat0 = np.swapaxes(u[:, 0], 1, 2).reshape(S, d * N)
        for v in f:
            assert (f[v]["u_mean"].shape == (S, T1, d * N)
                    and f[v]["flux_mean"].shape == (S, T1 - 1, cv.num_faces))
            assert np.array_equal(f[v]["u_mean"][:, 0], flat0)
        div = lambda v: np.abs(np.einsum("kf,stf->stk", D.toarray(),
                                         f[v]["flux_mean"][()])).max() / scale
        assert div("raw") > 1e-8                      # the network alone is not incompressible
        assert (div("per-cell") <= 1e-10 and div("per-cell+boundary") <= 1e-10
                and div("hardc") <= 1e-10)
        for v in ("per-cell+boundary", "boon"):     # the constraint engine,
                                                    # and BOON by construction
            vel = f[v]["u_mean"][:, 1:]
            assert np.abs(vel[..., lid] - U[:, None, None]).max() <= 1e-12        # the lid's speed
            assert np.abs(vel[..., [N + k for k in lid]]).max() <= 1e-12
            # no-slip, corners included
            assert np.abs(vel[..., walls + [N + k for k in walls]]).max() <= 1e-12
        assert np.abs(f["raw"]["u_mean"][:, 1:][..., walls]).max() > 1e-6
    metrics = json.loads((case / "results/predict/metrics.json").read_text())["variants"]
    assert (metrics["per-cell+boundary"]["wall_error"] <= 1e-12
            and metrics["boon"]["wall_error"] <= 1e-12)
    assert metrics["per-cell+boundary"]["boundary_flux_error"] <= 1e-12
    assert metrics["per-cell"]["max_divergence"] <= 1e-10 < metrics["raw"]["max_divergence"]
    text = (case / "results/export/test-000.xdmf").read_text()
    for name in ("velocity", "per_cell_boundary_velocity", "raw_velocity_std"):
        assert f'Name="{name}" AttributeType="Vector"' in text
    assert 'Name="per_cell_boundary_net_volume_flux"' in text and 'Name="raw_vorticity"' in text
    for png in ("vorticity_step1", "vorticity_final", "centreline", "error", "divergence"):
        assert (case / f"results/validate/{png}.png").stat().st_size > 10_000, png
    report = (case / "results/validate/report.md").read_text()
    assert "| per-cell+boundary |" in report and "divergence" in report
    if not HAVE_PARAVIEW:   # ./test.sh installs it on Debian
        return
    # ParaView's own reader: every array of both series, with its tuple count, at t = 0 and t_end
    from hybrid.export.xdmf import read_time_series

    files = [case / f"results/export/test-{i:03d}.xdmf" for i in range(2)]
    report = open_in_paraview(files, "per_cell_boundary_velocity", tmp_path)
    for path in files:
        seen, written = report[str(path)], read_time_series(path)
        np.testing.assert_allclose(seen["times"], data["times"], rtol=0, atol=1e-15)
        for k in (0, len(data["times"]) - 1):
            assert seen["size"][k] == (len(data["mesh"].points), len(data["mesh"].cells))
            arrays = {name: value for (step, where, name), value in seen["arrays"].items()
                      if step == k}
            assert set(arrays) == set(written["point"]) | set(written["cell"])
            for name, value in {**written["point"], **written["cell"]}.items():
                tuples, total = arrays[name]
                assert tuples == value[k].shape[0], name
                assert (abs(total - value[k].sum())
                        <= 1e-9 * max(np.abs(value[k]).sum(), 1e-300)), name
        assert_drawn(seen["png"])


def test_cavity_refuses_the_scalar_only_softc(tmp_path):
    case = small_case(CASES / "cavity-2d", tmp_path, train=2, test=1,
                      mesh={"generate": '{ shape = "rectangle", h = 0.25 }'},
                      time={"t_end": "0.1", "dt": "0.05", "outputs": "2"},
                      constraints={"compare": '["raw", "softc"]'})
    done = run_cli(["train", str(case)])
    assert done.returncode == 2 and "scalar-only" in done.stderr


def test_vertex_vorticity_is_exact_for_linear_velocities():
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.problems.flow import vertex_vorticity

    mesh = generate({"shape": "rectangle", "h": 0.2}, seed=0)
    cv = build_control_volumes(mesh, "dual")
    x, y = cv.centre[:, 0], cv.centre[:, 1]
    # ω = 2 + 3, 5 - 1
    vel = np.stack([np.concatenate([x - 3 * y, 2 * x - y]), np.concatenate([y, 5 * x])])
    omega = vertex_vorticity(mesh.points, mesh.cells, cv.cv_of_entity, vel)
    np.testing.assert_allclose(omega,
                               np.stack([np.full(cv.num_cvs, 5.0), np.full(cv.num_cvs, 4.0)]),
                               atol=1e-11)


def test_flow_rows_hold_for_the_reference_and_after_an_update():
    """hybrid/constraints/flow.py: the Scott–Vogelius cavity meets every row (zero net volume
    flux per control volume, wall velocities, boundary fluxes); a perturbed copy does not,
    and after the Gaussian update it does — the dropped divergence row included — with the
    flux error reduced (the truth lies in the constraint set)."""
    from hybrid.constraints.flow import flow_rows, flow_size, flux_divergence_rows
    from hybrid.constraints.update import GaussianUpdate
    from hybrid.mesh.control_volumes import build_control_volumes

    mesh, solver = cavity(0.1)
    cv = build_control_volumes(mesh, "dual")
    u = solver.steady()[0][cv.entity_of_cv]
    flux = solver.dual_face_fluxes(cv, 0.0)
    N, n = cv.num_cvs, flow_size(cv)
    truth = np.concatenate([u[:, 0], u[:, 1], flux])
    walls = []
    for name, value in (("top", (1.0, 0.0)), ("left", (0.0, 0.0)), ("right", (0.0, 0.0)),
                        ("bottom", (0.0, 0.0))):
        count = len(np.unique(cv.face_cv[cv.faces_of(name), 0]))
        walls.append((name, np.tile(value, (count, 1))))
    rows = flow_rows(cv, walls, flux)
    scale = np.abs(u).max() * cv.face_area.max()
    assert np.abs(rows.G @ truth - rows.b).max() <= 1e-12 * scale
    div = flux_divergence_rows(cv)
    rng = np.random.default_rng(1)
    predicted = truth + np.concatenate([0.05 * rng.standard_normal(2 * N),
                                        0.05 * scale * rng.standard_normal(n - 2 * N)])
    assert np.abs(div.G @ predicted).max() > 1e-2 * scale
    mean = GaussianUpdate(rows.G, rows.b, np.ones(n)).mean(predicted)
    assert np.abs(div.G @ mean).max() <= 1e-10 * scale   # every control volume, the dropped row too
    wall = rows.kind == "dirichlet"
    assert np.abs(rows.G[wall] @ mean - rows.b[wall]).max() < 1e-14
    faces = slice(2 * N, n)
    assert (np.linalg.norm(mean[faces] - truth[faces])
            < np.linalg.norm(predicted[faces] - truth[faces]))
    # the lid's corners belong to the side walls (listed after the lid): no-slip there
    top_corners = [k for k in range(N)
                   if cv.centre[k, 1] > 1 - 1e-12 and cv.centre[k, 0] in (0.0, 1.0)]
    assert len(top_corners) == 2
    assert (np.abs(mean[top_corners]).max() < 1e-14
            and np.abs(mean[[N + k for k in top_corners]]).max() < 1e-14)


@pytest.mark.parametrize("variant", ["per-cell", "per-cell+boundary", "global"])
def test_one_update_over_all_times_equals_one_update_per_time(variant):
    """The one variant driver updates a navier-stokes scenario's every output time at once
    (hybrid/constraints/problems.py: block-diagonal rows, member deviations split by time).
    That must equal the update of each time on its own, the cavity's previous driver: means to
    1e-10 and exact variances to 1e-8 (relative; a wall value's variance, 0, to 1e-12 of the
    prior's), on random ensemble priors (the rows' b from a scenario's walls)."""
    from hybrid.case import load_case
    from hybrid.constraints.flow import flow_rows, flux_divergence_rows
    from hybrid.constraints.problems import FlowRows, time_blocks
    from hybrid.constraints.rows import ConstraintRows
    from hybrid.constraints.update import GaussianUpdate
    from hybrid.constraints.variants import prediction_covariance
    from hybrid.mesh.control_volumes import build_control_volumes
    import scipy.sparse as sp

    case = load_case(CASES / "cavity-2d" / "case.toml")
    mesh = generate({"shape": "rectangle", "h": 0.25}, seed=0)
    cv = build_control_volumes(mesh, "dual")
    times = np.array([0.0, 0.1, 0.3, 0.4])
    problem = FlowRows(case, cv, times)
    L = problem.layout
    split = {"parameter_names": ["U"], "params": np.array([[1.1]]), "u": np.zeros((1, 4, L.N))}
    data = problem.scenario(split, 0)
    rows = problem.rows(variant, data, {})
    rng = np.random.default_rng(3)
    M = 3
    mean, var = rng.standard_normal(L.size), rng.uniform(0.5, 2.0, L.size)
    dev = rng.standard_normal((M, L.size))
    diag, U = prediction_covariance(var, dev, "ensemble+diagonal")
    joint = GaussianUpdate(rows.G, rows.b, diag, time_blocks(U, L), 0.0)
    m, v = joint.mean(mean), joint.variance(exact=True)
    walls_t, bflux = data.boundary
    for n in range(1, L.T + 1):
        idx = np.r_[np.arange(L.u(n).start, L.u(n).stop),
                    np.arange(L.flux(n).start, L.flux(n).stop)]
        if variant == "per-cell":
            one = flux_divergence_rows(cv)
        elif variant == "global":
            div = flux_divergence_rows(cv)
            one = ConstraintRows(sp.csr_matrix(div.G.sum(axis=0)), np.zeros(1))
        else:
            one = flow_rows(cv, walls_t[n - 1], bflux[n - 1])
        alone = GaussianUpdate(one.G, one.b, diag[idx], U[idx], 0.0)
        np.testing.assert_allclose(m[idx], alone.mean(mean[idx]), rtol=0,
                                   atol=1e-10 * np.abs(mean).max())
        np.testing.assert_allclose(v[idx], alone.variance(exact=True), rtol=1e-8,
                                   atol=1e-12 * diag.max())
    # the rows are the scenario's: every wall velocity and boundary flux of each time is its data
    if variant == "per-cell+boundary":
        x = m.copy()
        assert np.abs(rows.G @ x - rows.b).max() <= 1e-12 * max(1.0, np.abs(x).max())
        assert {"divergence", "dirichlet", "boundary-flux"} == set(rows.kind)
        assert np.isclose(np.abs(rows.b[rows.kind == "dirichlet"]).max(), 1.1)
