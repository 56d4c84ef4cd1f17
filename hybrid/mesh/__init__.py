"""Meshes: generated shapes, gmsh/XDMF files, and their distribution over MPI ranks.

- :mod:`hybrid.mesh.meshdata`   :class:`MeshData`, the serial mesh in original numbering
- :mod:`hybrid.mesh.shapes`     ``[mesh] generate = {...}``: interval, rectangle, lshape, disk, box
- :mod:`hybrid.mesh.io`         ``.msh`` / ``.xdmf`` files
- :mod:`hybrid.mesh.load`       :func:`load_mesh`: the case's ``[mesh]`` on every rank, for the
  stages
- :mod:`hybrid.mesh.distribute` MeshData -> distributed DOLFINx mesh, and who owns each cell/vertex
"""

from hybrid.mesh.meshdata import CELL_TYPES, MeshData
from hybrid.mesh.io import read_mesh_file, write_msh, write_xdmf_mesh
from hybrid.mesh.load import load_mesh
from hybrid.mesh.shapes import generate

__all__ = ["MeshData", "CELL_TYPES", "generate", "load_mesh", "read_mesh_file", "write_msh",
           "write_xdmf_mesh"]
