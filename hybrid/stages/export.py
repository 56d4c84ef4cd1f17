"""``hybrid export CASE``: XDMF + HDF5 time series of the solver's fields for ParaView.

One series per test scenario, ``OUTPUT/export/test-NNN.xdmf`` (``--train`` adds the
training scenarios), with physical time values. Fields: ``u`` (the reference solution)
and ``balance_residual`` (the per-control-volume balance
``|K|(u^n - u^{n-1}) + Σ_f s Φ_f - S`` of each output interval; zero at t = 0). Values
live where the control volumes live: on vertices (point data) for ``dual``, on cells
(cell data) for ``cells``. Series are spread over ranks like the solve.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mpi4py import MPI

from hybrid.export.xdmf import write_time_series
from hybrid.files import mark_stage_done, stage_is_current
from hybrid.mesh.control_volumes import balance_residual
from hybrid.parallel import ScenarioProgress, my_indices, root_print
from hybrid.stages.solve import SOLVE_SECTIONS, read_dataset, run_solve

__all__ = ["run_export", "cv_fields"]


def _balance(cvd: dict, u: np.ndarray, flux: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Per-control-volume balance residual with a zero first row (no interval ends at t = 0)."""
    res = balance_residual(cvd["volume"], cvd["face_cv"], u, flux, source)
    return np.vstack([np.zeros_like(u[:1]), res])


def cv_fields(kind: str, cvd: dict, fields: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Place control-volume fields (T, N) on the mesh: point data for dual, cell data for cells."""
    if kind == "dual":
        expand = cvd["cv_of_entity"]  # vertex -> control volume (periodic partners share one)
        return {k: v[:, expand] for k, v in fields.items()}, {}
    return {}, dict(fields)


def run_export(case, *, force: bool = False, train: bool = False, comm: MPI.Comm = MPI.COMM_WORLD,
               progress: bool = True) -> list[Path]:
    """Write the series (collective); returns the paths of the .xdmf files."""
    dataset = run_solve(case, comm=comm, progress=progress, announce=False)
    out = Path(case.output_dir) / "export"
    digest = case.hash(*SOLVE_SECTIONS) + ("+train" if train else "")
    data = read_dataset(dataset)
    splits = ["test"] + (["train"] if train else [])
    tasks = [(s, i) for s in splits if s in data for i in range(data[s]["u"].shape[0])]
    names = [out / f"{s}-{i:03d}.xdmf" for s, i in tasks]
    if not force and stage_is_current(out, digest, [p.name for p in names]):
        root_print(f"export: up to date ({out})", comm=comm)
        return names
    mesh, cvd, kind = data["mesh"], data["control_volumes"], data["control_volumes_kind"]
    bar = ScenarioProgress(comm, len(tasks), "export", enabled=progress)
    for j in my_indices(len(tasks), comm):
        split, i = tasks[j]
        d = data[split]
        fields = {"u": d["u"][i], "balance_residual": _balance(cvd, d["u"][i], d["flux"][i], d["source"][i])}
        point, cell = cv_fields(kind, cvd, fields)
        params = dict(zip(d["parameter_names"], d["params"][i]))
        write_time_series(names[j], mesh.points, mesh.cells, mesh.cell_type, data["times"], point, cell,
                          attributes={"case": case.name, "scenario": f"{split} {i}",
                                      "parameters": ", ".join(f"{k}={v:.6g}" for k, v in params.items())})
        bar.done()
    bar.close()
    if comm.rank == 0:
        mark_stage_done(out, digest, files=[p.name for p in names])
        root_print(f"export: {len(names)} ParaView series in {out} (open e.g. {names[0].name if names else '-'})",
                   comm=comm)
    comm.Barrier()
    return names
