"""The solve stage through the real command: every shipped case, small, at 1 and 2 ranks.

Each case runs as ``hybrid solve`` and ``mpirun -n 2 hybrid solve`` into two output
directories. The datasets must balance per control volume to round-off, agree bitwise
between rank counts, hold their boundary conditions and conserve mass; the stage must be
reused when its inputs are unchanged and must never leave a half-written dataset behind.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import SCALAR_CASES, SHIPPED_CASES, edit_toml, popen_cli, run_cli, small_case
from hybrid.mesh.control_volumes import balance_residual
from hybrid.stages.solve import read_dataset

# shortened runs for the slow cases (each case well under 15 s serial)
SHORTER = {
    "stefan-1d": {"time": {"t_end": "0.02", "outputs": "4"}},
    "pme-1d": {"time": {"t_end": "0.3", "outputs": "6"}},
    "cavity-2d": {"mesh": {"generate": '{ shape = "rectangle", h = 0.125 }'},
                  "time": {"t_end": "0.2", "dt": "0.05", "outputs": "4"}},
}
# the arrays of a scenario that must not depend on the number of ranks
SCENARIO_ARRAYS = {"navier-stokes": ("u", "pressure", "vorticity", "net_volume_flux")}
BALANCE_TOL = 1e-12


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    """``solved(name)``: the small case solved at 1 rank (results-1) and 2 ranks (results-2)."""
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            case = small_case(name, root, train=2, test=2, **SHORTER.get(name, {}))
            out = {"case": case}
            for ranks in (1, 2):
                text = edit_toml((case / "case.toml").read_text(), "output", "dir",
                                 f'"results-{ranks}"')
                (case / "case.toml").write_text(text)
                proc = run_cli(["solve", case, "--quiet"], ranks=ranks, timeout=300)
                assert proc.returncode == 0, (f"{name} at {ranks} "
                                              f"rank(s):\n{proc.stdout}\n{proc.stderr}")
                solve = case / f"results-{ranks}" / "solve"
                out[ranks] = {"dir": solve, "data": read_dataset(solve / "dataset.h5"),
                              "stdout": proc.stdout,
                              "stage": json.loads((solve / "stage.json").read_text())}
            cache[name] = out
        return cache[name]
    return get


def arrays_of(run: dict) -> tuple[str, ...]:
    family = "navier-stokes" if "vorticity" in run[1]["data"]["test"] else "scalar"
    return SCENARIO_ARRAYS.get(family, ("u", "flux", "source"))


def relative_balance(data: dict, split: str) -> float:
    """Largest |balance residual| of any control volume and interval over |K| max|u| of its
    scenario."""
    cvd, d = data["control_volumes"], data[split]
    worst = 0.0
    for s in range(d["u"].shape[0]):
        res = balance_residual(cvd["volume"], cvd["face_cv"], d["u"][s], d["flux"][s],
                               d["source"][s])
        scale = cvd["volume"][None, :] * max(np.abs(d["u"][s]).max(), 1e-300)
        worst = max(worst, float((np.abs(res) / scale).max()))
    return worst


@pytest.mark.parametrize("name", SCALAR_CASES)
def test_solve_balances_at_1_and_2_ranks(solved, name):
    run = solved(name)
    for ranks in (1, 2):
        data = run[ranks]["data"]
        for split in ("train", "test"):
            d = data[split]
            assert d["u"].shape[0] == 2 and d["flux"].shape[0] == 2 and d["params"].shape[0] == 2
            assert d["u"].shape[1] == len(data["times"]) == d["flux"].shape[1] + 1
            assert np.all(np.isfinite(d["u"])) and np.abs(d["u"][:, 1:]).max() > 0
            assert relative_balance(data, split) <= BALANCE_TOL, (name, ranks, split)
        assert run[ranks]["stage"]["ranks"] == ranks
        assert run[ranks]["stage"]["max_relative_balance"] <= BALANCE_TOL


@pytest.mark.parametrize("name", SHIPPED_CASES)
def test_solve_is_the_same_at_1_and_2_ranks(solved, name):
    run = solved(name)
    one, two = run[1]["data"], run[2]["data"]
    assert np.array_equal(one["times"], two["times"])
    for split in ("train", "test"):
        for key in (*arrays_of(run), "params"):
            a, b = one[split][key], two[split][key]
            assert a.shape == b.shape
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-12 * max(np.abs(a).max(), 1.0))
        assert np.array_equal(one[split]["params"], two[split]["params"])
        assert one[split]["parameter_names"] == two[split]["parameter_names"]
    for key, arr in one["control_volumes"].items():
        assert np.array_equal(arr, two["control_volumes"][key]), key


@pytest.mark.parametrize("name", SHIPPED_CASES)
def test_solve_is_bitwise_identical_at_1_and_2_ranks(solved, name):
    """solve.py promises dataset.h5 "identical for any P": a scenario's solve must not
    depend on the rank (or that rank's BLAS threads) that ran it."""
    one, two = solved(name)[1]["data"], solved(name)[2]["data"]
    for split in ("train", "test"):
        for key in arrays_of(solved(name)):
            a, b = one[split][key], two[split][key]
            first = [n for n in range(a.shape[1]) if not np.array_equal(a[:, n], b[:, n])][:1]
            assert not first, (f"{name} {split}/{key} differs bitwise between 1 and 2 ranks from "
                               f"output {first[0]} on (largest difference "
                               f"{np.abs(a - b).max():.2e})")


@pytest.mark.parametrize("name", SHIPPED_CASES)
def test_the_dataset_holds_the_control_volumes_the_solver_balanced(solved, name):
    """Later stages read their control volumes back from dataset.h5: every field, the flux
    stencils, boundary names and periodic pairs included, equals the solver's own (a fresh
    build from the case), and the balance closes on the read-back definition."""
    import dataclasses

    from hybrid.case import load_case
    from hybrid.mesh.control_volumes import FluxPieces, balance_residual
    from hybrid.stages.solve import case_control_volumes, case_mesh

    run = solved(name)
    case = load_case(run["case"] / "case.toml")
    built = case_control_volumes(case, case_mesh(case))
    read = run[2]["data"]["cv"]
    assert read.cv_owner is None and read.face_owner is None   # a run assigns its own partition's
    for field in dataclasses.fields(built):
        if field.name in ("cv_owner", "face_owner"):
            continue
        a, b = getattr(built, field.name), getattr(read, field.name)
        if isinstance(a, FluxPieces):
            for key in ("face", "stencil", "weight", "k_cvs"):
                assert np.array_equal(getattr(a, key), getattr(b, key)), (field.name, key)
        elif isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), field.name
        else:
            assert (list(map(tuple, a)) == list(map(tuple, b)) if field.name == "periodic_pairs"
                    else a == b), field.name
    d = run[2]["data"]["test"]
    if "flux" in d and "source" in d:
        res = balance_residual(read.volume, read.face_cv, d["u"][0], d["flux"][0], d["source"][0])
        assert (np.abs(res).max()
                <= BALANCE_TOL * max(np.abs(d["u"][0]).max(), 1.0) * read.volume.max())


@pytest.mark.parametrize("name", SHIPPED_CASES)
def test_control_volume_owners_follow_the_partition(solved, name):
    run = solved(name)
    for ranks in (1, 2):
        with h5py.File(run[ranks]["dir"] / "control_volumes.h5", "r") as f:
            assert int(f.attrs["ranks"]) == ranks
            owner, face_owner = f["cv_owner"][()], f["face_owner"][()]
            n = f["volume"].shape[0]
            face_cv = f["face_cv"][()]
        assert owner.shape == (n,)
        assert set(np.unique(owner)) == set(range(ranks))
        assert np.array_equal(face_owner, owner[face_cv[:, 0]])


def test_stefan_left_boundary_is_an_inflow(solved):
    """Cell-centred control volumes impose u = 1 weakly, through the boundary flux: heat
    flows in (outward flux < 0) through the left end on every interval."""
    data = solved("stefan-1d")[1]["data"]
    cvd = data["control_volumes"]
    left = np.flatnonzero((cvd["face_cv"][:, 1] < 0)
                          & (cvd["face_tag"] == data["mesh"].boundary_names["left"]))
    right = np.flatnonzero((cvd["face_cv"][:, 1] < 0)
                           & (cvd["face_tag"] == data["mesh"].boundary_names["right"]))
    assert len(left) == 1 and len(right) == 1
    for split in ("train", "test"):
        flux = data[split]["flux"]
        assert np.all(flux[:, :, left] < 0), flux[:, :, left]
        assert np.all(flux[:, :, right] == 0)  # flux = "0" is imposed exactly


def test_heat_dirichlet_walls_hold_zero(solved):
    """Median-dual control volumes impose Dirichlet values strongly: the control volumes of
    the vertices on the bottom and top walls are exactly 0 at every output time."""
    data = solved("heat-2d")[1]["data"]
    mesh, cvd = data["mesh"], data["control_volumes"]
    walls = [mesh.boundary_names["bottom"], mesh.boundary_names["top"]]
    vertices = np.unique(mesh.facets[np.isin(mesh.facet_tags, walls)])
    y = mesh.points[vertices, 1]
    assert np.all(np.isclose(y, 0) | np.isclose(y, 1))
    on_wall = np.unique(cvd["cv_of_entity"][vertices])
    off_wall = np.setdiff1d(np.arange(len(cvd["volume"])), on_wall)
    assert len(on_wall) > 10
    for split in ("train", "test"):
        u = data[split]["u"]
        assert np.all(u[:, :, on_wall] == 0.0)
        assert np.abs(u[:, :, off_wall]).max() > 1e-3  # the rest of the plate is not held


def test_periodic_diffusion_conserves_total_mass(solved):
    for ranks in (1, 2):
        data = solved("diffusion-1d")[ranks]["data"]
        volume = data["control_volumes"]["volume"]
        for split in ("train", "test"):
            u = data[split]["u"]
            mass = u @ volume                                      # (S, T+1)
            scale = volume.sum() * np.abs(u).max(axis=(1, 2))      # (S,)
            drift = np.abs(mass - mass[:, :1]).max(axis=1) / scale
            assert np.all(drift <= 1e-12), drift
            assert np.abs(u[:, -1]).max() < 0.9 * np.abs(u[:, 0]).max()  # it did diffuse


def test_stefan_mass_change_is_the_boundary_inflow(solved):
    """Σ|K|u^n - Σ|K|u^0 = -Σ_{m<=n} Σ_{boundary faces} Φ^m (outward fluxes, no source)."""
    data = solved("stefan-1d")[1]["data"]
    cvd = data["control_volumes"]
    volume, boundary = cvd["volume"], cvd["face_cv"][:, 1] < 0
    for split in ("train", "test"):
        d = data[split]
        assert np.all(d["source"] == 0)
        mass = d["u"] @ volume
        inflow = -np.cumsum(d["flux"][:, :, boundary].sum(axis=2), axis=1)
        scale = volume.sum() * np.abs(d["u"]).max()
        np.testing.assert_allclose(mass[:, 1:] - mass[:, :1], inflow, rtol=0, atol=1e-12 * scale)
        assert np.all(np.diff(mass, axis=1) > 0)  # heat keeps flowing in


# --------------------------------------------------------------------------- reuse

TINY = {"time": {"t_end": "0.0025", "outputs": "1"}}


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def test_solve_is_reused_until_its_inputs_change(tmp_path):
    case = small_case("stefan-1d", tmp_path, train=1, test=1, **TINY)
    dataset = case / "results" / "solve" / "dataset.h5"
    first = run_cli(["solve", case, "--quiet"])
    assert first.returncode == 0, first.stderr
    assert "up to date" not in first.stdout
    stamp = _mtime(dataset)

    again = run_cli(["solve", case, "--quiet"])
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout
    assert _mtime(dataset) == stamp

    forced = run_cli(["solve", case, "--quiet", "--force"])
    assert forced.returncode == 0 and "up to date" not in forced.stdout
    assert _mtime(dataset) != stamp
    stamp = _mtime(dataset)

    # a section the solve does not read: still up to date
    toml = case / "case.toml"
    toml.write_text(edit_toml(toml.read_text(), "surrogate", "epochs", "3"))
    epochs = run_cli(["solve", case, "--quiet"])
    assert epochs.returncode == 0 and "up to date" in epochs.stdout, epochs.stdout
    assert _mtime(dataset) == stamp

    # a section it does read: redone, with the new end time
    toml.write_text(edit_toml(toml.read_text(), "time", "t_end", "0.005"))
    longer = run_cli(["solve", case, "--quiet"])
    assert longer.returncode == 0 and "up to date" not in longer.stdout, longer.stdout
    assert _mtime(dataset) != stamp
    with h5py.File(dataset, "r") as f:
        assert f["times"][-1] == pytest.approx(0.005, rel=1e-12)


# --------------------------------------------------------------------------- interruption

SLOW = {"time": {"t_end": "0.0025", "outputs": "1"}}  # ~0.25 s a scenario: 24 of them take seconds


def _start_and_signal(args: list, sig: int, after: float = 1.0) -> tuple[int, str]:
    """Start ``hybrid ARGS``, wait for its first line (the solve has started), send ``sig``
    ``after`` seconds later; returns (exit code, stderr)."""
    proc = popen_cli(args)
    lines: list[str] = []
    started = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            started.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(60), "the solve never started"
        time.sleep(after)
        assert proc.poll() is None, f"the solve finished before it could be interrupted: {lines}"
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    return proc.returncode, proc.stderr.read()


def _leftovers(solve_dir: Path) -> list[str]:
    return sorted(p.name for p in solve_dir.iterdir()) if solve_dir.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_solve_writes_nothing_and_reruns(tmp_path, sig):
    case = small_case("stefan-1d", tmp_path, train=24, test=0, **SLOW)
    solve_dir = case / "results" / "solve"
    code, err = _start_and_signal(["solve", case, "--quiet"], sig)
    assert code != 0
    if sig == signal.SIGINT:
        assert code == 130 and "interrupted" in err and "Traceback" not in err, err
    left = _leftovers(solve_dir)
    assert ("dataset.h5" not in left and "stage.json" not in left
            and "control_volumes.h5" not in left)
    assert all(name.startswith(".") for name in left), left

    again = run_cli(["solve", case, "--quiet"])
    assert again.returncode == 0, again.stderr
    assert "up to date" not in again.stdout
    with h5py.File(solve_dir / "dataset.h5", "r") as f:
        assert f["train/u"].shape[0] == 24
    assert json.loads((solve_dir / "stage.json").read_text())["scenarios"] == 24
    assert not [n for n in _leftovers(solve_dir) if n.startswith(".")]


def test_killed_forced_rerun_keeps_the_previous_dataset(tmp_path):
    case = small_case("stefan-1d", tmp_path, train=24, test=0, **SLOW)
    solve_dir = case / "results" / "solve"
    done = run_cli(["solve", case, "--quiet"])
    assert done.returncode == 0, done.stderr
    with h5py.File(solve_dir / "dataset.h5", "r") as f:
        before = {k: f[k][()] for k in ("times", "train/u", "train/flux", "train/params")}
    stamp = _mtime(solve_dir / "dataset.h5")
    stage = (solve_dir / "stage.json").read_text()

    code, _ = _start_and_signal(["solve", case, "--quiet", "--force"], signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert _mtime(solve_dir / "dataset.h5") == stamp
    assert (solve_dir / "stage.json").read_text() == stage
    with h5py.File(solve_dir / "dataset.h5", "r") as f:
        for key, arr in before.items():
            assert np.array_equal(f[key][()], arr), key
    # and the stage still counts as done
    again = run_cli(["solve", case, "--quiet"])
    assert again.returncode == 0 and "up to date" in again.stdout


@pytest.mark.parametrize("name", SCALAR_CASES)
def test_solver_trajectories_meet_the_exact_boundary_rows(solved, name):
    """The truth lies in the constraint set: every boundary row the per-cell+boundary variant
    imposes (Dirichlet values, known fluxes, a wave's zero impulse through free edges) holds
    for the solver's own test trajectories: to round-off, except known fluxes of time-dependent
    data (the heater), which the rows integrate exactly and the solver by its time steps
    (O(dt²): measured 3.7e-7 of the row scale). Normal derivatives on values, which the P1
    gradient of the solution meets only to O(h), are not checked."""
    from hybrid.case import load_case
    from hybrid.constraints.rows import StateLayout
    from hybrid.constraints.variants import boundary_rows
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.stages.solve import periodic_pairs

    run = solved(name)
    case = load_case(run["case"] / "case.toml")
    data = run[1]["data"]
    cv = build_control_volumes(data["mesh"], data["control_volumes_kind"], periodic_pairs(case))
    test, times = data["test"], data["times"]
    layout = StateLayout(cv.num_cvs, cv.num_faces, len(times) - 1)
    kinds = set()
    for i in range(test["u"].shape[0]):
        params = dict(zip(test["parameter_names"], map(float, test["params"][i])))
        rows = boundary_rows(case, cv, layout, times, params)
        if not rows.count:
            continue
        x = layout.pack(test["u"][i, 1:], test["flux"][i])
        G = rows.G.tocsr()
        scale = np.abs(G).max(axis=1).toarray().ravel() * np.abs(x).max() + np.abs(rows.b)
        rel = np.abs(G @ x - rows.b) / scale
        for kind in np.unique(rows.kind):
            kinds.add(str(kind))
            if kind != "normal-derivative":
                tol = 1e-6 if kind == "neumann-flux" and name.startswith("heat") else 1e-10
                assert rel[rows.kind == kind].max() <= tol, (name, kind,
                                                             rel[rows.kind == kind].max())
    if name.startswith("wave-neumann"):   # free edges: zero impulse rows
                                          # (met exactly) and gradient rows
        assert {"neumann-flux", "normal-derivative"} <= kinds
