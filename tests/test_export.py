"""``hybrid export``: XDMF + HDF5 series for ParaView, read back independently of the writer.

The files are parsed here with ``xml.etree`` and ``h5py`` (not only through
``read_time_series``), so a writer and reader that agree on a wrong layout still fail.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import run_cli, small_case
from hybrid.export.xdmf import read_time_series, write_time_series
from hybrid.mesh.control_volumes import balance_residual
from hybrid.stages.solve import read_dataset

EXPORTS = {
    # name: (case edits, outputs, centre of the fields, topology)
    "stefan-1d": ({"time": {"t_end": "0.02", "outputs": "4"}}, 4, "Cell", "Polyline"),
    "heat-2d": ({"time": {"t_end": "0.2", "outputs": "4"}}, 4, "Node", "Triangle"),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            edits = EXPORTS[name][0]
            case = small_case(name, tmp_path_factory.mktemp(name), train=1, test=2, **edits)
            proc = run_cli(["export", case, "--quiet"], timeout=300)
            assert proc.returncode == 0, proc.stderr
            out = case / "results"
            cache[name] = {"case": case, "stdout": proc.stdout, "export": out / "export",
                           "data": read_dataset(out / "solve" / "dataset.h5")}
        return cache[name]
    return get


def parse_series(xdmf: Path) -> dict:
    """Times, topology, geometry and every attribute of every step, straight from the XML
    and the HDF5 datasets it names (hyperslabs applied here)."""
    root = ET.parse(xdmf).getroot()
    assert root.tag == "Xdmf"
    collection = root.find("Domain/Grid")
    assert collection.get("GridType") == "Collection" and collection.get("CollectionType") == "Temporal"
    out = {"times": [], "steps": []}

    def heavy(item: ET.Element, f: h5py.File) -> np.ndarray:
        assert item.get("Format") == "HDF"
        file, dataset = item.text.strip().split(":")
        assert file == xdmf.with_suffix(".h5").name
        arr = f[dataset][()]
        assert tuple(int(s) for s in item.get("Dimensions").split()) == arr.shape
        return arr

    with h5py.File(xdmf.with_suffix(".h5"), "r") as f:
        out["h5_attrs"] = dict(f.attrs)
        for grid in collection.findall("Grid"):
            out["times"].append(float(grid.find("Time").get("Value")))
            topo, geo = grid.find("Topology"), grid.find("Geometry")
            step = {"topology_type": topo.get("TopologyType"), "elements": int(topo.get("NumberOfElements")),
                    "geometry_type": geo.get("GeometryType"),
                    "topology": heavy(topo.find("DataItem"), f), "geometry": heavy(geo.find("DataItem"), f),
                    "fields": {}}
            for att in grid.findall("Attribute"):
                slab_item, data_item = att.find("DataItem").findall("DataItem")
                slab = np.array(slab_item.text.split(), dtype=int).reshape(3, -1)
                data = heavy(data_item, f)
                start, stride, count = slab
                assert np.all(stride == 1) and count[0] == 1 and np.all(start[1:] == 0)
                assert tuple(count[1:]) == data.shape[1:]
                step["fields"][att.get("Name")] = (att.get("Center"), att.get("AttributeType"), data[start[0]])
            out["steps"].append(step)
    out["times"] = np.array(out["times"])
    return out


@pytest.mark.parametrize("name", list(EXPORTS))
def test_export_writes_one_series_per_test_scenario(exported, name):
    run = exported(name)
    names = sorted(p.name for p in run["export"].iterdir())
    assert names == ["stage.json", "test-000.h5", "test-000.xdmf", "test-001.h5", "test-001.xdmf"]
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
        np.testing.assert_allclose(series["times"], np.linspace(0, t_end, outputs + 1), rtol=0, atol=1e-15)
        assert np.array_equal(series["times"], data["times"])
        assert series["h5_attrs"]["scenario"] == f"test {i}"
        u = data["test"]["u"][i]
        expected_balance = balance_residual(cvd["volume"], cvd["face_cv"], u, data["test"]["flux"][i],
                                            data["test"]["source"][i])
        scale = cvd["volume"] * np.abs(u).max()
        for n, step in enumerate(series["steps"]):
            assert step["topology_type"] == topology
            assert step["elements"] == len(mesh.cells)
            assert np.array_equal(step["topology"], mesh.cells)
            gdim = mesh.points.shape[1]
            assert step["geometry_type"] == ("XY" if gdim == 2 else "XYZ")
            assert np.array_equal(step["geometry"][:, :gdim], mesh.points)
            assert np.all(step["geometry"][:, gdim:] == 0)
            assert set(step["fields"]) == {"u", "balance_residual"}
            where, kind, values = step["fields"]["u"]
            assert where == centre and kind == "Scalar"
            bal_where, _, balance = step["fields"]["balance_residual"]
            assert bal_where == centre
            if centre == "Cell":
                assert values.shape == (len(mesh.cells),)
                assert np.array_equal(values, u[n])                      # cell K is control volume K
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
        assert np.array_equal(back[group]["u"], np.array([s["fields"]["u"][2] for s in series["steps"]]))


def _cube_tetrahedra() -> tuple[np.ndarray, np.ndarray]:
    """The unit cube as six tetrahedra round the diagonal 0-7 (Kuhn triangulation)."""
    points = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=float)
    cells = np.array([[0, 1, 3, 7], [0, 1, 5, 7], [0, 2, 3, 7], [0, 2, 6, 7], [0, 4, 5, 7], [0, 4, 6, 7]])
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.h5", "cube.xdmf"]  # no temporary left

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
    assert list(tmp_path.iterdir()) == []


PVBATCH_SCRIPT = textwrap.dedent("""
    import sys
    from paraview.simple import XDMFReader, UpdatePipeline
    reader = XDMFReader(FileNames=[sys.argv[1]])
    reader.UpdatePipelineInformation()
    times = list(reader.TimestepValues)
    UpdatePipeline(time=times[-1], proxy=reader)
    data = reader.GetClientSideObject().GetOutputDataObject(0)
    cells = data.GetCellData()
    names = sorted(cells.GetArrayName(i) for i in range(cells.GetNumberOfArrays()))
    print("TIMES", " ".join(repr(t) for t in times))
    print("CELLARRAYS", " ".join(names))
    print("NCELLS", data.GetNumberOfCells())
""")


@pytest.mark.skipif(shutil.which("pvbatch") is None, reason="ParaView's pvbatch is not installed")
def test_paraview_opens_the_series(exported, tmp_path):
    run = exported("stefan-1d")
    script = tmp_path / "open.py"
    script.write_text(PVBATCH_SCRIPT)
    cmd = ["pvbatch", str(script), str(run["export"] / "test-000.xdmf")]
    if shutil.which("xvfb-run"):
        cmd = ["xvfb-run", "-a"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] if " " in line else ""
             for line in proc.stdout.splitlines() if line.split(" ", 1)[0] in ("TIMES", "CELLARRAYS", "NCELLS")}
    np.testing.assert_allclose([float(t) for t in lines["TIMES"].split()], run["data"]["times"], rtol=1e-12)
    assert set(lines["CELLARRAYS"].split()) >= {"u", "balance_residual"}
    assert int(lines["NCELLS"]) == len(run["data"]["mesh"].cells)


def test_export_under_mpirun_matches_serial(exported):
    """Series spread over 2 ranks are the same files as written by 1 (the solve is reused)."""
    run = exported("heat-2d")
    files = [run["export"] / f"test-{i:03d}.xdmf" for i in range(2)]
    before = [parse_series(f) for f in files]
    stamps = [f.with_suffix(".h5").stat().st_mtime_ns for f in files]
    proc = run_cli(["export", run["case"], "--quiet", "--force"], ranks=2, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "solve: up to date" not in proc.stdout  # run_export reuses the solve without announcing it
    assert [f.with_suffix(".h5").stat().st_mtime_ns for f in files] != stamps
    for old, f in zip(before, files):
        new = parse_series(f)
        assert np.array_equal(new["times"], old["times"])
        for a, b in zip(old["steps"], new["steps"]):
            for key in ("u", "balance_residual"):
                assert np.array_equal(a["fields"][key][2], b["fields"][key][2])
