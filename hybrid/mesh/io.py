"""Mesh files in and out: gmsh ``.msh`` and DOLFINx XDMF (+ HDF5), and the case's ``[mesh]``;
every other format meshio reads goes through :mod:`hybrid.mesh.formats`.

Files are read into a :class:`~hybrid.mesh.meshdata.MeshData` in the file's own numbering
(nodes by gmsh node tag, cells by element tag; XDMF nodes and cells in the order stored), so
that datasets do not depend on how DOLFINx later partitions and reorders the mesh.

Boundary names. A ``.msh`` file carries them as physical names of the groups of dimension
``tdim - 1``. An XDMF file written by :func:`write_xdmf_mesh` carries them in an XDMF
``<Information Name="boundary_names">`` element (a JSON object name -> tag; ParaView ignores
it). The case's ``[mesh] boundaries = { name = tag }`` is applied on top by
:func:`apply_boundary_names`: it names tags of files without names, and a tag it names loses
the name the file gave it.

:func:`hybrid.mesh.load.load_mesh` is the one entry point for the stages: rank 0 reads or
generates, every rank receives the same MeshData, and a mistake found on rank 0 is raised on
every rank.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from hybrid.errors import CaseError
from hybrid.mesh.meshdata import CELL_TYPES, MeshData

__all__ = [
    "read_mesh_file",
    "write_msh",
    "write_xdmf_mesh",
    "apply_boundary_names",
    "exterior_facets",
    "gmsh_session",
    "meshdata_from_gmsh",
]

BOUNDARY_NAMES_INFO = "boundary_names"  # name of the XDMF <Information> element
DOMAIN_GROUP_NAME = "domain"  # physical group of the cells in the .msh files we write

# gmsh element type <-> (cell type); linear simplices only
_GMSH_CELL = {1: "interval", 2: "triangle", 4: "tetrahedron"}
_GMSH_TYPE = {"interval": 1, "triangle": 2, "tetrahedron": 4}
_GMSH_FACET_TYPE = {0: 15, 1: 1, 2: 2}  # facet dimension -> point, line, triangle
_XDMF_CELL = {"polyline": "interval", "triangle": "triangle", "tetrahedron": "tetrahedron"}


# --------------------------------------------------------------------------- gmsh
@contextlib.contextmanager
def gmsh_session():
    """An initialised, silent gmsh API that is always finalised (even on error).

    gmsh keeps one global state; every function here owns it for its duration.
    ``gmsh`` is imported here, not at module level, because importing it resets the
    process's SIGINT handler.
    """
    import gmsh

    gmsh.initialize([], readConfigFiles=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("General.NumThreads", 1)
        yield gmsh
    finally:
        gmsh.finalize()


def meshdata_from_gmsh(gmsh, *, source: str, file: str | None = None,
                       key: str | None = None) -> MeshData:
    """The current gmsh model as MeshData: linear simplices of the top dimension,
    facets of the physical groups of dimension ``tdim - 1``, their physical names.

    Vertices are the nodes used by cells, numbered 0.. in increasing node tag; cells in
    increasing element tag. ``source`` names the model in error messages.
    """
    element_dims = {}
    for etype in gmsh.model.mesh.getElementTypes():
        name, dim = gmsh.model.mesh.getElementProperties(etype)[:2]
        element_dims.setdefault(dim, []).append((etype, name))
    if not element_dims or max(element_dims) == 0:
        raise CaseError(f"{source}: contains no cells (elements of dimension 1, 2 or 3)", file=file,
                        key=key)
    tdim = max(element_dims)
    cell_types = element_dims[tdim]
    if len(cell_types) != 1 or cell_types[0][0] not in _GMSH_CELL:
        found = ", ".join(name for _, name in cell_types)
        raise CaseError(f"{source}: cells of dimension {tdim} are {found}; "
                        "only linear simplices (2-node lines, 3-node triangles, 4-node tetrahedra) "
                        "are supported",
                        file=file, key=key)
    cell_type = _GMSH_CELL[cell_types[0][0]]
    nverts = CELL_TYPES[cell_type][1]

    element_tags, cell_nodes = gmsh.model.mesh.getElementsByType(cell_types[0][0])
    cell_nodes = np.asarray(cell_nodes, dtype=np.int64).reshape(-1, nverts)
    cell_nodes = cell_nodes[np.argsort(np.asarray(element_tags), kind="stable")]

    node_tags, coords, _ = gmsh.model.mesh.getNodes()
    node_tags = np.asarray(node_tags, dtype=np.int64)
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    used = np.unique(cell_nodes)  # sorted node tags: the vertex numbering
    order = np.argsort(node_tags)
    position = np.searchsorted(node_tags, used, sorter=order)
    points = coords[order[np.minimum(position, len(order) - 1)]]
    if np.any(node_tags[order[np.minimum(position, len(order) - 1)]] != used):
        raise CaseError(f"{source}: cells refer to nodes that are not defined", file=file, key=key)
    points = _flat_points(points, tdim, source, file, key)
    cells = np.searchsorted(used, cell_nodes)

    facet_dim = tdim - 1
    facets, facet_tags, names = [], [], {}
    for dim, tag in gmsh.model.getPhysicalGroups(facet_dim):
        for entity in gmsh.model.getEntitiesForPhysicalGroup(dim, tag):
            types, _, nodes = gmsh.model.mesh.getElements(dim, entity)
            for etype, enodes in zip(types, nodes):
                if etype != _GMSH_FACET_TYPE[facet_dim]:
                    raise CaseError(f"{source}: physical group {tag} of dimension {dim} holds "
                                    f"elements of gmsh type {etype}, not linear facets of the "
                                    f"{cell_type} cells",
                                    file=file, key=key)
                enodes = np.asarray(enodes, dtype=np.int64).reshape(-1, tdim)
                index = np.searchsorted(used, enodes)
                if np.any(index >= len(used)) or \
                        np.any(used[np.minimum(index, len(used) - 1)] != enodes):
                    raise CaseError(f"{source}: physical group {tag} has facets whose nodes belong "
                                    "to no cell",
                                    file=file, key=key)
                facets.append(index)
                facet_tags.append(np.full(len(index), tag, dtype=np.int32))
        name = gmsh.model.getPhysicalName(dim, tag)
        if name:
            if name in names:
                raise CaseError(f"{source}: boundary name {name!r} is given to physical groups "
                                f"{names[name]} and {tag}", file=file, key=key)
            names[name] = int(tag)
    facets = np.concatenate(facets) if facets else np.empty((0, tdim), dtype=np.int64)
    facet_tags = np.concatenate(facet_tags) if facet_tags else np.empty(0, dtype=np.int32)
    return MeshData(points, cells, cell_type, facets, facet_tags, names)


def _flat_points(points: np.ndarray, tdim: int, source: str, file, key) -> np.ndarray:
    """Drop trailing all-zero coordinates so that gdim = tdim (gmsh and XDMF may pad to 3-D)."""
    if points.shape[1] > tdim and np.any(points[:, tdim:] != 0.0):
        raise CaseError(f"{source}: the {tdim}-D cells do not lie in the plane/line of the first "
                        f"{tdim} coordinates; only flat meshes (geometric dimension = topological "
                        "dimension) are supported", file=file, key=key)
    return np.ascontiguousarray(points[:, :tdim])


def write_msh(meshdata: MeshData, path: str | os.PathLike) -> None:
    """Write ``meshdata`` as a gmsh 4.1 binary ``.msh`` file (node tag = vertex index + 1).

    Cells form the physical group ``domain`` (tag 1, dimension tdim); each facet tag is one
    physical group of dimension tdim-1 named after its boundary. Written to a temporary
    name and renamed, so an interrupted write leaves no half file.
    """
    path = Path(path)
    tdim, fdim = meshdata.tdim, meshdata.tdim - 1
    coords = np.zeros((meshdata.num_vertices, 3))
    coords[:, :meshdata.gdim] = meshdata.points
    with gmsh_session() as gmsh:
        gmsh.model.add(path.stem)
        gmsh.model.addDiscreteEntity(tdim, 1)
        gmsh.model.mesh.addNodes(tdim, 1, np.arange(1, meshdata.num_vertices + 1), coords.ravel())
        gmsh.model.mesh.addElementsByType(1, _GMSH_TYPE[meshdata.cell_type], [],
                                          (meshdata.cells + 1).ravel())
        gmsh.model.addPhysicalGroup(tdim, [1], 1)
        gmsh.model.setPhysicalName(tdim, 1, DOMAIN_GROUP_NAME)
        for entity, tag in enumerate(np.unique(meshdata.facet_tags), start=1):
            gmsh.model.addDiscreteEntity(fdim, entity)
            members = meshdata.facets[meshdata.facet_tags == tag]
            gmsh.model.mesh.addElementsByType(entity, _GMSH_FACET_TYPE[fdim], [],
                                              (members + 1).ravel())
            gmsh.model.addPhysicalGroup(fdim, [entity], int(tag))
            name = meshdata.tag_name(int(tag))
            if name != str(tag):
                gmsh.model.setPhysicalName(fdim, int(tag), name)
        gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
        gmsh.option.setNumber("Mesh.Binary", 1)  # ASCII keeps 16 digits: 1 ulp off
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.msh")
        try:
            gmsh.write(str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _read_msh(path: Path, file, key) -> MeshData:
    # gmsh runs any file that is not a mesh as a .geo script (which can call the shell)
    with open(path, "rb") as stream:
        if not stream.read(256).lstrip().startswith(b"$MeshFormat"):
            raise CaseError(f"{path} is not a gmsh mesh file: it does not start with $MeshFormat "
                            "(MSH 2 or 4 format expected)", file=file, key=key)
    with gmsh_session() as gmsh:
        try:
            gmsh.open(str(path))
        except Exception as error:  # gmsh raises a bare Exception with its last error
            raise CaseError(f"cannot read gmsh mesh {path}: {error or 'not a gmsh .msh file'}",
                            file=file, key=key) from None
        return meshdata_from_gmsh(gmsh, source=str(path), file=file, key=key)


# --------------------------------------------------------------------------- XDMF
def write_xdmf_mesh(meshdata: MeshData, path: str | os.PathLike) -> None:
    """Write ``meshdata`` as DOLFINx XDMF: grid ``mesh``, facet meshtags grid ``facet_tags``,
    and the boundary names as ``<Information Name="boundary_names">`` (JSON).

    DOLFINx stores the mesh in its own (reordered) numbering; reading it back gives the
    same mesh up to numbering. Both files are written in a temporary folder and renamed.
    """
    from mpi4py import MPI
    import dolfinx.io

    from hybrid import compat
    from hybrid.mesh.distribute import to_dolfinx

    path = Path(path).with_suffix(".xdmf")
    mesh, facet_tags = to_dolfinx(meshdata, MPI.COMM_SELF, ghost_mode="none")
    mesh.name = "mesh"
    facet_tags.name = "facet_tags"
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as tmpdir:
        tmp = Path(tmpdir) / path.name
        with dolfinx.io.XDMFFile(MPI.COMM_SELF, str(tmp), "w") as xdmf:
            xdmf.write_mesh(mesh)
            compat.write_meshtags(xdmf, facet_tags, mesh)
            xdmf.write_information(BOUNDARY_NAMES_INFO,
                                   json.dumps(meshdata.boundary_names, sort_keys=True))
        os.replace(tmp.with_suffix(".h5"), path.with_suffix(".h5"))
        os.replace(tmp, path)


def _xdmf_grids(path: Path, file, key) -> tuple[str, str, str]:
    """(mesh grid name, facet-tags grid name, cell type) from the XDMF's XML, after
    checking that the HDF5 files it points to exist (HDF5 itself fails noisily)."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise CaseError(f"cannot read XDMF mesh {path}: {error}", file=file, key=key) from None
    for item in root.iter("DataItem"):
        if item.get("Format") == "HDF" and item.text:
            h5 = path.parent / item.text.strip().split(":")[0]
            if not h5.is_file():
                raise CaseError(f"XDMF mesh {path} refers to {h5}, which does not exist", file=file,
                                key=key)
    grids = []  # (name, topology type)
    for grid in root.iter("Grid"):
        topology = grid.find("Topology")
        if topology is not None:
            grids.append((grid.get("Name", ""), topology.get("TopologyType", "").lower()))
    dims = {"polyvertex": 0, "polyline": 1, "triangle": 2, "tetrahedron": 3}
    cells = [(n, t) for n, t in grids if t in _XDMF_CELL and _grid_has_geometry(root, n)]
    if not cells:
        found = ", ".join(t for _, t in grids) or "no grids"
        raise CaseError(f"XDMF mesh {path}: expected a grid of linear triangles, tetrahedra or "
                        f"intervals (as DOLFINx's XDMFFile.write_mesh writes), found {found}",
                        file=file, key=key)
    mesh_name, mesh_topology = max(cells, key=lambda g: dims[g[1]])
    tdim = dims[mesh_topology]
    tags = [n for n, t in grids if dims.get(t) == tdim - 1 and n != mesh_name]
    if not tags:
        raise CaseError(f"XDMF mesh {path}: no tagged boundary facets; expected a meshtags grid of "
                        f"dimension {tdim - 1} (XDMFFile.write_meshtags) next to the mesh grid "
                        f"{mesh_name!r}",
                        file=file, key=key)
    return mesh_name, tags[0], _XDMF_CELL[mesh_topology]


def _grid_has_geometry(root, name: str) -> bool:
    for grid in root.iter("Grid"):
        if grid.get("Name") == name:
            return grid.find("Geometry") is not None
    return False


def _read_xdmf(path: Path, file, key) -> MeshData:
    """Read on COMM_SELF with DOLFINx and undo its reordering: geometry node i is file node
    ``input_global_indices[i]``, local cell c is file cell ``original_cell_index[c]``."""
    from mpi4py import MPI
    import dolfinx.io
    import dolfinx.mesh

    from hybrid import compat
    from hybrid.mesh.distribute import local_vertex_original_index

    mesh_name, tags_name, cell_type = _xdmf_grids(path, file, key)
    try:
        with dolfinx.io.XDMFFile(MPI.COMM_SELF, str(path), "r") as xdmf:
            mesh = xdmf.read_mesh(ghost_mode=dolfinx.mesh.GhostMode.none, name=mesh_name)
            tdim = mesh.topology.dim
            mesh.topology.create_connectivity(tdim - 1, tdim)  # read_meshtags needs the facets
            tags = xdmf.read_meshtags(mesh, tags_name)
            try:
                names_text = xdmf.read_information(BOUNDARY_NAMES_INFO)
            except RuntimeError:  # no <Information>: names come from the case
                names_text = "{}"
    except RuntimeError as error:
        raise CaseError(f"cannot read XDMF mesh {path}: {error}", file=file, key=key) from None
    try:
        names = json.loads(names_text)
    except ValueError:
        names = None
    if not isinstance(names, dict) or not all(isinstance(t, int) for t in names.values()):
        raise CaseError(f"XDMF mesh {path}: <Information Name={BOUNDARY_NAMES_INFO!r}> must be a "
                        "JSON object of name -> integer tag", file=file, key=key)

    input_node = np.asarray(mesh.geometry.input_global_indices, dtype=np.int64)
    file_nodes = np.unique(input_node)  # compact, in case the file has unused nodes
    node_to_vertex = np.searchsorted(file_nodes, input_node)
    points = np.empty((len(file_nodes), mesh.geometry.dim))
    points[node_to_vertex] = mesh.geometry.x[:, :mesh.geometry.dim]
    points = _flat_points(points, tdim, str(path), file, key)

    num_cells = mesh.topology.index_map(tdim).size_local
    cell_nodes = compat.geometry_dofmap(mesh)[:num_cells]
    cells = np.empty((num_cells, tdim + 1), dtype=np.int64)
    cells[np.asarray(mesh.topology.original_cell_index)[:num_cells]] = node_to_vertex[cell_nodes]

    vertex_file_node = local_vertex_original_index(mesh)
    if tdim == 1:
        facet_vertices = np.asarray(tags.indices, dtype=np.int64)[:, None]
    else:
        mesh.topology.create_connectivity(tdim - 1, 0)
        facet_vertices = mesh.topology.connectivity(tdim - 1, 0).array.reshape(
            -1, tdim)[tags.indices]
    facets = np.searchsorted(file_nodes, vertex_file_node[facet_vertices])
    return MeshData(points, cells, cell_type, facets, np.asarray(tags.values, dtype=np.int32),
                    {str(n): int(t) for n, t in names.items()})


# --------------------------------------------------------------------------- entry points
def read_mesh_file(path: str | os.PathLike, *, file: str | None = None, key: str = "mesh.file",
                   tag_data: str | None = None) -> MeshData:
    """Read a mesh file into MeshData (serial): gmsh ``.msh``, DOLFINx ``.xdmf``, and every
    format meshio reads (:mod:`hybrid.mesh.formats`; ``tag_data`` names the integer cell data
    with the boundary tags there).

    A missing, unreadable or unsupported file, or one without tagged boundary facets,
    raises :class:`CaseError` naming ``path`` and what was expected; ``file``/``key`` say
    where in the case the path was given.
    """
    from hybrid.mesh.formats import read_meshio

    path = Path(path)
    if not path.is_file():
        raise CaseError(f"mesh file {path} does not exist", file=file, key=key)
    suffix = path.suffix.lower()
    if suffix == ".msh":
        meshdata = _read_msh(path, file, key)
    elif suffix == ".xdmf" and not _written_by_meshio(path):
        meshdata = _read_xdmf(path, file, key)
    else:
        meshdata = read_meshio(path, tag_data=tag_data, file=file, key=key)
    if meshdata.facets.shape[0] == 0:
        what = ("physical groups of dimension %d" % (meshdata.tdim - 1) if suffix == ".msh"
                else "a facet meshtags grid" if suffix == ".xdmf" else "tagged facets")
        raise CaseError(f"mesh file {path} has no tagged boundary facets; expected {what} "
                        "marking the boundaries", file=file, key=key)
    _check_mesh(meshdata, str(path), file, key)
    return meshdata


def _written_by_meshio(path: Path) -> bool:
    """An XDMF file in meshio's layout (its one Grid is named "Grid", or grids in a temporal
    collection), rather than DOLFINx's (a Grid named after the mesh, one per meshtags)."""
    try:
        grids = list(ElementTree.parse(path).getroot().iter("Grid"))
    except (ElementTree.ParseError, OSError):
        return False   # the DOLFINx reader gives the message
    return any(g.get("Name") == "Grid" or g.get("GridType") == "Collection" for g in grids)


def exterior_facets(meshdata: MeshData) -> np.ndarray:
    """The facets that belong to exactly one cell, as sorted vertex tuples, shape (k, tdim)."""
    tdim = meshdata.tdim
    local = [[j for j in range(tdim + 1) if j != i] for i in range(tdim + 1)]
    all_facets = np.sort(meshdata.cells[:, local].reshape(-1, tdim), axis=1)
    unique, counts = np.unique(all_facets, axis=0, return_counts=True)
    return unique[counts == 1]


def _simplex_volumes(meshdata: MeshData) -> np.ndarray:
    corners = meshdata.points[meshdata.cells]  # (m, tdim+1, gdim)
    edges = corners[:, 1:, :] - corners[:, :1, :]
    factorial = {1: 1.0, 2: 2.0, 3: 6.0}[meshdata.tdim]
    return np.abs(np.linalg.det(edges)) / factorial


def _folded_facets(meshdata: MeshData) -> int:
    """How many facets are shared by more than two cells, or by two cells on the same side of
    them: in a mesh that tiles its domain, the two cells of an interior facet lie on opposite
    sides (the signed volumes of (facet, opposite vertex) differ in sign)."""
    tdim, cells, points = meshdata.tdim, meshdata.cells, meshdata.points
    if points.shape[1] != tdim:
        return 0
    local = [[j for j in range(tdim + 1) if j != i] for i in range(tdim + 1)]
    facets = np.sort(cells[:, local], axis=2).reshape(-1, tdim)            # (m (tdim+1), tdim)
    opposite = cells.reshape(-1)                                      # vertex i is opposite facet i
    base = points[facets[:, 0]]
    edges = np.concatenate([points[facets[:, 1:]] - base[:, None, :],
                            (points[opposite] - base)[:, None, :]], axis=1)
    side = np.sign(np.linalg.det(edges))
    _, inverse, counts = np.unique(facets, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    if np.any(counts > 2):
        return int(np.sum(counts > 2))
    shared = counts[inverse] == 2
    order = np.argsort(inverse[shared], kind="stable")
    pairs = side[shared][order].reshape(-1, 2)
    return int(np.sum(pairs[:, 0] == pairs[:, 1]))


def _check_mesh(meshdata: MeshData, source: str, file, key) -> None:
    """Reject meshes the finite-volume stages cannot use: degenerate cells and tagged
    facets inside the domain (boundary conditions live on the boundary)."""
    volumes = _simplex_volumes(meshdata)
    degenerate = volumes <= 1e-14 * volumes.max(initial=0.0)
    if np.any(degenerate):
        raise CaseError(f"{source}: {int(degenerate.sum())} cells have zero volume (e.g. cell "
                        f"{int(np.argmax(degenerate))})", file=file, key=key)
    folded = _folded_facets(meshdata)
    if folded:
        raise CaseError(f"{source}: the mesh is tangled: {folded} interior facets have both of "
                        "their cells on one side (inverted or overlapping cells)", file=file,
                        key=key)
    boundary = exterior_facets(meshdata)
    tagged = np.sort(meshdata.facets, axis=1)
    inside = ~_rows_in(tagged, boundary)
    if np.any(inside):
        tags = sorted({int(t) for t in meshdata.facet_tags[inside]})
        raise CaseError(f"{source}: {int(inside.sum())} tagged facets (tags {tags}) are not on the "
                        "boundary of the mesh; boundary tags must mark exterior facets", file=file,
                        key=key)
    unique_tagged = np.unique(tagged, axis=0)
    if len(unique_tagged) != len(tagged):
        raise CaseError(f"{source}: {len(tagged) - len(unique_tagged)} boundary facets carry more "
                        "than one tag; each facet may belong to one boundary only", file=file,
                        key=key)


def _rows_in(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """For each row of ``rows``, whether it occurs in ``table`` (both integer, same width)."""
    if len(table) == 0:
        return np.zeros(len(rows), dtype=bool)
    view = np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))
    rows_v = np.ascontiguousarray(rows).view(view).ravel()
    table_v = np.ascontiguousarray(table.astype(rows.dtype)).view(view).ravel()
    return np.isin(rows_v, table_v)


def apply_boundary_names(meshdata: MeshData, boundaries: dict | None, *, file: str | None = None,
                         key: str = "mesh.boundaries") -> MeshData:
    """Name the boundary tags as the case says: ``boundaries`` maps name -> tag.

    Every tag named must mark facets of the mesh. A tag the case names drops any name the
    file gave it (the case renames it); names of other tags are kept.
    """
    if not boundaries:
        return meshdata
    if not isinstance(boundaries, dict):
        raise CaseError(f"expected a table of boundary name = physical tag, found {boundaries!r}",
                        file=file, key=key)
    present = sorted({int(t) for t in np.unique(meshdata.facet_tags)})
    for name, tag in boundaries.items():
        if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)):
            raise CaseError(f"expected an integer physical tag, found {tag!r}", file=file,
                            key=f"{key}.{name}")
        if int(tag) not in present:
            have = ", ".join(f"{meshdata.tag_name(t)}={t}" if meshdata.tag_name(t) != str(t)
                             else str(t)
                             for t in present)
            raise CaseError(f"tag {tag} marks no facets of the mesh; its tagged boundaries are "
                            f"{have}",
                            file=file, key=f"{key}.{name}")
    renamed = {int(t) for t in boundaries.values()}
    names = {n: t for n, t in meshdata.boundary_names.items() if t not in renamed}
    names.update({str(n): int(t) for n, t in boundaries.items()})
    meshdata.boundary_names = names
    return meshdata
