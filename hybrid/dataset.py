"""The one writer and the one reader of a case's ``solve/dataset.h5``.

The dataset holds the mesh (original numbering), the control volumes' complete definition
(what :class:`~hybrid.mesh.control_volumes.ControlVolumes` holds: geometry, the solver's flux
stencils, boundary names and periodic pairs), the output times, and per split the scenarios'
trajectories and parameters. Every later stage reads its control volumes back from here,
so that train, predict, export and ``hybrid constrain`` use exactly the control volumes the
solver balanced, never a rebuilt copy.

Layout (``DATASET_FORMAT``, part of the solve stage's digest: older datasets are redone):

``mesh/``
    ``points cells facets facet_tags``; attributes ``cell_type``, ``boundary:NAME`` = tag
``control_volumes/``
    :meth:`ControlVolumes.to_dict` (``cv_owner``/``face_owner`` only in
    ``control_volumes.h5``), the flux pieces under ``pieces/`` and ``boundary_pieces/``
    (``face stencil weight k_cvs``), ``boundary_distance``; attributes ``kind``,
    ``boundary:NAME`` = tag, ``periodic`` = "primary:partner" pairs
``times``
    (T+1,) output times
``train/``, ``test/``
    ``u`` (S, T+1, N), ``params`` (S, P) with attribute ``parameter_names``, and the family's
    arrays (``flux``, ``source``, ...), ``solve_seconds``, ``newton_iterations``
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from hybrid.mesh.control_volumes import ControlVolumes, FluxPieces
from hybrid.mesh.meshdata import MeshData

__all__ = ["DATASET_FORMAT", "Dataset", "Split", "write_mesh", "write_control_volumes",
           "read_control_volumes", "read_dataset", "scenario_parameters"]

DATASET_FORMAT = 2   # raise when dataset.h5 changes shape (2:
                     # the control volumes' complete definition)

_PIECES = ("face", "stencil", "weight", "k_cvs")


def write_mesh(group: h5py.Group, mesh: MeshData) -> None:
    """The mesh into an HDF5 group."""
    group["points"] = mesh.points
    group["cells"] = mesh.cells
    group["facets"] = mesh.facets
    group["facet_tags"] = mesh.facet_tags
    group.attrs["cell_type"] = mesh.cell_type
    for name, tag in mesh.boundary_names.items():
        group.attrs[f"boundary:{name}"] = int(tag)


def _read_mesh(group: h5py.Group) -> MeshData:
    names = {k.split(":", 1)[1]: int(v) for k, v in group.attrs.items()
             if k.startswith("boundary:")}
    return MeshData(group["points"][()], group["cells"][()], str(group.attrs["cell_type"]),
                    group["facets"][()], group["facet_tags"][()], names)


def write_control_volumes(group: h5py.Group, cv: ControlVolumes, owners: bool) -> None:
    """The control volumes' complete definition into an HDF5 group (with the partition's
    owners when ``owners``)."""
    group.attrs["kind"] = cv.kind
    for name, arr in cv.to_dict().items():
        if not owners and name in ("cv_owner", "face_owner"):
            continue
        group[name] = arr
    for name, tag in cv.boundary_names.items():
        group.attrs[f"boundary:{name}"] = int(tag)
    group.attrs["periodic"] = [f"{a}:{b}" for a, b in cv.periodic_pairs]
    group["boundary_distance"] = cv.boundary_distance
    for name, pieces in (("pieces", cv.pieces), ("boundary_pieces", cv.boundary_pieces)):
        g = group.create_group(name)
        for key in _PIECES:
            g[key] = getattr(pieces, key)


def read_control_volumes(group: h5py.Group) -> ControlVolumes:
    """The :class:`ControlVolumes` that :func:`write_control_volumes` wrote (no owners: a
    later run assigns its own partition's)."""
    if "pieces" not in group:
        raise KeyError(f"{group.file.filename}: {group.name} has no flux pieces (a dataset older "
                       f"than format {DATASET_FORMAT}: rerun hybrid solve --force)")
    arr = lambda name: group[name][()]
    pieces = {name: FluxPieces(*(group[name][key][()] for key in _PIECES))
              for name in ("pieces", "boundary_pieces")}
    names = {k.split(":", 1)[1]: int(v) for k, v in group.attrs.items()
             if k.startswith("boundary:")}
    periodic = [tuple(str(p).split(":", 1)) for p in group.attrs.get("periodic", [])]
    return ControlVolumes(str(group.attrs["kind"]), arr("volume"), arr("centre"), arr("face_cv"),
                          arr("face_area"), arr("face_normal"), arr("face_centroid"),
                          arr("face_tag"), names, pieces["pieces"],
                          pieces["boundary_pieces"], arr("boundary_distance"), arr("entity_of_cv"),
                          arr("cv_of_entity"), periodic_pairs=periodic)


@dataclass
class Split:
    """One split's scenarios (``train`` or ``test``) as the solver wrote them.

    Attributes:
        u: (S, T+1, N) control-volume states (a vector family: (S, T+1, N, d), or after
            :meth:`~hybrid.problems.base.Problem.view` the flattened (S, T+1, d N)).
        params: (S, P) parameters, in ``parameter_names`` order.
        parameter_names: the P names.
        arrays: every other per-scenario array by name: the family's (``flux`` (S, T, F)
            and ``source`` (S, T, N) of the scalar families; ``face_flux``, ``pressure``,
            ``vorticity``, ``net_volume_flux`` of navier-stokes), ``solve_seconds`` and
            ``newton_iterations`` (S,).
        dt: the solver's time step.

    The lower layers read a split by name as well (``split["u"]``, ``"flux" in split``):
    every attribute and every entry of ``arrays`` is an item.
    """

    u: np.ndarray
    params: np.ndarray
    parameter_names: list[str]
    arrays: dict = field(default_factory=dict)
    dt: float | None = None

    @property
    def count(self) -> int:
        """The number of scenarios S."""
        return self.params.shape[0]

    def parameters(self, i: int) -> dict[str, float]:
        """Scenario i's parameters by name."""
        return scenario_parameters(self, i)

    def take(self, index) -> "Split":
        """The scenarios ``index`` (indices or a boolean mask), every per-scenario array cut
        alike."""
        S = self.count
        cut = {k: (v[index] if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == S else v)
               for k, v in self.arrays.items()}
        return Split(self.u[index], self.params[index], list(self.parameter_names), cut, self.dt)

    def with_arrays(self, **arrays) -> "Split":
        """A copy with these arrays set (``u`` included), the others shared."""
        u = arrays.pop("u", self.u)
        return dataclasses.replace(self, u=u, arrays={**self.arrays, **arrays})

    def __getattr__(self, name: str):   # split.flux, split.solve_seconds,
                                        # ...: the entries of ``arrays``
        if name.startswith("__") or name == "arrays":
            raise AttributeError(name)
        try:
            return self.arrays[name]
        except KeyError:
            raise AttributeError(f"this split has no {name!r} (it has "
                                 f"{', '.join(self.keys())})") from None

    def keys(self) -> list[str]:
        """The item names: ``u``, ``params``, ``parameter_names``, then those of ``arrays``."""
        return ["u", "params", "parameter_names", *self.arrays]

    def items(self):
        """(name, value) pairs, in :meth:`keys` order."""
        return [(k, self[k]) for k in self.keys()]

    def __iter__(self):
        return iter(self.keys())

    def __getitem__(self, key: str):
        if key in ("u", "params", "parameter_names"):
            return getattr(self, key)
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in ("u", "params", "parameter_names") or key in self.arrays

    def get(self, key: str, default=None):
        """The item ``key``, or ``default`` when the split has none."""
        return self[key] if key in self else default


@dataclass
class Dataset:
    """A case's ``dataset.h5``: mesh, control volumes (read back, :func:`read_control_volumes`),
    output times and splits. Readable by name too (``data["test"]``, ``data["mesh"]``, and
    ``data["control_volumes"]``, the control volumes' arrays)."""

    mesh: MeshData
    cv: ControlVolumes
    times: np.ndarray | None
    splits: dict[str, Split]

    @property
    def train(self) -> Split | None:
        """The ``train`` split, None when the file has none."""
        return self.splits.get("train")

    @property
    def test(self) -> Split | None:
        """The ``test`` split, None when the file has none."""
        return self.splits.get("test")

    @property
    def control_volumes(self) -> dict[str, np.ndarray]:
        """The control volumes' arrays by name (:meth:`ControlVolumes.to_dict`)."""
        return self.cv.to_dict()

    @property
    def control_volumes_kind(self) -> str:
        """The control volumes' definition, ``"cells"`` or ``"dual"``."""
        return self.cv.kind

    def with_splits(self, **splits: Split) -> "Dataset":
        """A copy with these splits replaced, the rest shared."""
        return dataclasses.replace(self, splits={**self.splits, **splits})

    _NAMES = ("mesh", "cv", "times", "control_volumes", "control_volumes_kind")

    def __getitem__(self, key: str):
        if key in self._NAMES:
            return getattr(self, key)
        return self.splits[key]

    def __contains__(self, key: str) -> bool:
        return key in self._NAMES or key in self.splits

    def keys(self) -> list[str]:
        """The item names: mesh, cv, times, control_volumes, control_volumes_kind, then the
        splits."""
        return [*self._NAMES, *self.splits]

    def __iter__(self):
        return iter(self.keys())


def read_dataset(path: Path | str) -> Dataset:
    """The one reader of ``dataset.h5`` (the module's docstring)."""
    with h5py.File(path, "r") as f:
        mesh = _read_mesh(f["mesh"])
        cv = read_control_volumes(f["control_volumes"])
        times = f["times"][()] if "times" in f else None
        splits = {}
        for name in ("train", "test"):
            if name in f:
                g = f[name]
                arrays = {k: v[()] for k, v in g.items() if k not in ("u", "params")}
                params = g["params"][()]
                u = g["u"][()] if "u" in g else np.zeros((params.shape[0], 0, cv.num_cvs))
                dt = float(g.attrs["dt"]) if "dt" in g.attrs else None
                splits[name] = Split(u, params, [str(n) for n in g.attrs["parameter_names"]],
                                     arrays, dt)
    return Dataset(mesh, cv, times, splits)


def scenario_parameters(split, i: int) -> dict[str, float]:
    """Scenario i's parameters by name (a :class:`Split` or a split's arrays by name)."""
    return dict(zip(split["parameter_names"], map(float, split["params"][i])))
