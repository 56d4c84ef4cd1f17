"""The one XDMF writer: a time series of point and cell fields on a simplex mesh.

Each series is ``NAME.xdmf`` (XML, XDMF 3) plus ``NAME.h5`` (heavy data) that ParaView's
XDMF readers (``Xdmf3ReaderS``, the one ``paraview NAME.xdmf`` picks, and the older
``XDMFReader``) open as one dataset with physical time values. The mesh is stored once
(``/mesh/geometry``, ``/mesh/topology``); every time step's grid refers to it. 1-D meshes
are written as ``Polyline`` cells in 3-D coordinates (y = z = 0), 2-D as ``Triangle`` in
XY, 3-D as ``Tetrahedron`` in XYZ. Field ``NAME`` at step ``i`` is the dataset
``/point/NAME/i`` or ``/cell/NAME/i`` (one dataset per step, as DOLFINx writes them:
VTK's XDMF 3 reader cannot read attributes given as hyperslabs of one (T, n) dataset).
Both files are written under temporary names and renamed, so a failed export never
leaves a half-written series.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

import h5py
import numpy as np

from hybrid.files import atomic_path

__all__ = ["write_time_series", "read_time_series", "field_prefix"]

_TOPOLOGY = {"interval": ("Polyline", 2), "triangle": ("Triangle", 3),
             "tetrahedron": ("Tetrahedron", 4)}


def field_prefix(variant: str) -> str:
    """The array-name prefix of a variant: ``per-cell+boundary`` → ``per_cell_boundary``."""
    return variant.replace("+", "_").replace("-", "_")


def _item(h5name: str, path: str, shape: tuple[int, ...], dtype: np.dtype) -> str:
    number = "Int" if np.issubdtype(dtype, np.integer) else "Float"
    dims = " ".join(str(s) for s in shape)
    return (f'<DataItem Dimensions="{dims}" NumberType="{number}" Precision="{dtype.itemsize}" '
            f'Format="HDF">{h5name}:{path}</DataItem>')


def write_time_series(path: Path | str, points: np.ndarray, cells: np.ndarray, cell_type: str,
                      times: np.ndarray, point_data: dict[str, np.ndarray] | None = None,
                      cell_data: dict[str, np.ndarray] | None = None,
                      attributes: dict[str, str] | None = None) -> Path:
    """Write ``path`` (.xdmf) and its .h5: fields of shape (T, n_points) or (T, n_cells)
    (or (T, n, c) for vectors), one grid per entry of ``times``."""
    path = Path(path).with_suffix(".xdmf")
    h5path = path.with_suffix(".h5")
    point_data, cell_data = dict(point_data or {}), dict(cell_data or {})
    pts = np.asarray(points, dtype=np.float64)
    gdim = pts.shape[1]
    if gdim == 1:
        pts = np.hstack([pts, np.zeros((len(pts), 2))])
    geometry_type = "XY" if gdim == 2 else "XYZ"
    topo_name, nper = _TOPOLOGY[cell_type]
    cells = np.asarray(cells, dtype=np.int64)
    T = len(times)
    for name, arr in {**point_data, **cell_data}.items():
        if arr.shape[0] != T:
            raise ValueError(f"field {name!r} has {arr.shape[0]} time steps, expected {T}")
        if "/" in name or name in ("", "."):
            raise ValueError(f"field name {name!r} cannot name an HDF5 group")

    with atomic_path(h5path) as tmp_h5:
        with h5py.File(tmp_h5, "w") as f:
            f["mesh/geometry"] = pts
            f["mesh/topology"] = cells
            f["time"] = np.asarray(times, dtype=np.float64)
            for group, data in (("point", point_data), ("cell", cell_data)):
                for name, arr in data.items():
                    for i, values in enumerate(np.asarray(arr, dtype=np.float64)):
                        f[f"{group}/{name}/{i}"] = values
            for key, value in (attributes or {}).items():
                f.attrs[key] = value
    h5name = h5path.name
    lines = ['<?xml version="1.0"?>',
             '<Xdmf Version="3.0" xmlns:xi="http://www.w3.org/2001/XInclude">',
             "<Domain>", '<Grid Name="series" GridType="Collection" CollectionType="Temporal">']
    geo = _item(h5name, "/mesh/geometry", pts.shape, pts.dtype)
    top = _item(h5name, "/mesh/topology", cells.shape, cells.dtype)
    for i, t in enumerate(times):
        lines.append(f'<Grid Name="step {i}" GridType="Uniform">')
        lines.append(f'<Time Value="{float(t):.17g}"/>')
        extra = ' NodesPerElement="2"' if topo_name == "Polyline" else ""
        lines.append(f'<Topology TopologyType="{topo_name}" '
                     f'NumberOfElements="{len(cells)}"{extra}>{top}</Topology>')
        lines.append(f'<Geometry GeometryType="{geometry_type}">{geo}</Geometry>')
        for center, group, data in (("Node", "point", point_data), ("Cell", "cell", cell_data)):
            for name, arr in data.items():
                a = np.asarray(arr)
                kind = "Scalar" if a.ndim == 2 else "Vector"
                item = _item(h5name, f"/{group}/{name}/{i}", a.shape[1:], np.dtype(np.float64))
                lines.append(f'<Attribute Name={quoteattr(name)} AttributeType="{kind}" '
                             f'Center="{center}">{item}</Attribute>')
        lines.append("</Grid>")
    lines += ["</Grid>", "</Domain>", "</Xdmf>", ""]
    # the XML last: it names the heavy data, which is complete by now
    with atomic_path(path) as tmp_xml:
        tmp_xml.write_text("\n".join(lines))
    return path


def read_time_series(path: Path | str) -> dict:
    """Read a series back from its XML and HDF5 independently of the writer's memory:
    times from the XML, arrays through the XML's references. Used by tests and users."""
    import xml.etree.ElementTree as ET

    path = Path(path)
    root = ET.parse(path).getroot()
    grids = root.find("Domain").find("Grid").findall("Grid")
    out = {"times": [], "point": {}, "cell": {}}
    with h5py.File(path.with_name(root.find(".//DataItem[@Format='HDF']").text.split(":")[0]),
                   "r") as f:
        def load(ref):
            name, dset = ref.split(":")
            return f[dset][()]
        first = grids[0]
        out["geometry"] = load(first.find("Geometry/DataItem").text)
        out["topology"] = load(first.find("Topology/DataItem").text)
        out["topology_type"] = first.find("Topology").get("TopologyType")
        for g in grids:
            out["times"].append(float(g.find("Time").get("Value")))
            for att in g.findall("Attribute"):
                group = "point" if att.get("Center") == "Node" else "cell"
                out[group].setdefault(att.get("Name"), []).append(load(att.find("DataItem").text))
    out["times"] = np.array(out["times"])
    for group in ("point", "cell"):
        out[group] = {k: np.array(v) for k, v in out[group].items()}
    return out
