"""The public Python API: the ``hybrid`` commands as functions, and the coupling layer on arrays.

    from hybrid.stages import api
    case = api.load_case("cases/stefan-1d")
    dataset = api.solve(case)                   # results/solve/dataset.h5
    api.train(case); api.predict(case)          # the FNO ensemble and its constraint variants
    data = api.read_dataset(dataset)            # mesh, control volumes, train/test trajectories
    exact = api.constrain_arrays(case, {"u_mean": u, "u_var": v, "flux_mean": q, "flux_var": w})
    api.constrain(case, "mine.h5", "mine")      # results/external/mine/: report and ParaView series
    api.export(case)                            # ParaView series of the solver and the variants

It sits in the stage layer, beside the CLI's commands, as their Python face. Every function
that runs a stage is collective over ``comm`` (all ranks call it, as with
``mpirun -n P python script.py``) and reuses a stage whose inputs did not change; mistakes
raise :class:`hybrid.errors.CaseError` with the one message the command would print.
"""

from __future__ import annotations

from pathlib import Path

from mpi4py import MPI

from hybrid.case import load_case
from hybrid.errors import CaseError
from hybrid.stages.solve import read_dataset

__all__ = ["load_case", "solve", "train", "predict", "validate", "export", "constrain",
           "constrain_arrays", "read_dataset", "CaseError"]


def solve(case, *, force: bool = False, comm: MPI.Comm = MPI.COMM_WORLD,
          progress: bool = False) -> Path:
    """The reference solver on every scenario; the path of ``dataset.h5``."""
    from hybrid.stages.solve import run_solve
    return run_solve(case, force=force, comm=comm, progress=progress)


def train(case, *, force: bool = False, comm: MPI.Comm = MPI.COMM_WORLD,
          progress: bool = False) -> Path:
    """The surrogate ensemble (and the SoftC/BOON ones the case compares); the train folder."""
    from hybrid.stages.train import run_train
    return run_train(case, force=force, comm=comm, progress=progress)


def predict(case, *, force: bool = False, comm: MPI.Comm = MPI.COMM_WORLD,
            progress: bool = False) -> Path:
    """The ensemble's test predictions and every constraint variant; the predict folder."""
    from hybrid.stages.predict import run_predict
    return run_predict(case, force=force, comm=comm, progress=progress)


def validate(case, *, force: bool = False, comm: MPI.Comm = MPI.COMM_WORLD,
             progress: bool = False) -> Path:
    """Scores, report and figures; the path of ``report.md``."""
    from hybrid.stages.validate import run_validate
    return run_validate(case, force=force, comm=comm, progress=progress)


def export(case, *, force: bool = False, fmt: str = "xdmf", comm: MPI.Comm = MPI.COMM_WORLD,
           progress: bool = False) -> list[Path]:
    """ParaView series (``fmt``: xdmf, or vtu for .pvd + .vtu); their paths."""
    from hybrid.stages.export import run_export
    return run_export(case, force=force, fmt=fmt, comm=comm, progress=progress)


def constrain(case, prediction: str | Path, name: str, *, force: bool = False,
              comm: MPI.Comm = MPI.COMM_WORLD, progress: bool = False) -> Path:
    """``hybrid constrain``: FILE's prediction through every variant; ``results/external/NAME``."""
    from hybrid.stages.external import run_constrain
    return run_constrain(case, prediction, name, force=force, comm=comm, progress=progress)


def constrain_arrays(case, arrays: dict, variant: str = "per-cell+boundary") -> dict:
    """One variant of a prediction held in memory (the arrays of ``hybrid constrain``'s FILE),
    after :func:`solve`: ``u_mean``, ``u_var``, ``flux_mean`` and the rows' ``residual``."""
    from hybrid.stages.external import constrain_arrays as run
    return run(case, arrays, variant)
