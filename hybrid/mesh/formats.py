"""Mesh files of other meshers, through meshio: ``.vtu``, ``.vtk``, Abaqus ``.inp``, ``.med``,
medit ``.mesh``, Nastran ``.bdf``, meshio's ``.xdmf`` and every other format meshio reads.

The cells are the simplices of the highest dimension in the file (lines, triangles,
tetrahedra; quadratic ones, line3/triangle6/tetra10, are read through their corners: the
midside nodes are dropped and the faces are straight); the boundary facets are its cells of
one dimension less (points in 1-D, lines in 2-D, triangles in 3-D). Their tags come from the first
of:

1. the integer cell data named by ``[mesh] tag_data`` in the case;
2. integer cell data under one of the names the formats use: ``gmsh:physical`` (gmsh, and
   ``.vtu``/``.vtk``/``.xdmf`` files converted from gmsh), ``medit:ref`` (medit ``.mesh``),
   ``CellEntityIds`` (VTK files of several meshers), ``cell_tags`` (MED families),
   ``nastran:ref`` (Nastran property ids);
3. named cell sets of facets (Abaqus ``*ELSET``; meshio ``cell_sets``): set k (in the
   file's order) gets tag k + 1, and its name becomes the boundary's name.

Names of tags come from the file where it has them (gmsh ``field_data``, MED group names)
and from ``[mesh] boundaries = { name = tag }``, which is applied afterwards as for ``.msh``.
A file without boundary facets or without tags is refused with a message that lists the
cell blocks, cell data and cell sets it does have.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from hybrid.errors import CaseError
from hybrid.mesh.meshdata import MeshData

__all__ = ["read_meshio", "TAG_DATA_NAMES"]

TAG_DATA_NAMES = ("gmsh:physical", "medit:ref", "CellEntityIds", "cell_tags", "nastran:ref")
_SIMPLEX = {1: "line", 2: "triangle", 3: "tetra"}           # meshio's names of linear simplices
_CELL_TYPE = {"line": "interval", "triangle": "triangle", "tetra": "tetrahedron"}
_FACET = {1: "vertex", 2: "line", 3: "triangle"}
# quadratic simplices are read through their corners (listed first in meshio's node order)
_CORNERS = {"line3": ("line", 2), "triangle6": ("triangle", 3), "tetra10": ("tetra", 4)}
_DIMENSION = {"vertex": 0, "line": 1, "line3": 1, "triangle": 2, "triangle6": 2, "quad": 2,
              "quad8": 2, "quad9": 2, "polygon": 2, "tetra": 3, "tetra10": 3, "hexahedron": 3,
              "hexahedron20": 3, "hexahedron27": 3, "wedge": 3, "pyramid": 3}


def read_meshio(path: Path, *, tag_data: str | None = None, file: str | None = None,
                key: str = "mesh.file") -> MeshData:
    """Read ``path`` with meshio into MeshData (the file's point order, cells in block order).

    ``tag_data`` names the integer cell data that holds the boundary tags (default: the first
    of :data:`TAG_DATA_NAMES` present, else the named cell sets). Raises :class:`CaseError`
    naming the file for a file meshio cannot read, cells that are not linear simplices, and a
    file without tagged boundary facets.
    """
    try:
        import meshio
    except ImportError:   # pragma: no cover - the set-up installs Debian's python3-meshio
        raise CaseError(f"{path}: reading {path.suffix} files needs meshio (Debian: apt-get "
                        "install python3-meshio)", file=file, key=key) from None
    said = io.StringIO()
    try:   # some of meshio's readers print their complaint and call sys.exit
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            mesh = meshio.read(path)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - meshio raises many kinds for a file it cannot parse
        reason = next((line.strip() for text in (str(error), said.getvalue())
                       for line in text.splitlines()
                       if line.strip() and line.strip() != "1"), type(error).__name__)
        raise CaseError(f"meshio cannot read {path}: {reason}", file=file, key=key) from None
    blocks = [(_CORNERS[block.type][0], np.asarray(block.data)[:, :_CORNERS[block.type][1]])
              if block.type in _CORNERS else (block.type, np.asarray(block.data))
              for block in mesh.cells]
    dims = [_DIMENSION.get(kind, -1) for kind, _ in blocks]
    if not blocks or max(dims) < 1:
        raise CaseError(f"{path} holds no cells of dimension 1, 2 or 3 ({_inventory(mesh)})",
                        file=file, key=key)
    tdim = max(dims)
    top = {kind for (kind, _), d in zip(blocks, dims) if d == tdim}
    if top != {_SIMPLEX[tdim]}:
        raise CaseError(f"{path}: its {tdim}-D cells are {', '.join(sorted(top))}; only linear "
                        f"simplices ({_SIMPLEX[tdim]}) are supported ({_inventory(mesh)})",
                        file=file, key=key)
    cell_nodes = np.concatenate([data for (kind, data), d in zip(blocks, dims)
                                 if d == tdim]).astype(np.int64)
    facet_kind = _FACET[tdim]
    facet_blocks = [i for i, (kind, _) in enumerate(blocks) if kind == facet_kind]
    tags, names = _facet_tags(mesh, facet_blocks, tag_data, tdim, path, file, key)
    if not facet_blocks or tags is None:
        what = (f"no {facet_kind} cells (the boundary facets)" if not facet_blocks
                else "no tags on its facets")
        raise CaseError(f"mesh file {path} has {what} ({_inventory(mesh)}); expected {facet_kind} "
                        f"cells tagged by integer cell data ({', '.join(TAG_DATA_NAMES)}, or the "
                        "name given as [mesh] tag_data) or by named cell sets", file=file, key=key)
    facets = np.concatenate([blocks[i][1].reshape(len(blocks[i][1]), -1)
                             for i in facet_blocks]).astype(np.int64)
    # (a quadratic mesh's facets are cut to their corners above, like its cells)
    keep = tags != 0 if tag_data is None else np.ones(len(tags), dtype=bool)  # 0: an untagged facet
    facets, tags = facets[keep], tags[keep]

    used = np.unique(cell_nodes)   # the vertices, in the file's point order
    if np.any(~np.isin(facets, used)):
        raise CaseError(f"{path}: some tagged facets have points that belong to no "
                        f"{_SIMPLEX[tdim]} cell",
                        file=file, key=key)
    points = np.asarray(mesh.points, dtype=np.float64)[used]
    if points.shape[1] > tdim and np.any(points[:, tdim:] != 0.0):
        raise CaseError(f"{path}: the {tdim}-D cells do not lie in the first {tdim} coordinates; "
                        "only flat meshes (geometric dimension = topological dimension) are "
                        "supported", file=file, key=key)
    return MeshData(points[:, :tdim], np.searchsorted(used, cell_nodes), _CELL_TYPE[_SIMPLEX[tdim]],
                    np.searchsorted(used, facets), tags.astype(np.int32), names)


def _facet_tags(mesh, facet_blocks: list[int], tag_data: str | None, tdim: int, path: Path, file,
                key):
    """(tag per facet of the facet blocks, in order; names) or (None, {}) when nothing tags them."""
    if not facet_blocks:
        return None, {}
    candidates = [tag_data] if tag_data is not None else [n for n in TAG_DATA_NAMES
                                                          if n in mesh.cell_data]
    if tag_data is not None and tag_data not in mesh.cell_data:
        raise CaseError(f"{path} has no cell data {tag_data!r} ({_inventory(mesh)})", file=file,
                        key="mesh.tag_data")
    for name in candidates:
        values = [np.asarray(mesh.cell_data[name][i]) for i in facet_blocks]
        if not all(np.issubdtype(v.dtype, np.integer) or np.all(v == np.round(v)) for v in values):
            raise CaseError(f"{path}: cell data {name!r} is not integer on the facets", file=file,
                            key="mesh.tag_data" if tag_data else key)
        tags = np.concatenate([v.reshape(-1) for v in values]).astype(np.int64)
        return tags, _tag_names(mesh, name, tdim, tags)
    sets = [(set_name, members) for set_name, members in mesh.cell_sets.items()
            if any(i < len(members) and members[i] is not None and len(members[i])
                   for i in facet_blocks)
            and not set_name.startswith("gmsh:")]
    if not sets:
        return None, {}
    offsets = np.cumsum([0] + [len(mesh.cells[i].data) for i in facet_blocks])
    tags = np.zeros(offsets[-1], dtype=np.int64)
    names = {}
    for k, (set_name, members) in enumerate(sets, start=1):
        for j, i in enumerate(facet_blocks):
            chosen = np.asarray(members[i] if i < len(members) and members[i] is not None else [],
                                dtype=np.int64)
            tags[offsets[j] + chosen] = k
        names[str(set_name)] = k
    return tags, names


def _tag_names(mesh, data_name: str, tdim: int, tags: np.ndarray) -> dict[str, int]:
    """Names of the facets' tags that the file gives: gmsh's field_data (name -> [tag, dim]),
    MED's group names (family -> names)."""
    names: dict[str, int] = {}
    if data_name == "gmsh:physical":
        for name, value in (mesh.field_data or {}).items():
            value = np.asarray(value).reshape(-1)
            if len(value) >= 2 and int(value[1]) == tdim - 1:
                names[str(name)] = int(value[0])
    groups = getattr(mesh, "cell_tags", None)
    if data_name == "cell_tags" and isinstance(groups, dict):
        for tag, group_names in groups.items():
            if len(group_names) == 1:
                names[str(group_names[0])] = int(tag)
    present = set(np.unique(tags).tolist())
    return {name: tag for name, tag in names.items() if tag in present}


def _inventory(mesh) -> str:
    """What the file has: its cell blocks, cell data and cell sets, for messages."""
    blocks = ", ".join(f"{block.type} ({len(block.data)})" for block in mesh.cells) or "none"
    data = ", ".join(mesh.cell_data) or "none"
    sets = ", ".join(mesh.cell_sets) or "none"
    return f"cell blocks: {blocks}; cell data: {data}; cell sets: {sets}"
