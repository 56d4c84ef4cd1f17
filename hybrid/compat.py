"""The one place that knows which DOLFINx it runs on (0.5.2 from Debian, or 0.9).

DOLFINx renamed or re-typed a handful of calls between 0.5 and 0.9. Everything else in
``hybrid`` calls these wrappers instead of branching on the version, so porting to a new
DOLFINx means editing this file only. Only the calls the project uses live here.

Differences handled (0.5 -> 0.9):

- function spaces: ``fem.FunctionSpace(mesh, element)`` -> ``fem.functionspace(mesh, element)``
- bounding-box trees: ``geometry.BoundingBoxTree(mesh, dim)`` -> ``geometry.bb_tree(mesh, dim)``
- PETSc vector of a Function: ``u.vector`` -> ``u.x.petsc_vec``
- XDMF meshtags: ``write_meshtags(tags)`` -> ``write_meshtags(tags, mesh.geometry)``
- the UFL coordinate element: ``ufl.VectorElement`` -> ``basix.ufl.element(..., shape=(gdim,))``
- ``create_mesh``: ghost mode argument -> folded into the cell partitioner
- ``meshtags_from_entities``: ``cpp.graph.AdjacencyList_int32`` -> ``graph.adjacencylist``
- the geometry dofmap: an AdjacencyList -> a 2-D array
- ``io.distribute_entity_data``: the raw C++ function (takes ``mesh._mesh``) -> a Python wrapper
- mixed and vector elements (Taylor–Hood): ``ufl.MixedElement([ufl.VectorElement(...), ...])``
  -> ``basix.ufl.mixed_element([basix.ufl.element(..., shape=(gdim,)), ...])``
"""

from __future__ import annotations

import dolfinx
import numpy as np

__all__ = [
    "DOLFINX_VERSION",
    "function_space",
    "bb_tree",
    "petsc_vec",
    "coordinate_domain",
    "create_mesh",
    "distribute_entity_data",
    "meshtags_from_entities",
    "write_meshtags",
    "geometry_dofmap",
    "model_to_mesh",
    "taylor_hood_space",
    "scalar_space",
    "vector_space",
]

DOLFINX_VERSION: tuple[int, int, int] = tuple(
    int("".join(ch for ch in part if ch.isdigit()) or 0)
    for part in dolfinx.__version__.split(".")[:3]
)  # type: ignore[assignment]
_NEW = DOLFINX_VERSION >= (0, 7, 0)


def function_space(mesh, element):
    """A finite element space on ``mesh``; ``element`` is ``("Lagrange", 1)`` or a UFL/basix
    element."""
    if _NEW:
        return dolfinx.fem.functionspace(mesh, element)
    return dolfinx.fem.FunctionSpace(mesh, element)


def bb_tree(mesh, tdim: int):
    """Bounding-box tree of the entities of dimension ``tdim`` (for point location)."""
    if _NEW:
        return dolfinx.geometry.bb_tree(mesh, tdim)
    return dolfinx.geometry.BoundingBoxTree(mesh, tdim)


def petsc_vec(u):
    """The PETSc ``Vec`` that shares memory with the Function ``u``."""
    return u.x.petsc_vec if _NEW else u.vector


def coordinate_domain(cell_type: str, gdim: int):
    """The UFL domain of an affine (P1 geometry) mesh of ``cell_type`` in ``gdim`` dimensions."""
    import ufl

    if _NEW:
        import basix.ufl

        return ufl.Mesh(basix.ufl.element("Lagrange", cell_type, 1, shape=(gdim,)))
    return ufl.Mesh(ufl.VectorElement("Lagrange", ufl.Cell(cell_type, geometric_dimension=gdim), 1))


def create_mesh(comm, cells: np.ndarray, x: np.ndarray, domain, ghost_mode):
    """Distribute ``cells``/``x`` (all on one rank, empty elsewhere) over ``comm``."""
    if _NEW:
        partitioner = dolfinx.mesh.create_cell_partitioner(ghost_mode)
        return dolfinx.mesh.create_mesh(comm, cells, x, domain, partitioner=partitioner)
    return dolfinx.mesh.create_mesh(comm, cells, x, domain, ghost_mode=ghost_mode)


def meshtags_from_entities(mesh, dim: int, entities: np.ndarray, values: np.ndarray):
    """MeshTags from entities given by their process-local vertex indices, shape (n, k)."""
    entities = np.ascontiguousarray(entities, dtype=np.int32)
    values = np.ascontiguousarray(values, dtype=np.int32)
    mesh.topology.create_connectivity(dim, 0)
    if _NEW:
        return dolfinx.mesh.meshtags_from_entities(mesh, dim, dolfinx.graph.adjacencylist(entities),
                                                   values)
    adjacency = dolfinx.cpp.graph.AdjacencyList_int32(entities)
    return dolfinx.mesh.meshtags_from_entities(mesh, dim, adjacency, values)


def distribute_entity_data(mesh, dim: int, entities: np.ndarray, values: np.ndarray):
    """Send entities given by original vertex indices to the ranks that hold them ->
    ``(entities in local vertex indices, values)`` (0.5 exports the raw C++ function)."""
    entities = np.ascontiguousarray(entities, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=np.int32)
    if _NEW:
        return dolfinx.io.distribute_entity_data(mesh, dim, entities, values)
    return dolfinx.cpp.io.distribute_entity_data(mesh._mesh, dim, entities, values)


def write_meshtags(xdmf, tags, mesh) -> None:
    """Write ``tags`` to an open XDMFFile that already holds ``mesh``."""
    if _NEW:
        xdmf.write_meshtags(tags, mesh.geometry)
    else:
        xdmf.write_meshtags(tags)


def geometry_dofmap(mesh) -> np.ndarray:
    """Geometry node indices of each local cell, shape (num_cells, nodes_per_cell)."""
    dofmap = mesh.geometry.dofmap
    if isinstance(dofmap, np.ndarray):
        return dofmap
    num_cells = len(dofmap.offsets) - 1
    return dofmap.array.reshape(num_cells, -1)


def model_to_mesh(model, comm, rank: int, gdim: int):
    """Gmsh model -> ``(mesh, cell_tags, facet_tags)``.

    ``hybrid`` itself goes through :class:`~hybrid.mesh.meshdata.MeshData` and
    :func:`hybrid.mesh.distribute.to_dolfinx`; this is for scripts that hold a gmsh model.
    """
    from dolfinx.io import gmshio

    result = gmshio.model_to_mesh(model, comm, rank, gdim=gdim)
    if isinstance(result, tuple):
        return result[:3]
    return result.mesh, result.cell_tags, result.facet_tags


def _lagrange(mesh, degree: int, vector: bool, discontinuous: bool = False):
    cell = mesh.topology.cell_name() if _NEW else mesh.ufl_cell()
    gdim = mesh.geometry.dim
    if _NEW:
        import basix.ufl
        return basix.ufl.element("Lagrange", cell, degree, shape=(gdim,) if vector else None,
                                 discontinuous=discontinuous)
    import ufl
    family = "DG" if discontinuous else "Lagrange"
    return (ufl.VectorElement(family, cell, degree) if vector
            else ufl.FiniteElement(family, cell, degree))


def taylor_hood_space(mesh, discontinuous_pressure: bool = False):
    """The mixed space P2 (velocity, vector) x P1 (pressure) on ``mesh``; with
    ``discontinuous_pressure`` the pressure is DG1 (Scott–Vogelius on a barycentric split)."""
    velocity, pressure = _lagrange(mesh, 2, True), _lagrange(mesh, 1, False, discontinuous_pressure)
    if _NEW:
        import basix.ufl
        return function_space(mesh, basix.ufl.mixed_element([velocity, pressure]))
    import ufl
    return function_space(mesh, ufl.MixedElement([velocity, pressure]))


def scalar_space(mesh, degree: int):
    """Continuous scalar Lagrange space of ``degree`` on ``mesh``."""
    return function_space(mesh, _lagrange(mesh, degree, False))


def vector_space(mesh, degree: int):
    """Vector-valued Lagrange space of ``degree`` on ``mesh``."""
    return function_space(mesh, _lagrange(mesh, degree, True))
