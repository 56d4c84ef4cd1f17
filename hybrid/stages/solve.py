"""``hybrid solve CASE``: the reference solver over every train and test scenario.

Parallelism (``[solver] parallel``, :func:`solve_mode`): with ``scenarios``, scenarios are
spread over the MPI ranks (scenario j of the combined train+test list on rank j mod P), each
solved serially (PETSc ``COMM_SELF``, LU) on the whole mesh. A scenario's parameters and random
initial state come from the case seed and its own index, and its solve does not depend on
which rank ran it, so ``dataset.h5`` is identical for any P. With ``partition`` (gpme,
burgers and wave), every scenario is solved over all ranks in turn, each owning the control
volumes of its part of DOLFINx's partition (:mod:`hybrid.solvers.partition`: Newton–Krylov
with algebraic multigrid; the wave equation's linear steps by GMRES with it); the dataset is
then the serial one to the solver's tolerance. ``auto`` partitions meshes of PARTITION_CVS
control volumes and more.

Outputs in ``OUTPUT/solve/``:

``dataset.h5``
    ``mesh/`` (points, cells, tagged facets, boundary names: original numbering),
    ``control_volumes/`` (the complete definition, :mod:`hybrid.dataset`), ``times``, and per
    split (``train``, ``test``): ``u`` (S, T+1, N) control-volume values at the output times,
    ``flux`` (S, T, F) face fluxes integrated over each output interval, ``source`` (S, T, N),
    ``params`` (S, P) with the parameter names as an attribute, ``solve_seconds`` (S,).
``control_volumes.h5``
    The control-volume definition plus ``cv_owner``/``face_owner`` under the
    partition of the run that wrote it (attribute ``ranks``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np
from mpi4py import MPI

from hybrid.case.config import periodic_pairs
from hybrid.case.sections import SOLVE_SECTIONS
from hybrid.dataset import DATASET_FORMAT, read_dataset, write_control_volumes, write_mesh
from hybrid.errors import CaseError
from hybrid.files import atomic_path, commits_together, mark_stage_done, stage_is_current
from hybrid.mesh.control_volumes import ControlVolumes, build_control_volumes
from hybrid.mesh.meshdata import MeshData
from hybrid.parallel import ScenarioProgress, collective, my_indices, root_print
from hybrid.petsc_options import SOLVER_PREFIX, petsc_options
from hybrid.problems import problem_for
from hybrid.solvers.boundaries import boundary_data
from hybrid.solvers.gpme import SolverError

__all__ = ["SOLVE_SECTIONS", "PARTITION_CVS", "solve_mode", "run_solve", "case_mesh",
           "case_control_volumes", "solve_scenario", "boundary_data", "read_dataset",
           "solve_digest"]


def case_mesh(case, comm: MPI.Comm = MPI.COMM_WORLD) -> MeshData:
    """The case's mesh (read or generated on rank 0, the same on every rank)."""
    from hybrid.mesh.load import load_mesh

    mesh = load_mesh(case.mesh, seed=case.seed, comm=comm, file=str(case.display_file))
    case.check_boundary_names(mesh.boundary_names)
    return mesh


def case_control_volumes(case, mesh: MeshData) -> ControlVolumes:
    """The case's control volumes on ``mesh`` (``[mesh] control_volumes``), with its periodic
    boundary pairs identified."""
    return build_control_volumes(mesh, case.mesh["control_volumes"], periodic_pairs(case))


def check_dataset_size(case, cv: ControlVolumes) -> None:
    """Refuse, before any work, a dataset that would not fit in memory: scenarios × (outputs + 1)
    × (control volumes + faces) float64 values, three times over (states, fluxes and sources,
    gathered on rank 0), against half of this machine's memory."""
    scenarios = int(case.data["train"]) + int(case.data["test"])
    outputs = int(case.time["outputs"])
    need = 3 * 8 * scenarios * (outputs + 1) * (cv.num_cvs + cv.num_faces)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have / 2:
        raise CaseError(f"{outputs} outputs × {scenarios} scenarios × {cv.num_cvs + cv.num_faces} "
                        f"control volumes and faces need about {need / 2**30:.1f} GiB, more than "
                        f"half of this machine's {have / 2**30:.0f} GiB; use fewer outputs or "
                        "scenarios ([data] train, test)",
                        file=str(case.display_file), key="time.outputs")


def solve_scenario(case, cv: ControlVolumes, params: dict, split: str, index: int, box=None,
                   mesh: MeshData | None = None, comm: MPI.Comm | None = None):
    """Solve one scenario; returns the family's trajectory
    (:meth:`hybrid.problems.base.Problem.solve`; some families need ``mesh``), with the case's
    ``[solver] petsc_options`` in force; over the ranks of ``comm`` (collective; ``cv`` with its
    owners) where given."""
    with petsc_options(SOLVER_PREFIX, case.solver.get("petsc_options") or {},
                       key="solver.petsc_options", file=str(case.display_file)):
        return problem_for(case).solve(case, cv, mesh, params, split, index, box, comm)


PARTITION_CVS = 8000   # parallel = "auto": solve each scenario over the partition from this many
                       # control volumes
# the wave equation's serial LU is factored once per step size and each step is a triangular
# solve, so the partition pays later (benchmarks/scale.py --family wave, 10 steps, 2 ranks: 0.31
# / 0.73 / 1.60 s per scenario at 21,093 / 46,686 / 95,041 control volumes, against 0.19 / 0.73
# / 2.58 s estimated for two serial-LU scenarios side by side: half of one LU's 0.38 / 1.46 /
# 5.15 s)
PARTITION_CVS_WAVE = 50_000


def solve_mode(case, comm: MPI.Comm, num_cvs: int) -> str:
    """``partition`` (each scenario over every rank) or ``scenarios`` (each rank its own,
    serially) for ``[solver] parallel``. ``auto`` partitions from PARTITION_CVS control volumes:
    measured on a 2-D porous-medium front (m = 2, dual rectangle, 10 steps), one scenario over 2
    ranks took 0.21 / 1.03 / 7.0 s at 3,015 / 11,824 / 46,686 control volumes, against 0.30 /
    2.6 / 30 s with serial LU, so two ranks' scenarios side by side (half the LU time each) are
    faster below about 8,000 and slower above; waves partition from PARTITION_CVS_WAVE. The
    incompressible family has no partitioned solver: it refuses ``partition`` and takes
    ``scenarios`` under ``auto``."""
    setting = case.solver["parallel"]
    if setting == "partition" and not problem_for(case).can_partition(case):
        raise CaseError("parallel = \"partition\" solves gpme, burgers and wave scenarios over "
                        f"the ranks; the {case.pde['family']} solver is serial: "
                        "use \"scenarios\" or \"auto\"",
                        file=str(case.display_file), key="solver.parallel")
    if comm.size == 1 or not problem_for(case).can_partition(case):
        return "scenarios"
    if setting == "auto":
        threshold = PARTITION_CVS_WAVE if case.pde["family"] == "wave" else PARTITION_CVS
        return "partition" if num_cvs >= threshold else "scenarios"
    return setting


def solve_digest(case) -> str:
    """The hash of what the dataset depends on: the solve's sections and the dataset's format."""
    return case.hash(*SOLVE_SECTIONS) + f"+dataset{DATASET_FORMAT}"


SOLVE_OUTPUTS = ("dataset.h5", "control_volumes.h5")   # what solve's stage.json vouches for

@commits_together
def run_solve(case, *, force: bool = False, comm: MPI.Comm = MPI.COMM_WORLD,
              progress: bool = True, announce: bool = True) -> Path:
    """Run the solve stage; returns the path of ``dataset.h5``. Collective."""
    out = Path(case.output_dir) / "solve"
    digest = solve_digest(case)
    if not force and stage_is_current(out, digest, list(SOLVE_OUTPUTS)):
        if announce:
            root_print(f"solve: up to date ({out / 'dataset.h5'}); --force redoes it", comm=comm)
        return out / "dataset.h5"

    mesh = case_mesh(case, comm)
    cv = case_control_volumes(case, mesh)
    from hybrid.mesh.distribute import partition_owners
    cell_owner, vertex_owner = partition_owners(mesh, comm)
    cv.assign_owners(cell_owner, vertex_owner)

    check_dataset_size(case, cv)
    box = (mesh.points.min(axis=0), mesh.points.max(axis=0))
    splits = [("train", case.scenarios("train")), ("test", case.scenarios("test"))]
    tasks = [(split, i, params) for split, scen in splits for i, params in enumerate(scen)]
    root_print(f"solve: {case.name}: {len(tasks)} scenarios ({len(splits[0][1])} train, "
               f"{len(splits[1][1])} test), {cv.num_cvs} control volumes ({cv.kind}), "
               f"{cv.num_faces} faces, on {comm.size} rank(s)", comm=comm)
    partition = solve_mode(case, comm, cv.num_cvs) == "partition"
    if partition:
        root_print(f"solve: each scenario over the {comm.size} ranks' partition of the mesh "
                   "(Newton-Krylov, AMG)",
                   comm=comm)
    bar = ScenarioProgress(comm, len(tasks), "solve", enabled=progress)
    mine = {}
    error = None
    # partition: every rank works on every scenario (rank 0 keeps it); scenarios: each rank its own,
    # serially
    for j in (range(len(tasks)) if partition else my_indices(len(tasks), comm)):
        split, i, params = tasks[j]
        t0 = time.perf_counter()
        try:
            traj = solve_scenario(case, cv, params, split, i, box=box, mesh=mesh,
                                  comm=comm if partition else None)
        except (SolverError, CaseError) as exc:
            error = f"{split} scenario {i} ({params}): {exc}"
            break
        if comm.rank == 0 or not partition:
            mine[j] = (traj, time.perf_counter() - t0)
            bar.done()
    errors = [e for e in comm.allgather(error) if e]
    if errors:
        bar.discard()
        raise CaseError("the reference solver failed: " + errors[0])
    bar.close()

    gathered = comm.gather(mine, root=0)
    problem = problem_for(case)
    with collective(comm):
        if comm.rank == 0:
            results = {}
            for part in gathered:
                results.update(part)
            names = sorted(tasks[0][2]) if tasks else []
            with atomic_path(out / "dataset.h5") as tmp:
                with h5py.File(tmp, "w") as f:
                    f.attrs["case"] = case.name
                    f.attrs["hash"] = digest
                    f.attrs["control_volumes"] = cv.kind
                    write_mesh(f.create_group("mesh"), mesh)
                    write_control_volumes(f.create_group("control_volumes"), cv, owners=False)
                    first = results[0][0] if results else None
                    if first is not None:
                        f["times"] = first.times
                    offset = 0
                    for split, scen in splits:
                        g = f.create_group(split)
                        idx = range(offset, offset + len(scen))
                        offset += len(scen)
                        g.attrs["parameter_names"] = names
                        g["params"] = np.array([[tasks[j][2][n] for n in names]
                                                for j in idx]).reshape(len(scen), len(names))
                        if not len(scen):
                            continue
                        g["u"] = np.stack([results[j][0].u for j in idx])
                        for name, arr in problem.dataset_arrays([results[j][0]
                                                                 for j in idx]).items():
                            g[name] = arr
                        g["solve_seconds"] = np.array([results[j][1] for j in idx])
                        g["newton_iterations"] = np.array([results[j][0].stats["newton_its"]
                                                           for j in idx])
                        g.attrs["dt"] = results[idx[0]][0].stats["dt"]
            with atomic_path(out / "control_volumes.h5") as tmp:
                with h5py.File(tmp, "w") as f:
                    write_control_volumes(f, cv, owners=True)
                    f.attrs["ranks"] = comm.size
            seconds = [s for _, s in results.values()]
            exactness, text = problem.solve_summary(cv, [t for t, _ in results.values()])
            mark_stage_done(out, digest, SOLVE_OUTPUTS, scenarios=len(tasks), ranks=comm.size,
                            **exactness)
            root_print(f"solve: wrote {out / 'dataset.h5'}  (mean {np.mean(seconds):.2f} s per "
                       f"scenario{text})",
                       comm=comm)
    return out / "dataset.h5"
