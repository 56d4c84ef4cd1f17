"""The VTK XML writer, for readers without XDMF: a ``.pvd`` collection of ``.vtu`` files.

A series ``NAME`` is ``NAME.pvd`` (the collection: one ``DataSet`` per time step with its
physical time) and ``NAME/step-IIII.vtu`` (one unstructured grid per step: the mesh, then the
point and cell fields of that step). Coordinates are 3-D (1-D meshes at y = z = 0), cells
are VTK_LINE, VTK_TRIANGLE or VTK_TETRA, fields Float64, inline base64 with UInt64 headers.
Each file is written under a temporary name and renamed, the ``.pvd`` last, so a failed
export never leaves a collection naming missing steps.
"""

from __future__ import annotations

import base64
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from hybrid.files import atomic_path

__all__ = ["write_vtu_series", "VTK_CELL_TYPES"]

# VTK_LINE, VTK_TRIANGLE, VTK_TETRA
VTK_CELL_TYPES = {"interval": 3, "triangle": 5, "tetrahedron": 10}


_VTK_TYPES = {np.dtype("<f8"): "Float64", np.dtype("<i8"): "Int64", np.dtype("u1"): "UInt8"}


def _array(name: str, values: np.ndarray, components: int | None = None) -> str:
    """One inline binary DataArray: base64 of (UInt64 byte count, then the little-endian bytes)."""
    values = np.ascontiguousarray(values)
    values = values.astype(values.dtype.newbyteorder("<"), copy=False)
    raw = values.tobytes()
    payload = base64.b64encode(np.array([len(raw)], dtype="<u8").tobytes() + raw).decode("ascii")
    comps = f' NumberOfComponents="{components}"' if components else ""
    return (f'<DataArray type="{_VTK_TYPES[values.dtype]}" Name={quoteattr(name)}{comps} '
            'format="binary">'
            f"{payload}</DataArray>")


def _fields(data: dict[str, np.ndarray], step: int) -> list[str]:
    out = []
    for name, arr in data.items():
        values = np.asarray(arr[step], dtype=np.float64)
        out.append(_array(name, values, values.shape[1] if values.ndim == 2 else None))
    return out


def write_vtu_series(path: Path | str, points: np.ndarray, cells: np.ndarray, cell_type: str,
                     times: np.ndarray, point_data: dict[str, np.ndarray] | None = None,
                     cell_data: dict[str, np.ndarray] | None = None) -> tuple[Path, list[Path]]:
    """Write ``path`` (.pvd) and its step files: fields of shape (T, n_points) or (T, n_cells)
    (or (T, n, c) for vectors), one step per entry of ``times``. Returns (the .pvd, the steps)."""
    path = Path(path).with_suffix(".pvd")
    point_data, cell_data = dict(point_data or {}), dict(cell_data or {})
    T = len(times)
    for name, arr in {**point_data, **cell_data}.items():
        if np.asarray(arr).shape[0] != T:
            raise ValueError(f"field {name!r} has {np.asarray(arr).shape[0]} time steps, expected "
                             f"{T}")
    pts = np.asarray(points, dtype=np.float64)
    pts = np.hstack([pts, np.zeros((len(pts), 3 - pts.shape[1]))]) if pts.shape[1] < 3 else pts
    cells = np.asarray(cells, dtype=np.int64)
    nper = cells.shape[1]
    mesh = ["<Points>", _array("Points", pts, 3), "</Points>", "<Cells>",
            _array("connectivity", cells.reshape(-1)),
            _array("offsets", np.arange(nper, nper * len(cells) + 1, nper, dtype=np.int64)),
            _array("types", np.full(len(cells), VTK_CELL_TYPES[cell_type], dtype=np.uint8)),
            "</Cells>"]
    folder = path.with_suffix("")
    steps = []
    for i in range(T):
        lines = ['<?xml version="1.0"?>',
                 '<VTKFile type="UnstructuredGrid" version="1.0" byte_order="LittleEndian" '
                 'header_type="UInt64">',
                 "<UnstructuredGrid>",
                 f'<Piece NumberOfPoints="{len(pts)}" NumberOfCells="{len(cells)}">',
                 *mesh, "<PointData>", *_fields(point_data, i), "</PointData>",
                 "<CellData>", *_fields(cell_data, i), "</CellData>",
                 "</Piece>", "</UnstructuredGrid>", "</VTKFile>", ""]
        step = folder / f"step-{i:04d}.vtu"
        with atomic_path(step) as tmp:
            tmp.write_text("\n".join(lines))
        steps.append(step)
    collection = ['<?xml version="1.0"?>',
                  '<VTKFile type="Collection" version="0.1" byte_order="LittleEndian">',
                  "<Collection>"]
    collection += [f'<DataSet timestep="{float(t):.17g}" group="" part="0" '
                   f'file="{folder.name}/{s.name}"/>'
                   for t, s in zip(times, steps)]
    collection += ["</Collection>", "</VTKFile>", ""]
    with atomic_path(path) as tmp:   # last: it names the steps, complete by now
        tmp.write_text("\n".join(collection))
    return path, steps
