"""Make the meshes shipped in ``meshes/`` (and check that the shipped files are reproduced).

Every file is a generated shape of :mod:`hybrid.mesh.shapes` with a fixed spec and seed,
written with :func:`hybrid.mesh.io.write_msh` (gmsh 4.1 binary, physical names) or
:func:`hybrid.mesh.io.write_xdmf_mesh` (DOLFINx XDMF + HDF5, boundary names in an
``<Information>`` element). The same gmsh (4.8, one thread) gives the same files.

    PYTHONPATH=. python meshes/make_meshes.py            # rewrite the shipped meshes
    PYTHONPATH=. python meshes/make_meshes.py --check    # exit 1 if a shipped mesh differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from hybrid.mesh.io import read_mesh_file, write_msh, write_xdmf_mesh
from hybrid.mesh.meshdata import MeshData
from hybrid.mesh.shapes import generate

__all__ = ["SHIPPED", "build", "same_mesh", "main"]

HERE = Path(__file__).resolve().parent

# file name -> (generate spec, seed)
SHIPPED: dict[str, tuple[dict, int]] = {
    "interval-400.msh": ({"shape": "interval", "cells": 400, "jitter": 0.3}, 0),
    "interval-200.msh": ({"shape": "interval", "cells": 200, "jitter": 0.3}, 0),
    "lshape-h0.05.msh": ({"shape": "lshape", "h": 0.05}, 0),
    "disk-h0.08.msh": ({"shape": "disk", "h": 0.08}, 0),
    "rectangle-h0.1.xdmf": ({"shape": "rectangle", "h": 0.1}, 0),
}


def build(name: str) -> MeshData:
    """The MeshData a shipped file must hold."""
    spec, seed = SHIPPED[name]
    return generate(dict(spec), seed)


def _canonical(meshdata: MeshData, decimals: int = 12):
    """Numbering-free description: sorted cell corner sets, sorted (facet corners, tag)."""
    def corner_sets(index):
        corners = np.round(meshdata.points[index], decimals)  # (k, nv, gdim)
        order = np.lexsort(corners.transpose(2, 0, 1)[::-1], axis=-1) if corners.shape[1] > 1 else None
        if order is not None:
            corners = np.take_along_axis(corners, order[:, :, None], axis=1)
        return corners.reshape(len(index), -1)

    cells = corner_sets(meshdata.cells)
    facets = np.column_stack([corner_sets(meshdata.facets), meshdata.facet_tags])
    return (meshdata.cell_type, cells[np.lexsort(cells.T[::-1])], facets[np.lexsort(facets.T[::-1])],
            dict(sorted(meshdata.boundary_names.items())))


def same_mesh(a: MeshData, b: MeshData) -> bool:
    """Whether ``a`` and ``b`` are the same mesh up to the numbering of vertices and cells."""
    ca, cb = _canonical(a), _canonical(b)
    return (ca[0] == cb[0] and ca[3] == cb[3] and ca[1].shape == cb[1].shape and ca[2].shape == cb[2].shape
            and np.array_equal(ca[1], cb[1]) and np.array_equal(ca[2], cb[2]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the shipped files instead of writing")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write to (default: meshes/)")
    args = parser.parse_args(argv)
    failed = []
    for name in SHIPPED:
        meshdata = build(name)
        path = args.out / name
        if args.check:
            ok = path.is_file() and same_mesh(read_mesh_file(path), meshdata)
            print(f"{name}: {'ok' if ok else 'DIFFERS'}")
            if not ok:
                failed.append(name)
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        (write_msh if path.suffix == ".msh" else write_xdmf_mesh)(meshdata, path)
        print(f"{name}: {meshdata.num_cells} {meshdata.cell_type}s, {meshdata.num_vertices} vertices, "
              f"boundaries {meshdata.boundary_names}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
