"""One scenario over the ranks (hybrid/solvers/partition.py, ``[solver] parallel``): at 2 ranks
the partitioned Newton–Krylov solve reproduces the serial LU solve to the Newton tolerance in
the mesh's original numbering, every control volume's balance closes to round-off (faces
between the ranks included), every rank holds the same trajectory, and ``hybrid solve`` with
``parallel = "partition"`` writes the dataset a serial solve writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from helpers import CASES, run_cli, small_case


class _Constant:
    is_constant = True

    def __init__(self, value: float):
        self.value = value

    def __call__(self, points, t=0.0, params=None):
        return np.full(len(points), self.value)

    def constant_value(self, params=None):
        return self.value


def _assert_the_serial_trajectory(cv, serial, traj):
    """The partitioned trajectory is the serial one to 1e-9 (states and fluxes), and every
    control volume's balance closes to round-off."""
    scale = np.abs(serial.u).max()
    assert np.abs(traj.u - serial.u).max() <= 1e-9 * scale
    assert np.abs(traj.flux - serial.flux).max() <= 1e-9 * np.abs(serial.flux).max()
    balance = (np.abs(cv.balance_residual(traj.u, traj.flux, traj.source)).max()
               / (scale * cv.volume.max()))
    assert balance <= 1e-12


@pytest.mark.parallel(nprocs=2)
@pytest.mark.parametrize("problem", ["porous-medium", "burgers", "stefan"])
def test_partitioned_solve_matches_the_serial_solve(problem, comm):
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.distribute import partition_owners
    from hybrid.mesh.shapes import generate
    from hybrid.solvers.gpme import BoundaryData, Conductivity, GPMESolver
    from hybrid.solvers.partition import PartitionGPMESolver

    mesh = generate({"shape": "rectangle", "h": 0.05}, seed=0)
    cv = build_control_volumes(mesh, "dual")
    cv.assign_owners(*partition_owners(mesh, comm))
    assert set(np.unique(cv.cv_owner)) == {0, 1}          # really split over both ranks
    bcs = [BoundaryData("left", "dirichlet", _Constant(1.0)),
           BoundaryData("right", "flux", _Constant(0.0)),
           BoundaryData("top", "normal_derivative", _Constant(0.0)),
           BoundaryData("bottom", "flux", _Constant(0.0))]
    k, conv, u0 = {"porous-medium": (Conductivity("power", m=2.0), None, 0.01),
                   "burgers": (Conductivity("constant", k=0.05), np.ones(2), 0.2),
                   "stefan": (Conductivity("stefan", u_star=0.5, k_max=1.0, k_min=0.0,
                                           smoothing=0.02), None, 0.0)}[problem]
    kwargs = dict(convection=conv, scheme="upwind" if conv is not None else "central")
    u0 = np.full(cv.num_cvs, u0)
    serial = GPMESolver(cv, k, bcs, {}, **kwargs).run(u0, 0.04, 0.01, 2)
    solver = PartitionGPMESolver(cv, k, bcs, {}, comm=comm, **kwargs)
    assert 0 < len(solver.own) < cv.num_cvs
    traj = solver.run(u0, 0.04, 0.01, 2)
    solver.close()
    _assert_the_serial_trajectory(cv, serial, traj)
    # a face between the two ranks: its flux is recorded once and balances both sides
    a, b = cv.face_cv[:, 0], cv.face_cv[:, 1]
    between = (b >= 0) & (cv.cv_owner[a] != cv.cv_owner[np.maximum(b, 0)])
    assert between.any()
    others = comm.allgather(traj.u)
    assert all(np.array_equal(u, traj.u) for u in others)   # every rank holds the same trajectory


@pytest.mark.parallel(nprocs=2)
@pytest.mark.parametrize("theta", [0.5, 1.0])
def test_partitioned_wave_solve_matches_the_serial_solve(theta, comm):
    """The wave equation over the partition (GMRES + BoomerAMG per step instead of LU): the
    serial trajectory and impulses to 1e-9, balances to round-off, Dirichlet values exact."""
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.distribute import partition_owners
    from hybrid.mesh.shapes import generate
    from hybrid.solvers.gpme import BoundaryData
    from hybrid.solvers.partition import PartitionWaveSolver
    from hybrid.solvers.wave import WaveSolver

    mesh = generate({"shape": "rectangle", "h": 0.05}, seed=0)
    cv = build_control_volumes(mesh, "dual")
    cv.assign_owners(*partition_owners(mesh, comm))
    bcs = [BoundaryData("left", "dirichlet", _Constant(0.0)),
           BoundaryData("right", "flux", _Constant(0.0)),
           BoundaryData("top", "normal_derivative", _Constant(0.0)),
           BoundaryData("bottom", "flux", _Constant(0.0))]
    x = cv.centre
    u0 = np.exp(-60 * ((x[:, 0] - 0.5) ** 2 + (x[:, 1] - 0.5) ** 2))
    serial = WaveSolver(cv, 1.0, bcs, {}, theta=theta).run(u0, 0.1, 0.01, 2)
    solver = PartitionWaveSolver(cv, 1.0, bcs, {}, theta=theta, comm=comm)
    assert 0 < len(solver.own) < cv.num_cvs
    traj = solver.run(u0, 0.1, 0.01, 2)
    assert solver.linear_iterations() > 0
    solver.close()
    _assert_the_serial_trajectory(cv, serial, traj)
    assert np.abs(traj.u[:, solver.is_dir]).max() == 0.0
    others = comm.allgather(traj.u)
    assert all(np.array_equal(u, traj.u) for u in others)


TINY = dict(train=2, test=1, mesh={"generate": '{ shape = "rectangle", h = 0.08 }'},
            time={"t_end": "0.02", "outputs": "2"})


@pytest.mark.parametrize("name", ["heat-2d", "wave-2d"])
def test_hybrid_solve_over_the_partition_writes_the_serial_dataset(tmp_path, name):
    """The command: heat-2d (dual control volumes, Dirichlet and flux walls) and wave-2d solved
    serially and with every scenario over 2 ranks' partition."""
    serial = small_case(CASES / name, tmp_path / "one", **TINY)
    split = small_case(CASES / name, tmp_path / "two", solver={"parallel": '"partition"'},
                       **TINY)
    one = run_cli(["solve", str(serial), "--quiet"])
    two = run_cli(["solve", str(split)], ranks=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert "over the 2 ranks' partition" in two.stdout
    with h5py.File(serial / "results/solve/dataset.h5") as f, \
            h5py.File(split / "results/solve/dataset.h5") as g:
        for s in ("train", "test"):
            scale = np.abs(f[s]["u"][()]).max()
            assert np.abs(f[s]["u"][()] - g[s]["u"][()]).max() <= 1e-9 * scale
            assert (np.abs(f[s]["flux"][()] - g[s]["flux"][()]).max()
                    <= 1e-9 * np.abs(f[s]["flux"][()]).max())


def test_partition_is_refused_for_a_serial_solver(tmp_path):
    case = small_case(CASES / "cavity-2d", tmp_path, solver={"parallel": '"partition"'},
                      **dict(TINY, time={"t_end": "0.04", "dt": "0.02", "outputs": "2"}))
    done = run_cli(["solve", str(case)], ranks=2)
    assert done.returncode == 2
    assert "solver.parallel" in done.stderr and "navier-stokes" in done.stderr
