"""The serial, original-numbering description of a mesh that every stage shares.

A :class:`MeshData` is what a mesh file or a generated shape *is*, independent of how
DOLFINx later partitions it: vertex coordinates and cells in the original numbering
(the order of the file, or of the generator), plus the tagged boundary facets and the
names of the boundaries. Datasets store values in this numbering, so they do not depend
on the number of MPI ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MeshData", "CELL_TYPES"]

# cell type -> (topological dimension, vertices per cell)
CELL_TYPES = {"interval": (1, 2), "triangle": (2, 3), "tetrahedron": (3, 4)}


@dataclass
class MeshData:
    """A simplex mesh in its original numbering.

    Attributes:
        points ((n_vertices, gdim) float64): Vertex coordinates; gdim equals the topological
            dimension.
        cells ((n_cells, tdim + 1) int64): Vertex indices of each cell.
        cell_type (str): ``"interval"``, ``"triangle"`` or ``"tetrahedron"``.
        facets ((n_tagged, tdim) int64): Vertex indices of each tagged boundary facet (points
            in 1-D, edges in 2-D, triangles in 3-D).
        facet_tags ((n_tagged,) int32): Physical tag of each facet in ``facets``.
        boundary_names (dict[str, int]): Boundary name -> physical tag.
    """

    points: np.ndarray
    cells: np.ndarray
    cell_type: str
    facets: np.ndarray
    facet_tags: np.ndarray
    boundary_names: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.ascontiguousarray(self.points, dtype=np.float64)
        if self.points.ndim == 1:
            self.points = self.points[:, None]
        self.cells = np.ascontiguousarray(self.cells, dtype=np.int64)
        self.facets = np.ascontiguousarray(self.facets, dtype=np.int64).reshape(-1, self.tdim)
        self.facet_tags = np.ascontiguousarray(self.facet_tags, dtype=np.int32)
        if self.cell_type not in CELL_TYPES:
            raise ValueError(f"unknown cell type {self.cell_type!r}")
        if self.cells.shape[1] != CELL_TYPES[self.cell_type][1]:
            raise ValueError(f"{self.cell_type} cells need {CELL_TYPES[self.cell_type][1]} "
                             "vertices")

    @property
    def tdim(self) -> int:
        """The topological dimension: 1, 2 or 3."""
        return CELL_TYPES[self.cell_type][0]

    @property
    def gdim(self) -> int:
        """The geometric dimension (columns of ``points``)."""
        return self.points.shape[1]

    @property
    def num_vertices(self) -> int:
        """The number of vertices."""
        return self.points.shape[0]

    @property
    def num_cells(self) -> int:
        """The number of cells."""
        return self.cells.shape[0]

    def tag_name(self, tag: int) -> str:
        """The boundary name of physical tag ``tag``, or the tag as a string when unnamed."""
        for name, t in self.boundary_names.items():
            if t == tag:
                return name
        return str(tag)
