"""``hybrid export``: XDMF + HDF5 series for ParaView, read back independently of the writer.

The files are parsed here with ``xml.etree`` and ``h5py`` (not only through
``read_time_series``), so a writer and reader that agree on a wrong layout still fail.
Each small case runs the whole pipeline once (solve, a tiny 2-member surrogate trained
for 2 epochs, predict with every constraint variant, export) and the tests share it; the
surrogate is bad on purpose — the tests check what is exported, not how good it is.
When ParaView's ``pvbatch`` and ``xvfb-run`` are installed, ParaView's own reader opens
every series too.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import edit_toml, run_cli, small_case
from paraview_check import HAVE_PARAVIEW, assert_drawn, needs_paraview, open_in_paraview
from hybrid.constraints.variants import VARIANTS
from hybrid.export.xdmf import read_time_series, write_time_series
from hybrid.mesh.control_volumes import balance_residual
from hybrid.export.xdmf import field_prefix
from hybrid.problems.scalar import VARIANT_FIELDS
from hybrid.stages.solve import read_dataset

TINY_SURROGATE = {"epochs": "2", "members": "2", "grid": "32", "modes": "8", "width": "8",
                  "batch": "2"}
# every variant: per-cell conservation with exact boundary rows, compared with all the others
EVERY_VARIANT = {"conservation": '"per-cell"', "boundary": '"exact"',
                 "compare": '["raw", "hardc", "softc", "global", "per-cell"]'}
# the table's order
EXPECTED_VARIANTS = ["raw", "hardc", "softc", "global", "per-cell", "per-cell+boundary"]
EXPORTS = {
    # name: (case edits, outputs, centre of the fields, topology)
    # stefan-1d on cell-centred control volumes (the shipped case is dual): fields on the cells
    "stefan-1d": ({"time": {"t_end": "0.02", "outputs": "4"}, "surrogate": TINY_SURROGATE,
                   "constraints": EVERY_VARIANT, "mesh": {"control_volumes": '"cells"'}}, 4, "Cell",
                  "Polyline"),
    "heat-2d": ({"time": {"t_end": "0.2", "outputs": "4"}, "surrogate": TINY_SURROGATE,
                 "constraints": EVERY_VARIANT}, 4, "Node", "Triangle"),
}


def read_variants_h5(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The variant groups of predict's variants.h5, read here without the export module."""
    with h5py.File(path, "r") as f:
        return {name: {k: g[k][()] for k in ("u_mean", "u_var", "flux_mean")}
                for name, g in f.items() if isinstance(g, h5py.Group) and "u_mean" in g}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            edits = EXPORTS[name][0]
            case = small_case(name, tmp_path_factory.mktemp(name), train=3, test=2, **edits)
            proc = run_cli(["export", case, "--quiet"], timeout=600)
            assert proc.returncode == 0, proc.stderr
            out = case / "results"
            cache[name] = {"case": case, "stdout": proc.stdout, "export": out / "export",
                           "data": read_dataset(out / "solve" / "dataset.h5"),
                           "variants": read_variants_h5(out / "predict" / "variants.h5")}
        return cache[name]
    return get


def expected_fields(variants) -> set[str]:
    return {"u", "balance_residual"} | {f"{field_prefix(v)}_{s}" for v in variants
                                        for s in VARIANT_FIELDS}


def parse_series(xdmf: Path) -> dict:
    """Times, topology, geometry and every attribute of every step, straight from the XML
    and the HDF5 datasets it names."""
    root = ET.parse(xdmf).getroot()
    assert root.tag == "Xdmf"
    collection = root.find("Domain/Grid")
    assert (collection.get("GridType") == "Collection"
            and collection.get("CollectionType") == "Temporal")
    out = {"times": [], "steps": []}

    def heavy(item: ET.Element, f: h5py.File) -> np.ndarray:
        assert item.get("Format") == "HDF" and item.get("NumberType") in ("Float", "Int")
        file, dataset = item.text.strip().split(":")
        assert file == xdmf.with_suffix(".h5").name
        arr = f[dataset][()]
        assert tuple(int(s) for s in item.get("Dimensions").split()) == arr.shape
        assert int(item.get("Precision")) == arr.dtype.itemsize
        return arr

    with h5py.File(xdmf.with_suffix(".h5"), "r") as f:
        out["h5_attrs"] = dict(f.attrs)
        for grid in collection.findall("Grid"):
            out["times"].append(float(grid.find("Time").get("Value")))
            topo, geo = grid.find("Topology"), grid.find("Geometry")
            step = {"topology_type": topo.get("TopologyType"),
                    "elements": int(topo.get("NumberOfElements")),
                    "geometry_type": geo.get("GeometryType"),
                    "topology": heavy(topo.find("DataItem"), f),
                    "geometry": heavy(geo.find("DataItem"), f), "fields": {}}
            for att in grid.findall("Attribute"):
                items = att.findall("DataItem")
                assert len(items) == 1   # a plain HDF reference: VTK's
                                         # XDMF 3 reader skips hyperslabs
                step["fields"][att.get("Name")] = (att.get("Center"), att.get("AttributeType"),
                                                   heavy(items[0], f))
            out["steps"].append(step)
    out["times"] = np.array(out["times"])
    return out


def on_cvs(values: np.ndarray, centre: str, cvd: dict) -> np.ndarray:
    """Exported values (cells or vertices) seen from the control volumes."""
    return values if centre == "Cell" else values[cvd["entity_of_cv"]]


@pytest.mark.parametrize("name", list(EXPORTS))
def test_export_writes_one_series_per_test_scenario(exported, name):
    run = exported(name)
    names = sorted(p.name for p in run["export"].iterdir())
    assert names == ["stage.json", "test-000.h5", "test-000.xdmf", "test-001.h5", "test-001.xdmf"]
    # the closing message names the folder, a file and the variants in the files
    last = run["stdout"].strip().splitlines()[-1]
    assert last.startswith(f"export: 2 ParaView series in {run['export']} (open e.g. "
                           "test-000.xdmf)")
    assert f"for the variants {', '.join(EXPECTED_VARIANTS)}," in last
    assert "V = raw, hardc, softc, global, per_cell, per_cell_boundary" in last
    again = run_cli(["export", run["case"], "--quiet"])
    assert again.returncode == 0 and "up to date" in again.stdout


@pytest.mark.parametrize("name", list(EXPORTS))
def test_exported_series_match_the_dataset(exported, name):
    run = exported(name)
    _, outputs, centre, topology = EXPORTS[name]
    data = run["data"]
    mesh, cvd = data["mesh"], data["control_volumes"]
    t_end = float(data["times"][-1])
    for i in range(2):
        series = parse_series(run["export"] / f"test-{i:03d}.xdmf")
        # time values: the case's output times, t = 0 included
        assert len(series["steps"]) == outputs + 1
        np.testing.assert_allclose(series["times"], np.linspace(0, t_end, outputs + 1), rtol=0,
                                   atol=1e-15)
        assert np.array_equal(series["times"], data["times"])
        assert series["h5_attrs"]["scenario"] == f"test {i}"
        u = data["test"]["u"][i]
        expected_balance = balance_residual(cvd["volume"], cvd["face_cv"], u,
                                            data["test"]["flux"][i], data["test"]["source"][i])
        scale = cvd["volume"] * np.abs(u).max()
        for n, step in enumerate(series["steps"]):
            assert step["topology_type"] == topology
            assert step["elements"] == len(mesh.cells)
            assert np.array_equal(step["topology"], mesh.cells)
            gdim = mesh.points.shape[1]
            assert step["geometry_type"] == ("XY" if gdim == 2 else "XYZ")
            assert np.array_equal(step["geometry"][:, :gdim], mesh.points)
            assert np.all(step["geometry"][:, gdim:] == 0)
            assert set(step["fields"]) == expected_fields(EXPECTED_VARIANTS)
            where, kind, values = step["fields"]["u"]
            assert where == centre and kind == "Scalar"
            bal_where, _, balance = step["fields"]["balance_residual"]
            assert bal_where == centre
            if centre == "Cell":
                assert values.shape == (len(mesh.cells),)
                assert np.array_equal(values, u[n])                     # cell K is control volume K
                cv_balance = balance
            else:
                assert values.shape == (len(mesh.points),)
                assert np.array_equal(values, u[n][cvd["cv_of_entity"]])
                # and seen from the control volumes: the value at each one's own vertex
                assert np.array_equal(values[cvd["entity_of_cv"]], u[n])
                cv_balance = balance[cvd["entity_of_cv"]]
            if n == 0:
                assert np.all(balance == 0)
            else:
                assert np.array_equal(cv_balance, expected_balance[n - 1])
                assert np.all(np.abs(cv_balance) <= 1e-12 * scale)
        # the library's own reader agrees with the independent parse
        back = read_time_series(run["export"] / f"test-{i:03d}.xdmf")
        group = "cell" if centre == "Cell" else "point"
        assert back["topology_type"] == topology
        assert np.array_equal(back[group]["u"],
                              np.array([s["fields"]["u"][2] for s in series["steps"]]))


@pytest.mark.parametrize("name", list(EXPORTS))
def test_exported_variants_match_the_predictions(exported, name):
    """Every variant's mean, std, error and balance, at every step, against variants.h5."""
    run = exported(name)
    _, outputs, centre, _ = EXPORTS[name]
    data, variants = run["data"], run["variants"]
    assert set(variants) == set(EXPECTED_VARIANTS)
    mesh, cvd = data["mesh"], data["control_volumes"]
    size = len(mesh.cells) if centre == "Cell" else len(mesh.points)
    for i in range(2):
        series = parse_series(run["export"] / f"test-{i:03d}.xdmf")
        # the ablation table's order
        assert series["h5_attrs"]["variants"] == ", ".join(EXPECTED_VARIANTS)
        u = data["test"]["u"][i]
        scale = cvd["volume"] * np.abs(u).max()          # |K| max|u|, per control volume
        worst = {}
        for v, pred in variants.items():
            p = field_prefix(v)
            relative = []
            for n, step in enumerate(series["steps"]):
                fields = {s: step["fields"][f"{p}_{s}"] for s in VARIANT_FIELDS}
                for where, kind, values in fields.values():
                    assert (where, kind, values.shape) == (centre, "Scalar", (size,))
                mean, std, error, balance = (fields[s][2] for s in VARIANT_FIELDS)
                exact = step["fields"]["u"][2]
                # the mean on the mesh: cell K is control volume K; a vertex shows its control
                # volume
                placed = (pred["u_mean"][i, n] if centre == "Cell"
                          else pred["u_mean"][i, n][cvd["cv_of_entity"]])
                assert np.array_equal(mean, placed)
                assert np.array_equal(on_cvs(mean, centre, cvd), pred["u_mean"][i, n])
                assert np.array_equal(error, np.abs(mean - exact))
                assert np.all(std >= 0)
                np.testing.assert_allclose(on_cvs(std, centre, cvd) ** 2,
                                           np.maximum(pred["u_var"][i, n], 0), rtol=1e-12, atol=0)
                if n == 0:   # the given initial state: no uncertainty, no interval
                    assert np.array_equal(mean, exact) and np.all(std == 0) and np.all(balance == 0)
                else:
                    relative.append(np.abs(on_cvs(balance, centre, cvd)) / scale)
            expected = balance_residual(cvd["volume"], cvd["face_cv"], pred["u_mean"][i],
                                        pred["flux_mean"][i], data["test"]["source"][i])
            got = np.array([on_cvs(s["fields"][f"{p}_balance_residual"][2], centre, cvd)
                            for s in series["steps"][1:]])
            assert np.array_equal(got, expected)
            worst[v] = float(np.max(relative))
        # conservation holds per control volume for the per-cell variants, not for the raw ensemble
        assert worst["per-cell+boundary"] <= 1e-9, worst
        assert worst["per-cell"] <= 1e-9, worst
        assert worst["raw"] > 1e-6 and worst["softc"] > 1e-6, worst


def test_export_follows_the_constraints_and_solver_only(exported, tmp_path):
    """A changed [constraints] section redoes predict and export (not training), and the
    series carry exactly the variants now in variants.h5; --solver-only drops them."""
    run = exported("stefan-1d")
    case = tmp_path / "stefan-1d"
    shutil.copytree(run["case"], case)
    toml = case / "case.toml"
    toml.write_text(edit_toml(toml.read_text(), "constraints", "compare", '["raw", "global"]'))
    proc = run_cli(["export", case, "--quiet"], timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "train:" not in proc.stdout and "predict: stefan-1d: constraint variants" in proc.stdout
    assert "for the variants raw, global, per-cell+boundary," in proc.stdout
    variants = read_variants_h5(case / "results" / "predict" / "variants.h5")
    assert set(variants) == {"raw", "global", "per-cell+boundary"}
    step = parse_series(case / "results" / "export" / "test-001.xdmf")["steps"][-1]
    assert set(step["fields"]) == expected_fields(variants)
    assert np.array_equal(step["fields"]["global_mean"][2], variants["global"]["u_mean"][1, -1])

    solver = run_cli(["export", case, "--quiet", "--solver-only"])
    assert solver.returncode == 0, solver.stderr
    assert solver.stdout.strip().endswith("u, balance_residual (solver only)")
    for i in range(2):
        series = parse_series(case / "results" / "export" / f"test-{i:03d}.xdmf")
        assert all(set(s["fields"]) == {"u", "balance_residual"} for s in series["steps"])
    again = run_cli(["export", case, "--quiet", "--solver-only"])
    assert again.returncode == 0 and "export: up to date" in again.stdout


def test_variant_array_names_are_identifiers():
    assert [field_prefix(v) for v in VARIANTS] == ["raw", "hardc", "softc", "boon", "unpadded",
                                                   "global", "per_cell", "per_cell_boundary",
                                                   "known_mass"]
    assert all(f"{field_prefix(v)}_{s}".isidentifier() for v in VARIANTS for s in VARIANT_FIELDS)


def _cube_tetrahedra() -> tuple[np.ndarray, np.ndarray]:
    """The unit cube as six tetrahedra round the diagonal 0-7 (Kuhn triangulation)."""
    points = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=float)
    cells = np.array([[0, 1, 3, 7], [0, 1, 5, 7], [0, 2, 3, 7], [0, 2, 6, 7], [0, 4, 5, 7],
                      [0, 4, 6, 7]])
    return points, cells


def test_time_series_round_trip_vector_on_tetrahedra(tmp_path):
    points, cells = _cube_tetrahedra()
    rng = np.random.default_rng(0)
    times = np.array([0.0, 0.25, 1.0 / 3.0])
    velocity = rng.standard_normal((3, 8, 3))
    pressure = rng.standard_normal((3, 6))
    path = write_time_series(tmp_path / "cube", points, cells, "tetrahedron", times,
                             point_data={"velocity": velocity}, cell_data={"pressure": pressure},
                             attributes={"case": "cube"})
    assert path == tmp_path / "cube.xdmf"
    # no temporary left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.h5", "cube.xdmf"]

    series = parse_series(path)
    assert np.array_equal(series["times"], times)  # %.17g: exact
    assert series["h5_attrs"]["case"] == "cube"
    for n, step in enumerate(series["steps"]):
        assert step["topology_type"] == "Tetrahedron" and step["geometry_type"] == "XYZ"
        assert np.array_equal(step["geometry"], points) and np.array_equal(step["topology"], cells)
        assert step["fields"]["velocity"][:2] == ("Node", "Vector")
        assert np.array_equal(step["fields"]["velocity"][2], velocity[n])
        assert step["fields"]["pressure"][:2] == ("Cell", "Scalar")
        assert np.array_equal(step["fields"]["pressure"][2], pressure[n])

    back = read_time_series(path)
    assert back["topology_type"] == "Tetrahedron"
    assert np.array_equal(back["times"], times)
    assert np.array_equal(back["point"]["velocity"], velocity)
    assert np.array_equal(back["cell"]["pressure"], pressure)
    assert np.array_equal(back["geometry"], points) and np.array_equal(back["topology"], cells)


def test_time_series_wrong_length_writes_nothing(tmp_path):
    points, cells = _cube_tetrahedra()
    with pytest.raises(ValueError, match="time steps"):
        write_time_series(tmp_path / "bad", points, cells, "tetrahedron", np.array([0.0, 1.0]),
                          point_data={"u": np.zeros((3, 8))})
    with pytest.raises(ValueError, match="HDF5"):
        write_time_series(tmp_path / "bad", points, cells, "tetrahedron", np.array([0.0, 1.0]),
                          point_data={"u/v": np.zeros((2, 8))})
    assert list(tmp_path.iterdir()) == []


@needs_paraview
@pytest.mark.parametrize("name", list(EXPORTS))
def test_paraview_opens_the_series(exported, tmp_path, name):
    run = exported(name)
    _, outputs, centre, _ = EXPORTS[name]
    data, mesh = run["data"], run["data"]["mesh"]
    files = [run["export"] / f"test-{i:03d}.xdmf" for i in range(2)]
    report = open_in_paraview(files, "per_cell_boundary_mean", tmp_path)
    assert sorted(report) == sorted(map(str, files))
    where = "cell" if centre == "Cell" else "point"
    names = expected_fields(EXPECTED_VARIANTS)
    for f in files:
        seen, series = report[str(f)], parse_series(f)
        assert "xdmf" in seen["reader"].lower()
        np.testing.assert_array_equal(seen["times"], data["times"])
        last = len(data["times"]) - 1
        for k in (0, last):
            assert seen["size"][k] == (len(mesh.points), len(mesh.cells))
            arrays = {name: value for (step, w, name), value in seen["arrays"].items()
                      if step == k and w == where}
            assert set(arrays) >= names
            for name in names:
                values = series["steps"][k]["fields"][name][2]
                tuples, total = arrays[name]
                assert tuples == len(values)
                assert abs(total - values.sum()) <= 1e-9 * max(np.abs(values).sum(), 1e-300), name
        assert_drawn(seen["png"])


def test_export_under_mpirun_matches_serial(exported):
    """Series spread over 2 ranks are the same files as written by 1 (the solve is reused)."""
    run = exported("heat-2d")
    files = [run["export"] / f"test-{i:03d}.xdmf" for i in range(2)]
    before = [parse_series(f) for f in files]
    stamps = [f.with_suffix(".h5").stat().st_mtime_ns for f in files]
    proc = run_cli(["export", run["case"], "--quiet", "--force"], ranks=2, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "solve: up to date" not in proc.stdout  # run_export reuses the solve
                                                   # without announcing it
    assert [f.with_suffix(".h5").stat().st_mtime_ns for f in files] != stamps
    for old, f in zip(before, files):
        new = parse_series(f)
        assert np.array_equal(new["times"], old["times"])
        for a, b in zip(old["steps"], new["steps"]):
            assert set(a["fields"]) == set(b["fields"]) == expected_fields(EXPECTED_VARIANTS)
            for key in a["fields"]:
                assert np.array_equal(a["fields"][key][2], b["fields"][key][2])


def _read_pvd(pvd: Path) -> tuple[np.ndarray, list]:
    """The times of a .pvd collection and each step's mesh read by meshio (not our reader)."""
    import meshio

    sets = ET.parse(pvd).getroot().find("Collection").findall("DataSet")
    return (np.array([float(s.get("timestep")) for s in sets]),
            [meshio.read(pvd.parent / s.get("file")) for s in sets])


@pytest.mark.parametrize("name", list(EXPORTS))
def test_vtu_export_holds_what_the_xdmf_holds(exported, tmp_path, name):
    """``hybrid export --format vtu``: a .pvd per scenario whose .vtu steps hold, bit for bit,
    the times, mesh and fields of the XDMF series; ParaView's own reader opens them."""
    run = exported(name)
    case = tmp_path / name
    shutil.copytree(run["case"], case)
    proc = run_cli(["export", case, "--format", "vtu", "--quiet"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "predict:" not in proc.stdout and "test-000.pvd" in proc.stdout
    mesh = run["data"]["mesh"]
    pvds = [case / f"results/export/test-{i:03d}.pvd" for i in range(2)]
    for pvd in pvds:
        xdmf = read_time_series(pvd.with_suffix(".xdmf"))
        times, steps = _read_pvd(pvd)
        np.testing.assert_array_equal(times, xdmf["times"])
        for k, step in enumerate(steps):
            np.testing.assert_array_equal(step.points[:, :mesh.gdim], mesh.points)
            np.testing.assert_array_equal(step.cells[0].data, mesh.cells)
            for where, got in (("point", step.point_data),
                               ("cell", {n: v[0] for n, v in step.cell_data.items()})):
                assert set(got) == set(xdmf[where])
                for field_name, values in xdmf[where].items():
                    np.testing.assert_array_equal(got[field_name], values[k])
    rerun = run_cli(["export", case, "--format", "vtu", "--quiet"])
    assert "export: up to date" in rerun.stdout
    (pvds[0].with_suffix("") / "step-0001.vtu").write_text("damaged")
    assert "export: up to date" not in run_cli(["export", case, "--format", "vtu",
                                                "--quiet"]).stdout
    if HAVE_PARAVIEW:
        report = open_in_paraview(pvds, "per_cell_boundary_mean", tmp_path)
        for pvd in pvds:
            seen = report[str(pvd)]
            assert "pvd" in seen["reader"].lower(), seen["reader"]
            np.testing.assert_array_equal(seen["times"], run["data"]["times"])
            assert seen["size"][0] == (len(mesh.points), len(mesh.cells))
            assert ({n for (k, _, n) in seen["arrays"] if k == 0}
                    >= expected_fields(EXPECTED_VARIANTS))
            assert_drawn(seen["png"])
