"""The generated shapes of ``[mesh] generate = { shape = ..., ... }``.

========== ======================================== ==========================================
shape      domain (defaults)                         boundaries (tag)
========== ======================================== ==========================================
interval   [x0, x1] = [0, 1]                         left (1) x = x0, right (2) x = x1
rectangle  [x0, x1] x [y0, y1] = [0, 1]^2            left (1) x = x0, right (2) x = x1,
                                                     bottom (3) y = y0, top (4) y = y1
lshape     [0, 1]^2 minus [0.5, 1]^2                 left (1) x = 0, right (2) x = 1,
                                                     bottom (3) y = 0, top (4) y = 1,
                                                     inner (5): the re-entrant edges x = 0.5,
                                                     y = 0.5
disk       |x - 0| <= radius = 1                     wall (1)
box        [x0, x1] x [y0, y1] x [z0, z1] = [0, 1]^3 left (1) x = x0, right (2) x = x1,
                                                     front (3) y = y0, back (4) y = y1,
                                                     bottom (5) z = z0, top (6) z = z1
========== ======================================== ==========================================

Size: ``cells`` (interval: number of cells) or ``h`` (target cell size, default 0.1;
for the interval ``cells = round(length / h)``). ``jitter`` (interval only, default 0):
interior vertices move by uniform(-jitter h/2, jitter h/2) drawn from
``numpy.random.default_rng(seed)``; jitter < 1 keeps the vertices ordered.

The interval is built in numpy. The 2-D and 3-D shapes are unstructured gmsh meshes (OCC
kernel, Frontal-Delaunay triangles / Delaunay tetrahedra, ``Mesh.CharacteristicLengthMax
= h``, one thread), so the same spec gives the same mesh on every run.
"""

from __future__ import annotations

import difflib
import math
from numbers import Real

import numpy as np

from hybrid.errors import CaseError
from hybrid.mesh.io import DOMAIN_GROUP_NAME, gmsh_session, meshdata_from_gmsh
from hybrid.mesh.meshdata import MeshData

__all__ = ["generate", "SHAPES", "BOUNDARY_TAGS", "DEFAULT_H"]

DEFAULT_H = 0.1
MAX_CELLS = 5_000_000  # a larger estimate is almost surely a typo in h (gmsh would run for hours)

# shape -> {key: default}; None = no default
SHAPES: dict[str, dict[str, object]] = {
    "interval": {"cells": None, "h": None, "x0": 0.0, "x1": 1.0, "jitter": 0.0},
    "rectangle": {"h": DEFAULT_H, "x0": 0.0, "x1": 1.0, "y0": 0.0, "y1": 1.0},
    "lshape": {"h": DEFAULT_H},
    "disk": {"h": DEFAULT_H, "radius": 1.0},
    "box": {"h": DEFAULT_H, "x0": 0.0, "x1": 1.0, "y0": 0.0, "y1": 1.0, "z0": 0.0, "z1": 1.0},
}

BOUNDARY_TAGS: dict[str, dict[str, int]] = {
    "interval": {"left": 1, "right": 2},
    "rectangle": {"left": 1, "right": 2, "bottom": 3, "top": 4},
    "lshape": {"left": 1, "right": 2, "bottom": 3, "top": 4, "inner": 5},
    "disk": {"wall": 1},
    "box": {"left": 1, "right": 2, "front": 3, "back": 4, "bottom": 5, "top": 6},
}

_TDIM = {"interval": 1, "rectangle": 2, "lshape": 2, "disk": 2, "box": 3}


def generate(spec: dict, seed: int = 0, *, file: str | None = None,
             key: str = "mesh.generate") -> MeshData:
    """The mesh of a generated shape (serial; call on one rank and broadcast).

    ``spec`` is the ``generate`` table; ``seed`` drives the interval's jitter; ``file`` and
    ``key`` locate the table in error messages.
    """
    params = _validate(spec, file, key)
    shape = params.pop("shape")
    if shape == "interval":
        return _interval(params, seed)
    return _gmsh_shape(shape, params, file, key)


# --------------------------------------------------------------------------- validation
def _validate(spec, file, key) -> dict:
    if not isinstance(spec, dict):
        raise CaseError(f"expected a table such as {{ shape = \"interval\", cells = 100 }}, found "
                        f"{spec!r}",
                        file=file, key=key)
    shape = spec.get("shape")
    if shape not in SHAPES:
        raise CaseError(f"shape must be one of {', '.join(SHAPES)}, found {shape!r}", file=file,
                        key=f"{key}.shape")
    allowed = SHAPES[shape]
    for name in spec:
        if name != "shape" and name not in allowed:
            close = difflib.get_close_matches(name, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CaseError(f"unknown key {name!r} for shape {shape!r}{hint}; allowed: shape, "
                            f"{', '.join(allowed)}",
                            file=file, key=f"{key}.{name}")
    params = {"shape": shape}
    for name, default in allowed.items():
        value = spec.get(name, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, Real)
                                  or not math.isfinite(value)):
            raise CaseError(f"expected a number, found {value!r}", file=file, key=f"{key}.{name}")
        params[name] = value

    def positive(name):
        if params[name] is not None and params[name] <= 0:
            raise CaseError(f"must be positive, found {params[name]!r}", file=file,
                            key=f"{key}.{name}")

    for lo, hi in (("x0", "x1"), ("y0", "y1"), ("z0", "z1")):
        if lo in params and params[lo] >= params[hi]:
            raise CaseError(f"{lo} = {params[lo]} must be smaller than {hi} = {params[hi]}",
                            file=file, key=f"{key}.{hi}")
    positive("h")
    if "radius" in params:
        positive("radius")
    if shape == "interval":
        length = params["x1"] - params["x0"]
        if params["cells"] is not None and params["h"] is not None:
            raise CaseError("give cells or h, not both", file=file, key=f"{key}.h")
        if params["cells"] is not None:
            cells = params["cells"]
            if cells != int(cells) or cells < 1:
                raise CaseError(f"cells must be a positive integer, found {cells!r}", file=file,
                                key=f"{key}.cells")
        else:
            cells = max(1, round(length / (params["h"] or DEFAULT_H)))
        params["cells"] = int(cells)
        params.pop("h")
        if not 0.0 <= params["jitter"] < 1.0:
            raise CaseError("jitter is a fraction of the cell size in [0, 1) (so vertices stay "
                            f"ordered), found {params['jitter']!r}", file=file, key=f"{key}.jitter")
        estimate = params["cells"]
    else:
        estimate = (_measure(shape, params) / (params["h"] ** _TDIM[shape])
                    * (2 if _TDIM[shape] == 2 else 6))
    if estimate > MAX_CELLS:
        raise CaseError(f"about {estimate:.3g} cells; more than the {MAX_CELLS} this generator "
                        "allows (is the size a typo?)", file=file, key=key)
    return params


def _measure(shape: str, p: dict) -> float:
    if shape == "rectangle":
        return (p["x1"] - p["x0"]) * (p["y1"] - p["y0"])
    if shape == "lshape":
        return 0.75
    if shape == "disk":
        return math.pi * p["radius"] ** 2
    return (p["x1"] - p["x0"]) * (p["y1"] - p["y0"]) * (p["z1"] - p["z0"])


# --------------------------------------------------------------------------- interval
def _interval(p: dict, seed: int) -> MeshData:
    """Uniform vertices x0 + i h, interior ones jittered; cells [i, i + 1]."""
    n, x0, x1 = p["cells"], float(p["x0"]), float(p["x1"])
    h = (x1 - x0) / n
    x = x0 + h * np.arange(n + 1, dtype=np.float64)
    x[-1] = x1  # exactly, not x0 + n h
    if p["jitter"] > 0 and n > 1:
        rng = np.random.default_rng(seed)
        x[1:-1] += rng.uniform(-0.5 * p["jitter"] * h, 0.5 * p["jitter"] * h, size=n - 1)
    cells = np.column_stack([np.arange(n), np.arange(1, n + 1)])
    tags = BOUNDARY_TAGS["interval"]
    return MeshData(x[:, None], cells, "interval", np.array([[0], [n]]),
                    np.array([tags["left"], tags["right"]], dtype=np.int32), dict(tags))


# --------------------------------------------------------------------------- gmsh shapes
def _gmsh_shape(shape: str, p: dict, file, key) -> MeshData:
    with gmsh_session() as gmsh:
        gmsh.model.add(shape)
        occ = gmsh.model.occ
        if shape == "rectangle":
            occ.addRectangle(p["x0"], p["y0"], 0.0, p["x1"] - p["x0"], p["y1"] - p["y0"])
        elif shape == "lshape":
            square = occ.addRectangle(0.0, 0.0, 0.0, 1.0, 1.0)
            corner = occ.addRectangle(0.5, 0.5, 0.0, 0.5, 0.5)
            occ.cut([(2, square)], [(2, corner)])
        elif shape == "disk":
            occ.addDisk(0.0, 0.0, 0.0, p["radius"], p["radius"])
        else:
            occ.addBox(p["x0"], p["y0"], p["z0"], p["x1"] - p["x0"], p["y1"] - p["y0"],
                       p["z1"] - p["z0"])
        occ.synchronize()

        tdim = _TDIM[shape]
        domain = [tag for _, tag in gmsh.model.getEntities(tdim)]
        gmsh.model.addPhysicalGroup(tdim, domain, 1)
        gmsh.model.setPhysicalName(tdim, 1, DOMAIN_GROUP_NAME)
        groups: dict[str, list[int]] = {name: [] for name in BOUNDARY_TAGS[shape]}
        for _, entity in gmsh.model.getBoundary([(tdim, t) for t in domain], oriented=False):
            centre = occ.getCenterOfMass(tdim - 1, entity)
            groups[_boundary_name(shape, p, centre)].append(entity)
        for name, entities in groups.items():
            tag = BOUNDARY_TAGS[shape][name]
            gmsh.model.addPhysicalGroup(tdim - 1, entities, tag)
            gmsh.model.setPhysicalName(tdim - 1, tag, name)

        gmsh.option.setNumber("Mesh.CharacteristicLengthMax", p["h"])
        gmsh.option.setNumber("Mesh.Algorithm", 6)  # Frontal-Delaunay
        gmsh.option.setNumber("Mesh.Algorithm3D", 1)  # Delaunay
        gmsh.option.setNumber("Mesh.ElementOrder", 1)
        for dim in (1, 2, 3):
            gmsh.option.setNumber(f"Mesh.MaxNumThreads{dim}D", 1)
        gmsh.model.mesh.generate(tdim)
        return meshdata_from_gmsh(gmsh, source=f"generated {shape}", file=file, key=key)


def _boundary_name(shape: str, p: dict, centre) -> str:
    """The boundary a curve/surface of the OCC model belongs to, from its centre of mass
    (exact, unlike OCC bounding boxes, which are padded by the modelling tolerance)."""
    scale = max(1.0, *(abs(float(v)) for v in p.values()))

    def at(value, target):
        return abs(value - target) < 1e-9 * scale

    if shape == "disk":
        return "wall"
    cx, cy, _ = centre
    if shape == "lshape":
        if (at(cx, 0.5) and cy > 0.5) or (at(cy, 0.5) and cx > 0.5):
            return "inner"
        p = {"x0": 0.0, "x1": 1.0, "y0": 0.0, "y1": 1.0}
    planes = [("left", 0, "x0"), ("right", 0, "x1")]
    if shape == "box":
        planes += [("front", 1, "y0"), ("back", 1, "y1"), ("bottom", 2, "z0"), ("top", 2, "z1")]
    else:
        planes += [("bottom", 1, "y0"), ("top", 1, "y1")]
    for name, axis, bound in planes:
        if at(centre[axis], p[bound]):
            return name
    raise AssertionError(f"boundary entity with centre {centre} matches no side of the {shape}")
