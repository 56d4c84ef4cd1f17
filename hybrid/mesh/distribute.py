"""From the serial MeshData to a distributed DOLFINx mesh, and who owns what.

DOLFINx partitions the cells over the ranks and renumbers cells and vertices. The solver
works on that mesh, while datasets are stored in the original numbering; the two maps
that connect them are ``mesh.topology.original_cell_index`` (local cell -> original cell)
and ``mesh.geometry.input_global_indices`` (local geometry node -> original vertex; with a
P1 geometry every node is a vertex).

Reproducible partitions: PT-SCOTCH 7 (DOLFINx's partitioner here) splits graphs with
threads and then gives a different partition from call to call and run to run. With
``SCOTCH_PTHREAD_NUMBER=1`` (set here unless the environment sets it) the same mesh on the
same number of ranks is always partitioned the same way.
"""

from __future__ import annotations

import os

import numpy as np

from hybrid import compat
from hybrid.mesh.meshdata import CELL_TYPES, MeshData

__all__ = ["to_dolfinx", "partition_owners", "local_vertex_original_index"]

_GHOST_MODES = ("none", "shared_facet", "shared_vertex")


def to_dolfinx(meshdata: MeshData, comm, ghost_mode: str = "shared_facet"):
    """Distribute ``meshdata`` over ``comm`` -> ``(mesh, facet_tags)``.

    Only rank 0's arrays are read (the others pass empty ones, as ``gmshio`` does), so the
    partition depends on the mesh and the number of ranks only. ``facet_tags`` are the
    MeshData facet tags on the local facets (owned and ghost), named ``facet_tags``.
    ``ghost_mode`` is ``"none"``, ``"shared_facet"`` (default: a layer of ghost cells across
    each process boundary, which face fluxes need) or ``"shared_vertex"``.
    """
    import dolfinx.mesh

    if ghost_mode not in _GHOST_MODES:
        raise ValueError(f"ghost_mode must be one of {_GHOST_MODES}, not {ghost_mode!r}")
    mode = getattr(dolfinx.mesh.GhostMode, ghost_mode)
    os.environ.setdefault("SCOTCH_PTHREAD_NUMBER", "1")  # read by SCOTCH at every partition
    tdim, nverts = CELL_TYPES[meshdata.cell_type]
    root = comm.rank == 0
    cells = meshdata.cells if root else np.empty((0, nverts), dtype=np.int64)
    points = meshdata.points if root else np.empty((0, meshdata.gdim), dtype=np.float64)
    domain = compat.coordinate_domain(meshdata.cell_type, meshdata.gdim)
    mesh = compat.create_mesh(comm, cells, points, domain, mode)

    facets = meshdata.facets if root else np.empty((0, tdim), dtype=np.int64)
    values = meshdata.facet_tags if root else np.empty(0, dtype=np.int32)
    # send each tagged facet to the ranks holding its vertices, in local vertex numbering
    local_facets, local_values = compat.distribute_entity_data(mesh, tdim - 1, facets, values)
    mesh.topology.create_connectivity(tdim - 1, tdim)
    facet_tags = compat.meshtags_from_entities(mesh, tdim - 1,
                                               np.asarray(local_facets).reshape(-1, tdim),
                                               local_values)
    facet_tags.name = "facet_tags"
    return mesh, facet_tags


def local_vertex_original_index(mesh) -> np.ndarray:
    """Original (MeshData) vertex index of each local vertex (owned, then ghosts).

    With a P1 geometry, vertex j of a cell in the topology is node j of that cell in the
    geometry dofmap; the node's input index is its original vertex index.
    """
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim, 0)
    index_map = mesh.topology.index_map(tdim)
    num_cells = index_map.size_local + index_map.num_ghosts
    cell_vertices = mesh.topology.connectivity(tdim, 0).array.reshape(num_cells, tdim + 1)
    cell_nodes = compat.geometry_dofmap(mesh)[:num_cells]
    vertex_map = mesh.topology.index_map(0)
    vertex_node = np.full(vertex_map.size_local + vertex_map.num_ghosts, -1, dtype=np.int64)
    vertex_node[cell_vertices.ravel()] = cell_nodes.ravel()
    return np.asarray(mesh.geometry.input_global_indices, dtype=np.int64)[vertex_node]


def partition_owners(meshdata: MeshData, comm, *, mesh=None) -> tuple[np.ndarray, np.ndarray]:
    """The owning rank of each cell and of each vertex, in original numbering, on every rank.

    Returns ``(cell_owner, vertex_owner)``, int32 arrays of length ``num_cells`` and
    ``num_vertices``. Pass the ``mesh`` that :func:`to_dolfinx` made to get exactly its
    partition; without it the mesh is distributed again, which gives the same partition
    only while SCOTCH runs single-threaded (see the module docstring).
    """
    if mesh is None:
        mesh, _ = to_dolfinx(meshdata, comm)
    tdim = mesh.topology.dim
    num_owned_cells = mesh.topology.index_map(tdim).size_local
    owned_cells = np.asarray(mesh.topology.original_cell_index, dtype=np.int64)[:num_owned_cells]
    num_owned_vertices = mesh.topology.index_map(0).size_local
    owned_vertices = local_vertex_original_index(mesh)[:num_owned_vertices]

    cell_owner = np.full(meshdata.num_cells, -1, dtype=np.int32)
    vertex_owner = np.full(meshdata.num_vertices, -1, dtype=np.int32)
    for rank, (cells, vertices) in enumerate(comm.allgather((owned_cells, owned_vertices))):
        cell_owner[cells] = rank
        vertex_owner[vertices] = rank
    return cell_owner, vertex_owner
