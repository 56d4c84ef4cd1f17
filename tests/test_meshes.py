"""Meshes: generated shapes, .msh/.xdmf files, the case's [mesh] loader, MPI distribution."""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from hybrid.errors import CaseError
from hybrid.mesh import MeshData, generate, load_mesh, read_mesh_file, write_msh, write_xdmf_mesh
from hybrid.mesh.io import apply_boundary_names, exterior_facets, gmsh_session
from hybrid.mesh.shapes import BOUNDARY_TAGS

ROOT = Path(__file__).resolve().parents[1]
MESHES = ROOT / "meshes"


def _load_make_meshes():
    spec = importlib.util.spec_from_file_location("make_meshes", MESHES / "make_meshes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_meshes = _load_make_meshes()
same_mesh = make_meshes.same_mesh

SPECS = {
    "interval": {"shape": "interval", "cells": 37, "x0": -1.0, "x1": 2.0, "jitter": 0.4},
    "rectangle": {"shape": "rectangle", "h": 0.15, "x0": -1.0, "x1": 1.0, "y0": 0.5, "y1": 1.25},
    "lshape": {"shape": "lshape", "h": 0.1},
    "disk": {"shape": "disk", "h": 0.1, "radius": 1.0},
    "box": {"shape": "box", "h": 0.25, "x0": 0.0, "x1": 2.0, "y0": -0.5, "y1": 0.5, "z0": 1.0,
            "z1": 1.5},
}
MEASURE = {"interval": 3.0, "rectangle": 2.0 * 0.75, "lshape": 0.75, "box": 2.0 * 1.0 * 0.5}


def cell_measures(m: MeshData) -> np.ndarray:
    """|det| / d! of each simplex (independent of the package's own helper)."""
    corners = m.points[m.cells]
    return np.abs(np.linalg.det(corners[:, 1:] - corners[:, :1])) / math.factorial(m.tdim)


def sorted_rows(a: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(r) for r in np.sort(a, axis=1)}


@pytest.fixture(scope="module")
def shapes() -> dict[str, MeshData]:
    return {name: generate(spec, seed=5) for name, spec in SPECS.items()}


# --------------------------------------------------------------------------- generated shapes
@pytest.mark.parametrize("name", list(SPECS))
def test_boundary_names_and_dimensions(shapes, name):
    m = shapes[name]
    assert m.boundary_names == BOUNDARY_TAGS[name]
    assert sorted(np.unique(m.facet_tags)) == sorted(BOUNDARY_TAGS[name].values())
    tdim = {"interval": 1, "rectangle": 2, "lshape": 2, "disk": 2, "box": 3}[name]
    assert m.tdim == tdim and m.gdim == tdim
    assert m.cells.min() == 0 and m.cells.max() == m.num_vertices - 1
    assert len(np.unique(m.cells)) == m.num_vertices  # every vertex is used by a cell


@pytest.mark.parametrize("name", list(MEASURE))
def test_total_cell_measure(shapes, name):
    volumes = cell_measures(shapes[name])
    assert volumes.min() > 0
    assert volumes.sum() == pytest.approx(MEASURE[name], rel=1e-12)


def test_disk_area_converges_at_second_order():
    """An inscribed polygon misses O(h^2) of the disk's area pi r^2."""
    h = np.array([0.2, 0.1, 0.05])
    deficit = np.array([np.pi * 4
                        - cell_measures(generate({"shape": "disk", "h": hh, "radius": 2.0})).sum()
                        for hh in h])
    assert np.all(deficit > 0) and np.all(deficit < 4 * h ** 2)
    rate = np.polyfit(np.log(h), np.log(deficit), 1)[0]
    assert 1.8 < rate < 2.2


@pytest.mark.parametrize("name", list(SPECS))
def test_tagged_facets_are_exactly_the_boundary(shapes, name):
    m = shapes[name]
    tagged = np.sort(m.facets, axis=1)
    assert len({tuple(r) for r in tagged}) == len(tagged), "a facet is tagged twice"
    # every tagged facet belongs to exactly one cell, and every such facet is tagged
    assert sorted_rows(m.facets) == sorted_rows(exterior_facets(m))
    local = [[j for j in range(m.tdim + 1) if j != i] for i in range(m.tdim + 1)]
    all_facets = np.sort(m.cells[:, local].reshape(-1, m.tdim), axis=1)
    counts = {}
    for row in map(tuple, all_facets):
        counts[row] = counts.get(row, 0) + 1
    assert all(counts[row] == 1 for row in map(tuple, tagged))
    assert sum(1 for c in counts.values() if c == 1) == len(tagged)


def _on_side(name: str, spec: dict, side: str, x: np.ndarray) -> np.ndarray:
    """Whether points x (k, gdim) lie on the named side of the shape."""
    tol = 1e-12
    p = {"x0": 0.0, "x1": 1.0, "y0": 0.0, "y1": 1.0, "z0": 0.0, "z1": 1.0, **spec}
    if name == "disk":
        return np.abs(np.linalg.norm(x, axis=1) - spec["radius"]) < 1e-12
    if name == "lshape" and side == "inner":
        return ((np.abs(x[:, 0] - 0.5) < tol) & (x[:, 1] >= 0.5 - tol)) | \
               ((np.abs(x[:, 1] - 0.5) < tol) & (x[:, 0] >= 0.5 - tol))
    axis, bound = {"left": (0, "x0"), "right": (0, "x1"),
                   "bottom": (2 if name == "box" else 1, "z0" if name == "box" else "y0"),
                   "top": (2 if name == "box" else 1, "z1" if name == "box" else "y1"),
                   "front": (1, "y0"), "back": (1, "y1")}[side]
    on = np.abs(x[:, axis] - p[bound]) < tol
    if name == "lshape" and side == "right":
        on &= x[:, 1] <= 0.5 + tol
    if name == "lshape" and side == "top":
        on &= x[:, 0] <= 0.5 + tol
    return on


@pytest.mark.parametrize("name", list(SPECS))
def test_each_boundary_lies_on_its_side(shapes, name):
    m = shapes[name]
    for side, tag in m.boundary_names.items():
        corners = m.points[m.facets[m.facet_tags == tag]].reshape(-1, m.gdim)
        assert len(corners) > 0
        assert np.all(_on_side(name, SPECS[name], side, corners)), side


def test_lshape_inner_is_both_reentrant_edges(shapes):
    m = shapes["lshape"]
    edges = m.facets[m.facet_tags == m.boundary_names["inner"]]
    lengths = np.linalg.norm(m.points[edges[:, 0]] - m.points[edges[:, 1]], axis=1)
    assert lengths.sum() == pytest.approx(1.0, rel=1e-12)  # two edges of length 0.5
    for side in ("left", "bottom"):
        e = m.facets[m.facet_tags == m.boundary_names[side]]
        assert (np.linalg.norm(m.points[e[:, 0]] - m.points[e[:, 1]], axis=1).sum()
                == pytest.approx(1.0))


def test_jitter_keeps_order_and_endpoints():
    spec = {"shape": "interval", "cells": 50, "x0": 0.0, "x1": 1.0, "jitter": 0.3}
    m = generate(spec, seed=11)
    x = m.points[:, 0]
    h = 1.0 / 50
    assert x[0] == 0.0 and x[-1] == 1.0
    assert np.all(np.diff(x) > 0)
    move = x - np.linspace(0.0, 1.0, 51)
    assert np.abs(move).max() <= 0.15 * h + 1e-15
    assert np.abs(move).max() > 0.1 * h  # the jitter was applied (50 uniform draws)
    assert np.array_equal(m.cells, np.column_stack([np.arange(50), np.arange(1, 51)]))
    assert m.points[m.facets[m.facet_tags == 1], 0].item() == 0.0
    assert m.points[m.facets[m.facet_tags == 2], 0].item() == 1.0
    assert not np.array_equal(generate(spec, seed=12).points, m.points)  # the seed matters
    uniform = generate({"shape": "interval", "cells": 50}, seed=11).points[:, 0]
    assert np.allclose(uniform, np.linspace(0, 1, 51), rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", ["interval", "lshape", "box"])
def test_same_spec_same_mesh(shapes, name):
    again = generate(SPECS[name], seed=5)
    first = shapes[name]
    for field in ("points", "cells", "facets", "facet_tags"):
        assert np.array_equal(getattr(first, field), getattr(again, field)), field


@pytest.mark.parametrize("spec, key", [
    (None, "mesh.generate"),
    ({"cells": 4}, "mesh.generate.shape"),
    ({"shape": "circle"}, "mesh.generate.shape"),
    ({"shape": "disk", "radus": 2.0}, "mesh.generate.radus"),
    ({"shape": "rectangle", "jitter": 0.1}, "mesh.generate.jitter"),
    ({"shape": "interval", "cells": 0}, "mesh.generate.cells"),
    ({"shape": "interval", "cells": 2.5}, "mesh.generate.cells"),
    ({"shape": "interval", "cells": 4, "h": 0.1}, "mesh.generate.h"),
    ({"shape": "interval", "jitter": 1.0}, "mesh.generate.jitter"),
    ({"shape": "rectangle", "h": -0.1}, "mesh.generate.h"),
    ({"shape": "rectangle", "h": "0.1"}, "mesh.generate.h"),
    ({"shape": "box", "z0": 2.0}, "mesh.generate.z1"),
    ({"shape": "disk", "radius": 0}, "mesh.generate.radius"),
    ({"shape": "box", "h": 1e-4}, "mesh.generate"),
])
def test_bad_spec_is_a_case_error(spec, key):
    with pytest.raises(CaseError) as info:
        generate(spec, file="case.toml")
    assert info.value.key == key
    assert str(info.value).startswith(f"case.toml: {key}: ")


# --------------------------------------------------------------------------- files
@pytest.mark.parametrize("name", ["interval", "lshape", "disk", "box"])
def test_msh_round_trip_is_exact(shapes, tmp_path, name):
    m = shapes[name]
    write_msh(m, tmp_path / "m.msh")
    back = read_mesh_file(tmp_path / "m.msh")
    assert back.cell_type == m.cell_type and back.boundary_names == m.boundary_names
    for field in ("points", "cells", "facets", "facet_tags"):
        assert np.array_equal(getattr(back, field), getattr(m, field)), field


@pytest.mark.parametrize("name", ["interval", "rectangle", "lshape", "box"])
def test_xdmf_round_trip_up_to_numbering(shapes, tmp_path, name):
    m = shapes[name]
    write_xdmf_mesh(m, tmp_path / "m.xdmf")
    assert (tmp_path / "m.h5").is_file()
    back = read_mesh_file(tmp_path / "m.xdmf")
    assert back.num_cells == m.num_cells and back.num_vertices == m.num_vertices
    assert same_mesh(back, m)
    assert np.array_equal(np.sort(back.points, axis=0), np.sort(m.points, axis=0))
    assert cell_measures(back).sum() == pytest.approx(cell_measures(m).sum(), rel=1e-13)
    for tag in m.boundary_names.values():
        assert np.sum(back.facet_tags == tag) == np.sum(m.facet_tags == tag)
    assert sorted_rows(back.facets) == sorted_rows(exterior_facets(back))


def test_xdmf_reader_returns_the_files_numbering(shapes, tmp_path):
    """The reader undoes DOLFINx's reordering: cells and points as stored in the file."""
    from mpi4py import MPI
    import dolfinx.io

    write_xdmf_mesh(shapes["lshape"], tmp_path / "m.xdmf")
    back = read_mesh_file(tmp_path / "m.xdmf")
    with dolfinx.io.XDMFFile(MPI.COMM_SELF, str(tmp_path / "m.xdmf"), "r") as xdmf:
        stored_cells = xdmf.read_topology_data("mesh")
        stored_points = xdmf.read_geometry_data("mesh")
    assert np.array_equal(back.cells, stored_cells)
    assert np.array_equal(back.points, stored_points[:, :2])


def test_xdmf_without_names_takes_them_from_the_case(shapes, tmp_path):
    m = shapes["rectangle"]
    unnamed = MeshData(m.points, m.cells, m.cell_type, m.facets, m.facet_tags, {})
    write_xdmf_mesh(unnamed, tmp_path / "m.xdmf")
    back = read_mesh_file(tmp_path / "m.xdmf")
    assert back.boundary_names == {}
    named = apply_boundary_names(back, {"inlet": 1, "outlet": 2})
    assert named.boundary_names == {"inlet": 1, "outlet": 2}


def test_msh_in_3d_ambient_space_drops_zero_coordinates(tmp_path):
    """A 1-D gmsh mesh is stored with y = z = 0: the reader gives gdim = 1."""
    with gmsh_session() as gmsh:
        gmsh.model.add("line")
        a, b = gmsh.model.occ.addPoint(0, 0, 0), gmsh.model.occ.addPoint(2, 0, 0)
        line = gmsh.model.occ.addLine(a, b)
        gmsh.model.occ.synchronize()
        gmsh.model.addPhysicalGroup(1, [line], 7)
        gmsh.model.addPhysicalGroup(0, [a], 3)
        gmsh.model.setPhysicalName(0, 3, "inflow")
        gmsh.model.addPhysicalGroup(0, [b], 4)
        gmsh.option.setNumber("Mesh.CharacteristicLengthMax", 0.25)
        gmsh.model.mesh.generate(1)
        gmsh.write(str(tmp_path / "line.msh"))
    m = read_mesh_file(tmp_path / "line.msh")
    assert m.cell_type == "interval" and m.gdim == 1 and m.num_cells >= 8
    assert cell_measures(m).sum() == pytest.approx(2.0)
    assert m.boundary_names == {"inflow": 3}
    assert m.points[m.facets[m.facet_tags == 3], 0].item() == 0.0
    assert m.points[m.facets[m.facet_tags == 4], 0].item() == 2.0
    assert apply_boundary_names(m, {"outflow": 4}).boundary_names == {"inflow": 3, "outflow": 4}


SHIPPED_NAMES = {
    "interval-400.msh": (400, {"left": 1, "right": 2}),
    "interval-200.msh": (200, {"left": 1, "right": 2}),
    "lshape-h0.05.msh": (None, {"left": 1, "right": 2, "bottom": 3, "top": 4, "inner": 5}),
    "disk-h0.08.msh": (None, {"wall": 1}),
    "rectangle-h0.1.xdmf": (None, {"left": 1, "right": 2, "bottom": 3, "top": 4}),
}


@pytest.mark.parametrize("name", list(SHIPPED_NAMES))
def test_shipped_mesh_loads_and_is_reproduced(name):
    path = MESHES / name
    assert path.stat().st_size < 1_000_000
    m = read_mesh_file(path)
    cells, names = SHIPPED_NAMES[name]
    assert m.boundary_names == names
    if cells is not None:
        assert m.num_cells == cells
    assert sorted_rows(m.facets) == sorted_rows(exterior_facets(m))
    assert same_mesh(m, make_meshes.build(name))  # make_meshes.py reproduces the file


def test_shipped_interval_400_is_jittered():
    m = read_mesh_file(MESHES / "interval-400.msh")
    x = m.points[:, 0]
    assert x[0] == 0.0 and x[-1] == 1.0 and np.all(np.diff(x) > 0)
    move = np.abs(x - np.linspace(0, 1, 401))
    assert 0.1 * 0.3 / 400 < move.max() <= 0.15 / 400 + 1e-15


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_bad_files_are_case_errors_naming_the_path(tmp_path, shapes):
    write_msh(shapes["rectangle"], tmp_path / "good.msh")
    write_xdmf_mesh(shapes["rectangle"], tmp_path / "good.xdmf")
    good_msh = (tmp_path / "good.msh").read_bytes()
    marker = tmp_path / "executed"
    unnamed = MeshData(np.array([[0.0], [1.0]]), np.array([[0, 1]]), "interval", np.empty((0, 1)),
                       [], {})
    write_msh(unnamed, tmp_path / "untagged.msh")
    bad = {
        tmp_path / "missing.msh": "does not exist",
        tmp_path / "missing.xdmf": "does not exist",
        _write(tmp_path / "mesh.vtk", "x"): "meshio cannot read",
        _write(tmp_path / "mesh.unknown", "x"): "meshio cannot read",
        # gmsh would run a .geo script (here: a shell command) from a file named .msh
        _write(tmp_path / "script.msh",
               f'System "touch {marker}";\n'): "does not start with $MeshFormat",
        _write(tmp_path / "truncated.msh", good_msh[: len(good_msh) // 2]): "cannot read gmsh mesh",
        _write(tmp_path / "empty.msh", ""): "not a gmsh mesh file",
        tmp_path / "untagged.msh": "no tagged boundary facets",
        _write(tmp_path / "bad.xdmf", "<Xdmf><Domain>"): "cannot read XDMF mesh",
        _write(tmp_path / "noh5.xdmf",
               (tmp_path / "good.xdmf").read_text().replace("good.h5", "gone.h5")):
            "gone.h5, which does not exist",
        _write(tmp_path / "notags.xdmf", "<Xdmf><Domain/></Xdmf>"): "expected a grid",
    }
    for path, expected in bad.items():
        with pytest.raises(CaseError) as info:
            read_mesh_file(path, file="case.toml")
        message = str(info.value)
        assert message.startswith("case.toml: mesh.file: ") and str(path) in message, message
        assert expected in message, message
    assert not marker.exists()


def test_interior_tagged_facet_is_rejected(tmp_path):
    points = np.array([[0.0], [0.5], [1.0]])
    m = MeshData(points, [[0, 1], [1, 2]], "interval", [[0], [1], [2]], [1, 3, 2],
                 {"left": 1, "right": 2})
    write_msh(m, tmp_path / "inner.msh")
    with pytest.raises(CaseError,
                       match=r"inner\.msh: 1 tagged facets \(tags \[3\]\) are not on the boundary"):
        read_mesh_file(tmp_path / "inner.msh")


def test_case_boundary_names_rename_and_check_tags(shapes):
    m = generate(SPECS["rectangle"])
    renamed = apply_boundary_names(m, {"inlet": 1, "wall": 3})
    assert renamed.boundary_names == {"inlet": 1, "wall": 3, "right": 2, "top": 4}
    with pytest.raises(CaseError) as info:
        apply_boundary_names(generate(SPECS["rectangle"]), {"outlet": 9}, file="case.toml")
    assert info.value.key == "mesh.boundaries.outlet"
    assert "left=1, right=2, bottom=3, top=4" in str(info.value)
    with pytest.raises(CaseError, match="integer physical tag"):
        apply_boundary_names(generate(SPECS["rectangle"]), {"outlet": "2"})


def test_load_mesh_serial(comm, tmp_path):
    section = {"file": None, "generate": {"shape": "interval", "cells": 10, "jitter": 0.2},
               "boundaries": None}
    m = load_mesh(section, seed=3, comm=comm, file="case.toml")
    assert np.array_equal(m.points, generate(section["generate"], 3).points)
    section = {"file": MESHES / "lshape-h0.05.msh", "generate": None, "boundaries": {"corner": 5}}
    m = load_mesh(section, seed=0, comm=comm, file="case.toml")
    assert m.boundary_names == {"left": 1, "right": 2, "bottom": 3, "top": 4, "corner": 5}
    for section in ({"file": None, "generate": None},
                    {"file": MESHES / "x.msh", "generate": {"shape": "disk"}}):
        with pytest.raises(CaseError, match="case.toml: mesh: give exactly one"):
            load_mesh(section, seed=0, comm=comm, file="case.toml")


# --------------------------------------------------------------------------- DOLFINx, MPI
def _global_counts(m: MeshData, comm):
    from hybrid.mesh.distribute import to_dolfinx

    mesh, tags = to_dolfinx(m, comm)
    tdim = m.tdim
    num_cells = comm.allreduce(mesh.topology.index_map(tdim).size_local)
    owned = tags.indices < mesh.topology.index_map(tdim - 1).size_local
    per_tag = {int(t): comm.allreduce(int(np.sum(tags.values[owned] == t)))
               for t in m.boundary_names.values()}
    return mesh, num_cells, per_tag


@pytest.mark.parametrize("name", ["interval", "lshape", "box"])
def test_to_dolfinx_serial_keeps_cells_and_tags(shapes, name):
    from mpi4py import MPI

    m = shapes[name]
    _, num_cells, per_tag = _global_counts(m, MPI.COMM_SELF)
    assert num_cells == m.num_cells
    assert per_tag == {t: int(np.sum(m.facet_tags == t)) for t in m.boundary_names.values()}


@pytest.mark.parallel(nprocs=2)
@pytest.mark.parametrize("name", ["interval", "lshape", "box"])
def test_to_dolfinx_and_owners_on_two_ranks(comm, name):
    from hybrid.mesh.distribute import local_vertex_original_index, partition_owners

    assert comm.size == 2
    m = load_mesh({"file": None, "generate": SPECS[name], "boundaries": None}, seed=5, comm=comm)
    digest = hashlib.sha1(m.points.tobytes() + m.cells.tobytes() + m.facets.tobytes()).hexdigest()
    assert comm.allgather(digest) == [digest] * 2  # every rank holds the same MeshData

    mesh, num_cells, per_tag = _global_counts(m, comm)
    assert num_cells == m.num_cells
    assert per_tag == {t: int(np.sum(m.facet_tags == t)) for t in m.boundary_names.values()}

    cell_owner, vertex_owner = partition_owners(m, comm, mesh=mesh)
    assert cell_owner.dtype == np.int32 and vertex_owner.dtype == np.int32
    assert set(np.unique(cell_owner)) == {0, 1} and set(np.unique(vertex_owner)) == {0, 1}
    assert comm.allgather(cell_owner.tobytes()) == [cell_owner.tobytes()] * 2
    # each cell owned once: the owned counts add up, and match this rank's share
    tdim = m.tdim
    assert np.sum(cell_owner == comm.rank) == mesh.topology.index_map(tdim).size_local
    assert np.sum(vertex_owner == comm.rank) == mesh.topology.index_map(0).size_local
    # the vertex map is right: local vertex coordinates equal the original ones
    from hybrid import compat

    original = local_vertex_original_index(mesh)
    cell_vertices = mesh.topology.connectivity(tdim, 0).array.reshape(-1, tdim + 1)
    nodes = compat.geometry_dofmap(mesh)[: len(cell_vertices)]
    x = np.empty((len(original), 3))
    x[cell_vertices.ravel()] = mesh.geometry.x[nodes.ravel()]
    assert np.array_equal(x[:, : m.gdim], m.points[original])
    # a second distribution gives the same partition
    again, _ = partition_owners(m, comm)
    assert np.array_equal(again, cell_owner)


@pytest.mark.parallel(nprocs=2)
def test_load_mesh_error_reaches_every_rank(comm):
    missing = Path("/nonexistent/mesh-for-hybrid-test.msh")
    with pytest.raises(CaseError) as info:
        load_mesh({"file": missing, "generate": None, "boundaries": None}, seed=0, comm=comm,
                  file="case.toml")
    assert str(info.value) == f"case.toml: mesh.file: mesh file {missing} does not exist"
    assert info.value.key == "mesh.file" and info.value.file == "case.toml"
    with pytest.raises(CaseError, match="mesh.boundaries.outlet"):
        load_mesh({"file": None, "generate": {"shape": "interval"}, "boundaries": {"outlet": 7}},
                  seed=0, comm=comm, file="case.toml")


def test_a_tangled_mesh_is_refused(tmp_path):
    """Issue 15, defect 7: a vertex moved across its neighbours folds cells over each other; the
    volumes stay non-zero, so only the orientation across interior facets shows it."""
    import pytest

    from hybrid.errors import CaseError

    m = generate({"shape": "rectangle", "h": 0.25}, seed=0)
    write_msh(m, tmp_path / "ok.msh")
    assert read_mesh_file(tmp_path / "ok.msh").cells.shape == m.cells.shape
    interior = np.flatnonzero((m.points > 0.01).all(axis=1) & (m.points < 0.99).all(axis=1))[0]
    m.points = m.points.copy()
    m.points[interior] += [0.6, 0.0]
    write_msh(m, tmp_path / "tangled.msh")
    with pytest.raises(CaseError, match="tangled"):
        read_mesh_file(tmp_path / "tangled.msh", file="case.toml")


# --- meshes of other meshers, through meshio ---------------------------------------------------

def _meshio_copy(src: Path, path: Path, convention: str) -> Path:
    """The gmsh mesh ``src`` converted by meshio into ``path``'s format, its boundary tags in
    one of the conventions read: integer cell data under a format's name, or named cell sets."""
    import meshio

    m = meshio.read(src)
    by_type, tags_by_type = {}, {}
    for block, physical in zip(m.cells, m.cell_data["gmsh:physical"]):
        by_type.setdefault(block.type, []).append(block.data)
        tags_by_type.setdefault(block.type, []).append(physical)
    cells = [(kind, np.concatenate(parts)) for kind, parts in by_type.items()]
    tags = [np.concatenate(tags_by_type[kind]).astype(np.int32) for kind, _ in cells]
    if convention == "cell_sets":
        facet = {"line": "vertex", "triangle": "line", "tetra": "triangle"}[cells[-1][0]]
        names = {name: int(v[0]) for name, v in m.field_data.items() if int(v[1]) == m.cells[0].dim}
        sets = {name: [np.flatnonzero(t == tag) if kind == facet else np.array([], dtype=int)
                       for (kind, _), t in zip(cells, tags)] for name, tag in names.items()}
        meshio.write(path, meshio.Mesh(m.points, cells, cell_sets=sets))
    else:
        meshio.write(path, meshio.Mesh(m.points, cells, cell_data={convention: tags}))
    return path


MESHIO_FORMATS = [  # (shipped mesh, suffix, how the boundary tags are stored)
    ("lshape-h0.05.msh", ".vtu", "CellEntityIds"), ("lshape-h0.05.msh", ".vtk", "gmsh:physical"),
    ("lshape-h0.05.msh", ".inp", "cell_sets"), ("lshape-h0.05.msh", ".med", "cell_tags"),
    ("lshape-h0.05.msh", ".mesh", "medit:ref"), ("lshape-h0.05.msh", ".xdmf", "gmsh:physical"),
    ("disk-h0.08.msh", ".vtu", "gmsh:physical"), ("disk-h0.08.msh", ".inp", "cell_sets"),
    ("interval-200.msh", ".vtu", "gmsh:physical"), ("interval-200.msh", ".med", "cell_tags"),
]


@pytest.mark.parametrize("src,suffix,convention", MESHIO_FORMATS,
                         ids=[f"{s.split('-')[0]}{x}-{c}" for s, x, c in MESHIO_FORMATS])
def test_meshes_of_other_formats_give_the_same_control_volumes(tmp_path, src, suffix, convention):
    """A shipped gmsh mesh converted by meshio reads back as the same mesh: the same points,
    cells and boundary tags, hence the same control volumes (both kinds) to round-off."""
    from hybrid.mesh.control_volumes import build_control_volumes

    reference = read_mesh_file(MESHES / src)
    copy = read_mesh_file(_meshio_copy(MESHES / src, tmp_path / f"mesh{suffix}", convention))
    np.testing.assert_array_equal(copy.points, reference.points)
    np.testing.assert_array_equal(copy.cells, reference.cells)
    ref_facets = {tuple(sorted(f)): t
                  for f, t in zip(reference.facets.tolist(), reference.facet_tags)}
    copy_facets = {tuple(sorted(f)): t for f, t in zip(copy.facets.tolist(), copy.facet_tags)}
    if convention == "cell_sets":   # the tags are numbered anew; the names carry over
        assert sorted(copy.boundary_names) == sorted(reference.boundary_names)
        rename = {copy.boundary_names[n]: t for n, t in reference.boundary_names.items()}
        copy_facets = {f: rename[t] for f, t in copy_facets.items()}
    assert copy_facets == ref_facets
    for kind in ("dual", "cells"):
        a, b = build_control_volumes(reference, kind), build_control_volumes(copy, kind)
        assert (a.num_cvs, a.num_faces) == (b.num_cvs, b.num_faces)
        np.testing.assert_allclose(b.volume, a.volume, rtol=0, atol=1e-15 * a.volume.max())
        np.testing.assert_allclose(b.face_area, a.face_area, rtol=0, atol=1e-15 * a.face_area.max())


def test_a_file_without_boundary_tags_says_what_it_has(tmp_path):
    """Triangles and boundary lines but no tags: one message listing the blocks, data and sets."""
    import meshio

    m = meshio.read(MESHES / "lshape-h0.05.msh")
    lines = np.concatenate([b.data for b in m.cells if b.type == "line"])
    triangles = np.concatenate([b.data for b in m.cells if b.type == "triangle"])
    meshio.write(tmp_path / "plain.vtu",
                 meshio.Mesh(m.points, [("triangle", triangles), ("line", lines)],
                             cell_data={"quality": [np.ones(len(triangles)),
                                                    np.ones(len(lines))]}))
    meshio.write(tmp_path / "cells-only.vtu", meshio.Mesh(m.points, [("triangle", triangles)]))
    with pytest.raises(CaseError) as info:
        read_mesh_file(tmp_path / "plain.vtu", file="case.toml")
    message = str(info.value)
    assert "plain.vtu has no tags on its facets" in message
    assert "cell blocks: triangle (734), line (80); cell data: quality; cell sets: none" in message
    with pytest.raises(CaseError,
                       match=r"cells-only\.vtu has no line cells \(the boundary facets\)"):
        read_mesh_file(tmp_path / "cells-only.vtu")
    with pytest.raises(CaseError, match=r"mesh.tag_data: .*plain\.vtu has no cell data 'ref'"):
        read_mesh_file(tmp_path / "plain.vtu", tag_data="ref")
    meshio.write(tmp_path / "quads.vtu", meshio.Mesh(np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]]),
                                                     [("quad", np.array([[0, 1, 2, 3]]))]))
    with pytest.raises(CaseError,
                       match=r"its 2-D cells are quad; only linear simplices \(triangle\)"):
        read_mesh_file(tmp_path / "quads.vtu")


def test_a_case_on_a_vtu_mesh_solves_like_the_msh_one(tmp_path):
    """heat-lshape on the L-shape as .vtu (tags in CellEntityIds, names from [mesh] boundaries,
    and tag_data naming the array): the same dataset as on the .msh, to the last bit."""
    import h5py

    from helpers import run_cli, small_case

    src = small_case("stefan-lshape-2d", tmp_path / "msh", train=1, test=1,
                     time={"t_end": "0.01", "outputs": "2"})
    vtu = _meshio_copy(MESHES / "lshape-h0.05.msh", tmp_path / "lshape.vtu", "CellEntityIds")
    text = (src / "case.toml").read_text()
    other = tmp_path / "vtu"
    other.mkdir()
    mesh_line = next(line for line in text.splitlines() if line.startswith("file = "))
    # .vtu keeps tags, not names
    names = "boundaries = { left = 1, right = 2, bottom = 3, top = 4, inner = 5 }"
    (other / "case.toml").write_text(text.replace(mesh_line, f'file = "{vtu}"\ntag_data = '
                                                             f'"CellEntityIds"\n{names}'))
    for case in (src, other):
        proc = run_cli(["solve", str(case), "--quiet"])
        assert proc.returncode == 0, proc.stderr[-2000:]
    with h5py.File(src / "results/solve/dataset.h5") as a, \
            h5py.File(other / "results/solve/dataset.h5") as b:
        for name in ("train/u", "test/u", "train/flux", "control_volumes/volume"):
            np.testing.assert_array_equal(a[name][()], b[name][()])


def test_a_quadratic_mesh_is_read_through_its_corners(tmp_path):
    """triangle6 cells and line3 facets (midside nodes appended): the same control volumes as
    the linear mesh, since the corners are the same points."""
    import meshio

    from hybrid.mesh.control_volumes import build_control_volumes

    linear = read_mesh_file(MESHES / "lshape-h0.05.msh")
    points = linear.points
    tri, lines = linear.cells, linear.facets
    mid_tri = np.concatenate([(points[tri[:, a]] + points[tri[:, b]]) / 2
                              for a, b in ((0, 1), (1, 2), (2, 0))])
    mid_line = (points[lines[:, 0]] + points[lines[:, 1]]) / 2
    n, m = len(points), len(tri)
    tri6 = np.hstack([tri, n + np.arange(3 * m).reshape(3, m).T])
    line3 = np.hstack([lines, n + 3 * m + np.arange(len(lines))[:, None]])
    allpoints = np.vstack([points, mid_tri, mid_line])
    meshio.write(tmp_path / "quadratic.vtu",
                 meshio.Mesh(allpoints, [("triangle6", tri6), ("line3", line3)],
                             cell_data={"CellEntityIds": [np.zeros(m, np.int32),
                                                          linear.facet_tags]}))
    quadratic = read_mesh_file(tmp_path / "quadratic.vtu")
    np.testing.assert_array_equal(quadratic.points, linear.points)
    np.testing.assert_array_equal(quadratic.cells, linear.cells)
    a, b = build_control_volumes(linear, "dual"), build_control_volumes(quadratic, "dual")
    np.testing.assert_array_equal(a.volume, b.volume)
