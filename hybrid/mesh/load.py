"""The case's ``[mesh]`` as a mesh on every rank: a file read (:mod:`hybrid.mesh.io`) or a
shape generated (:mod:`hybrid.mesh.shapes`) on rank 0, named and broadcast."""

from __future__ import annotations

from hybrid.errors import CaseError
from hybrid.mesh.io import apply_boundary_names, read_mesh_file
from hybrid.mesh.meshdata import MeshData
from hybrid.mesh.shapes import generate

__all__ = ["load_mesh"]


def load_mesh(mesh_section: dict, *, seed: int, comm, file: str | None = None) -> MeshData:
    """The case's mesh on every rank of ``comm``: read or generated on rank 0, broadcast.

    ``mesh_section`` holds ``file`` (an absolute path or None), ``generate`` (a shape spec or
    None) and ``boundaries`` (name -> tag or None), exactly one of file/generate given.
    A :class:`CaseError` on rank 0 is raised on every rank (so no rank waits forever);
    any other failure on rank 0 raises there and a RuntimeError elsewhere.
    """
    outcome = None
    if comm.rank == 0:
        try:
            outcome = ("ok", _load_serial(mesh_section, seed=seed, file=file))
        except CaseError as error:
            outcome = ("case", error)
        except Exception as error:
            comm.bcast(("bug", f"{type(error).__name__}: {error}"), root=0)
            raise
    outcome = comm.bcast(outcome, root=0)
    if outcome[0] == "ok":
        return outcome[1]
    if outcome[0] == "case":
        raise outcome[1]
    raise RuntimeError(f"loading the mesh failed on rank 0: {outcome[1]}")


def _load_serial(mesh_section: dict, *, seed: int, file: str | None) -> MeshData:
    path = mesh_section.get("file")
    spec = mesh_section.get("generate")
    if (path is None) == (spec is None):
        raise CaseError("give exactly one of file = \"mesh.msh\" or generate = { shape = ... }",
                        file=file, key="mesh")
    if path is not None:
        meshdata = read_mesh_file(path, file=file, key="mesh.file",
                                  tag_data=mesh_section.get("tag_data"))
    else:
        meshdata = generate(spec, seed, file=file, key="mesh.generate")
    return apply_boundary_names(meshdata, mesh_section.get("boundaries"), file=file,
                                key="mesh.boundaries")
