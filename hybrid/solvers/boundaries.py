"""A case's boundary conditions as the solvers and the constraint rows use them: the
[boundary.*] tables as solver boundary data, and the Dirichlet walls in the order that
decides who owns a shared vertex (the later wall, as in the solvers)."""

from __future__ import annotations

import numpy as np

from hybrid.mesh.control_volumes import ControlVolumes
from hybrid.solvers.gpme import BoundaryData

__all__ = ["boundary_data", "wall_order", "dirichlet_walls"]


def boundary_data(case) -> list[BoundaryData]:
    """The case's [boundary.*] tables as the solver's boundary conditions."""
    out = []
    for name, bc in case.boundaries.items():
        if bc.type == "dirichlet":
            out.append(BoundaryData(name, "dirichlet", bc.value))
        elif bc.type == "neumann":
            if bc.flux is not None:
                out.append(BoundaryData(name, "flux", bc.flux))
            else:
                out.append(BoundaryData(name, "normal_derivative", bc.normal_derivative))
        else:
            out.append(BoundaryData(name, "periodic"))
    return out


def wall_order(case, mesh) -> list[str]:
    """The mesh's boundaries in the order of the case's [boundary.*] tables (then the rest);
    ``mesh`` may be the control volumes, which carry the same names."""
    listed = [n for n in case.boundaries if n in mesh.boundary_names]
    return listed + [n for n in mesh.boundary_names if n not in listed]


def dirichlet_walls(case, cv: ControlVolumes, t: float,
                    params: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, control volumes in ascending order, data (n, components) at their centres) of
    every non-periodic Dirichlet boundary at time ``t``, in :func:`wall_order`: where walls
    meet, the later one's data is the one that stands, as in the solvers."""
    periodic = {name for pair in cv.periodic_pairs for name in pair}
    walls = []
    for name in wall_order(case, cv):
        bc = case.boundary_condition(name)
        if bc.type != "dirichlet" or name in periodic:
            continue
        cvs = np.unique(cv.face_cv[cv.faces_of(name), 0])
        walls.append((name, cvs, bc.dirichlet_values(cv.centre[cvs], t, params).T))
    return walls
