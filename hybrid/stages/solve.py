"""``hybrid solve CASE``: the reference solver over every train and test scenario.

Parallelism: scenarios are independent, so they are spread over the MPI ranks
(scenario j of the combined train+test list on rank j mod P); each scenario is solved
serially (PETSc ``COMM_SELF``) on the whole mesh. A scenario's parameters and random
initial state come from the case seed and its own index, and its solve does not depend
on which rank ran it, so ``dataset.h5`` is identical for any P. For meshes too large for
one rank per scenario, the control volumes carry DOLFINx's partition (owner ranks) for
the distributed stages.

Outputs in ``OUTPUT/solve/``:

``dataset.h5``
    ``mesh/`` (points, cells, tagged facets, boundary names: original numbering),
    ``control_volumes/`` (the definition), ``times``, and per split (``train``,
    ``test``): ``u`` (S, T+1, N) control-volume values at the output times, ``flux``
    (S, T, F) face fluxes integrated over each output interval, ``source`` (S, T, N),
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

from hybrid.errors import CaseError
from hybrid.files import atomic_path, commits_together, mark_stage_done, stage_is_current
from hybrid.mesh.control_volumes import ControlVolumes, build_control_volumes
from hybrid.mesh.meshdata import MeshData
from hybrid.parallel import ScenarioProgress, collective, my_indices, root_print
from hybrid.petsc_options import SOLVER_PREFIX, petsc_options
from hybrid.solvers.boundaries import boundary_data, wall_order
from hybrid.solvers.gpme import Conductivity, GPMESolver, SolverError

__all__ = ["SOLVE_SECTIONS", "run_solve", "case_mesh", "case_control_volumes", "solve_scenario",
           "boundary_data", "read_dataset"]

SOLVE_SECTIONS = ("case", "mesh", "pde", "parameters", "initial", "boundary", "time", "solver", "data")


def case_mesh(case, comm: MPI.Comm = MPI.COMM_WORLD) -> MeshData:
    """The case's mesh (read or generated on rank 0, the same on every rank)."""
    from hybrid.mesh.load import load_mesh

    mesh = load_mesh(case.mesh, seed=case.seed, comm=comm, file=str(case.display_file))
    case.check_boundary_names(mesh.boundary_names)
    return mesh


def periodic_pairs(case) -> list[tuple[str, str]]:
    pairs, seen = [], set()
    for name, bc in case.boundaries.items():
        if bc.type == "periodic" and name not in seen:
            pairs.append((name, bc.partner))
            seen.update((name, bc.partner))
    return pairs


def case_control_volumes(case, mesh: MeshData) -> ControlVolumes:
    return build_control_volumes(mesh, case.mesh["control_volumes"], periodic_pairs(case))


def _solve_flow(case, cv: ControlVolumes, mesh: MeshData, params: dict, split: str, index: int):
    """One Navier–Stokes scenario: the velocity (T+1, N, d), pressure and vorticity (T+1, N)
    in control-volume order, and the control volumes' net volume flux."""
    from hybrid.case.initial import initial_values
    from hybrid.case.parameters import scenario_rng
    from hybrid.solvers.navier_stokes import NavierStokesSolver, Wall

    where = dict(file=str(case.display_file))
    if cv.kind != "dual" or mesh.cell_type != "triangle":
        raise CaseError("navier-stokes needs a triangle mesh with control_volumes = \"dual\" (velocities live "
                        "at the vertices)", key="mesh.control_volumes", **where)
    walls = []
    # in the case file's order: where walls meet, the one listed later owns the shared nodes
    for name in wall_order(case, mesh):
        bc = case.boundary_condition(name)
        if bc.type != "dirichlet" or not isinstance(bc.value, list):
            raise CaseError(f"navier-stokes: boundary {name!r} needs type = \"dirichlet\" with a vector value, "
                            "e.g. value = [\"1\", \"0\"] (found " + (bc.type if bc.type != "dirichlet" else
                                                                         "a scalar value") + ")",
                            key=f"boundary.{name}", **where)
        walls.append(Wall(name, tuple(bc.value)))
    rng = scenario_rng(case.seed, split, index, "initial")
    initial = lambda points: initial_values(case, points, params, rng)
    solver = NavierStokesSolver(mesh, float(params["nu"]), walls, params, rtol=case.solver["newton_rtol"],
                                atol=case.solver["newton_atol"], max_it=case.solver["newton_max_it"])
    face_flux = []
    try:
        flow = solver.run(case.time["t_end"], case.time["dt"], case.time["outputs"], initial=initial,
                          at_output=lambda t: face_flux.append(solver.dual_face_fluxes(cv, t)))
    except RuntimeError as exc:
        raise SolverError(str(exc)) from None
    order = cv.entity_of_cv          # vertex of each control volume
    flow.u, flow.p, flow.vorticity = flow.u[:, order], flow.p[:, order], flow.vorticity[:, order]
    flow.face_flux = np.array(face_flux)                    # (T+1, F) exact volume fluxes of the dual faces
    flow.net_flux = (cv.incidence() @ flow.face_flux.T).T   # (T+1, N): zero up to the solver's tolerance
    return flow


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
        raise CaseError(f"{outputs} outputs × {scenarios} scenarios × {cv.num_cvs + cv.num_faces} control volumes "
                        f"and faces need about {need / 2**30:.1f} GiB, more than half of this machine's "
                        f"{have / 2**30:.0f} GiB; use fewer outputs or scenarios ([data] train, test)",
                        file=str(case.display_file), key="time.outputs")


def check_finite_data(case, cv: ControlVolumes, params: dict, u0: np.ndarray) -> None:
    """The initial state, and the source and boundary data at every solver step, are finite:
    refused here, naming the key, before PETSc sees a NaN (its tolerances would become NaN)."""
    where = dict(file=str(case.display_file))
    bad = np.flatnonzero(~np.isfinite(u0))
    if len(bad):
        raise CaseError(f"the initial state is not finite at {len(bad)} control volume(s), e.g. "
                        f"x = {np.round(cv.centre[bad[0]], 6).tolist()}", key="initial.value", **where)
    steps = np.append(np.arange(0.0, case.time["t_end"], case.time["dt"]), case.time["t_end"])
    checks = []
    if case.pde.get("source") is not None:
        checks.append(("pde.source", case.pde["source"], cv.centre))
    keys = {"dirichlet": "value", "flux": "flux", "normal_derivative": "normal_derivative"}
    for bc in boundary_data(case):
        if bc.kind in keys and bc.name in cv.boundary_names:
            checks.append((f"boundary.{bc.name}.{keys[bc.kind]}", bc.expr, cv.face_centroid[cv.faces_of(bc.name)]))
    for key, expr, points in checks:
        for t in (steps[:1] if expr.is_constant else steps):
            values = np.asarray(expr(points, t=float(t), params=params), float)
            if not np.all(np.isfinite(values)):
                raise CaseError(f"is not finite at t = {t:.6g}", key=key, **where)


def _solve_wave(case, cv: ControlVolumes, params: dict, split: str, index: int, box):
    """One wave-equation scenario (released from rest); see :mod:`hybrid.solvers.wave`."""
    from hybrid.case.initial import initial_values
    from hybrid.case.parameters import scenario_rng
    from hybrid.solvers.wave import WaveSolver

    source = case.pde.get("source")
    if source is not None and not (source.is_constant and source.constant_value() == 0.0):
        raise CaseError('the wave solver supports source = "0" only', file=str(case.display_file), key="pde.source")
    rng = scenario_rng(case.seed, split, index, "initial")
    u0 = initial_values(case, cv.centre, params, rng, box=box)
    check_finite_data(case, cv, params, u0)
    try:
        solver = WaveSolver(cv, float(params["c"]), boundary_data(case), params, theta=case.time["theta"])
    except ValueError as exc:
        raise CaseError(f"wave: {exc}", file=str(case.display_file), key="mesh.control_volumes") from None
    try:
        return solver.run(u0, case.time["t_end"], case.time["dt"], case.time["outputs"])
    finally:
        solver.close()


def solve_scenario(case, cv: ControlVolumes, params: dict, split: str, index: int, box=None,
                   mesh: MeshData | None = None):
    """Solve one scenario; returns the :class:`~hybrid.solvers.gpme.Trajectory` (navier-stokes:
    a :class:`~hybrid.solvers.navier_stokes.FlowTrajectory`, which needs ``mesh``), with the
    case's ``[solver] petsc_options`` in force."""
    with petsc_options(SOLVER_PREFIX, case.solver.get("petsc_options") or {}, key="solver.petsc_options",
                       file=str(case.display_file)):
        return _solve_scenario(case, cv, params, split, index, box, mesh)


def _solve_scenario(case, cv: ControlVolumes, params: dict, split: str, index: int, box, mesh):
    from hybrid.case.initial import initial_values
    from hybrid.case.parameters import scenario_rng

    family = case.pde["family"]
    if family == "navier-stokes":
        return _solve_flow(case, cv, mesh, params, split, index)
    if family == "wave":
        return _solve_wave(case, cv, params, split, index, box)
    kind = case.pde["k"] if family == "gpme" else "constant"
    convection = None
    if family == "burgers":   # u_t + Σ_i (u²/2)_{x_i} = ν Δu: the GPME solver with k = ν and b = (1, ..., 1)
        params = dict(params, k=params["nu"])
        convection = np.ones(cv.dim)
    if kind == "stefan" and params.get("smoothing", 0.0) <= 0:
        raise CaseError("the Stefan step needs smoothing > 0 (Newton needs a derivative); "
                        "use e.g. smoothing = 0.005", file=str(case.display_file), key="pde.smoothing")
    rng = scenario_rng(case.seed, split, index, "initial")
    # the random field lives on the mesh's bounding box, so it is the same field on any mesh of the domain
    u0 = initial_values(case, cv.centre, params, rng, box=box)
    check_finite_data(case, cv, params, u0)
    solver = GPMESolver(cv, Conductivity.from_params(kind, params), boundary_data(case), params,
                        source=case.pde.get("source"), theta=case.time["theta"],
                        rtol=case.solver["newton_rtol"], atol=case.solver["newton_atol"],
                        max_it=case.solver["newton_max_it"], convection=convection,
                        scheme=case.pde.get("convection", "central"))
    try:
        return solver.run(u0, case.time["t_end"], case.time["dt"], case.time["outputs"])
    finally:
        solver.close()


def _write_mesh(group: h5py.Group, mesh: MeshData) -> None:
    group["points"] = mesh.points
    group["cells"] = mesh.cells
    group["facets"] = mesh.facets
    group["facet_tags"] = mesh.facet_tags
    group.attrs["cell_type"] = mesh.cell_type
    for name, tag in mesh.boundary_names.items():
        group.attrs[f"boundary:{name}"] = int(tag)


def _write_cvs(group: h5py.Group, cv: ControlVolumes, owners: bool) -> None:
    group.attrs["kind"] = cv.kind
    for name, arr in cv.to_dict().items():
        if not owners and name in ("cv_owner", "face_owner"):
            continue
        group[name] = arr
    for name, tag in cv.boundary_names.items():
        group.attrs[f"boundary:{name}"] = int(tag)


SOLVE_OUTPUTS = ("dataset.h5", "control_volumes.h5")   # what solve's stage.json vouches for

@commits_together
def run_solve(case, *, force: bool = False, comm: MPI.Comm = MPI.COMM_WORLD, progress: bool = True,
              announce: bool = True) -> Path:
    """Run the solve stage; returns the path of ``dataset.h5``. Collective."""
    out = Path(case.output_dir) / "solve"
    digest = case.hash(*SOLVE_SECTIONS)
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
    root_print(f"solve: {case.name}: {len(tasks)} scenarios ({len(splits[0][1])} train, {len(splits[1][1])} test), "
               f"{cv.num_cvs} control volumes ({cv.kind}), {cv.num_faces} faces, on {comm.size} rank(s)", comm=comm)
    bar = ScenarioProgress(comm, len(tasks), "solve", enabled=progress)
    mine = {}
    error = None
    for j in my_indices(len(tasks), comm):
        split, i, params = tasks[j]
        t0 = time.perf_counter()
        try:
            traj = solve_scenario(case, cv, params, split, i, box=box, mesh=mesh)
        except (SolverError, CaseError) as exc:
            error = f"{split} scenario {i} ({params}): {exc}"
            break
        mine[j] = (traj, time.perf_counter() - t0)
        bar.done()
    errors = [e for e in comm.allgather(error) if e]
    if errors:
        bar.discard()
        raise CaseError("the reference solver failed: " + errors[0])
    bar.close()

    gathered = comm.gather(mine, root=0)
    flow = case.pde["family"] == "navier-stokes"
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
                    _write_mesh(f.create_group("mesh"), mesh)
                    _write_cvs(f.create_group("control_volumes"), cv, owners=False)
                    first = results[0][0] if results else None
                    if first is not None:
                        f["times"] = first.times
                    offset = 0
                    for split, scen in splits:
                        g = f.create_group(split)
                        idx = range(offset, offset + len(scen))
                        offset += len(scen)
                        g.attrs["parameter_names"] = names
                        g["params"] = np.array([[tasks[j][2][n] for n in names] for j in idx]).reshape(len(scen), len(names))
                        if not len(scen):
                            continue
                        g["u"] = np.stack([results[j][0].u for j in idx])
                        if flow:
                            for name, attr in (("pressure", "p"), ("vorticity", "vorticity"),
                                               ("face_flux", "face_flux"), ("net_volume_flux", "net_flux")):
                                g[name] = np.stack([getattr(results[j][0], attr) for j in idx])
                        else:
                            g["flux"] = np.stack([results[j][0].flux for j in idx])
                            g["source"] = np.stack([results[j][0].source for j in idx])
                            g["max_correction"] = np.array([results[j][0].stats["max_correction"] for j in idx])
                        g["solve_seconds"] = np.array([results[j][1] for j in idx])
                        g["newton_iterations"] = np.array([results[j][0].stats["newton_its"] for j in idx])
                        g.attrs["dt"] = results[idx[0]][0].stats["dt"]
            with atomic_path(out / "control_volumes.h5") as tmp:
                with h5py.File(tmp, "w") as f:
                    _write_cvs(f, cv, owners=True)
                    f.attrs["ranks"] = comm.size
            seconds = [s for _, s in results.values()]
            if flow:
                # the Taylor–Hood velocity is divergence-free weakly, not per median-dual cell: report by how much
                scale = max((np.abs(t.u).max() * cv.face_area.max() for t, _ in results.values()), default=1.0)
                net = max((float(np.abs(t.net_flux).max()) for t, _ in results.values()), default=0.0) / scale
                mark_stage_done(out, digest, SOLVE_OUTPUTS, scenarios=len(tasks), ranks=comm.size,
                                max_relative_net_volume_flux=net)
                root_print(f"solve: wrote {out / 'dataset.h5'}  (mean {np.mean(seconds):.2f} s per scenario; largest "
                           f"net volume flux out of a control volume {net:.1e} of max|u| x max face area)", comm=comm)
            else:
                balance = max((float(np.abs(cv.balance_residual(t.u, t.flux, t.source)).max()
                                     / max(np.abs(t.u).max() * cv.volume.max(), 1e-300)) for t, _ in results.values()),
                              default=0.0)
                mark_stage_done(out, digest, SOLVE_OUTPUTS, scenarios=len(tasks), ranks=comm.size, max_relative_balance=balance)
                root_print(f"solve: wrote {out / 'dataset.h5'}  (mean {np.mean(seconds):.2f} s per scenario, "
                           f"max relative balance residual {balance:.1e})", comm=comm)
    return out / "dataset.h5"


def read_dataset(path: Path | str) -> dict:
    """Load ``dataset.h5`` into plain arrays (small datasets; larger ones should slice h5py directly)."""
    out: dict = {}
    with h5py.File(path, "r") as f:
        m = f["mesh"]
        names = {k.split(":", 1)[1]: int(v) for k, v in m.attrs.items() if k.startswith("boundary:")}
        out["mesh"] = MeshData(m["points"][()], m["cells"][()], str(m.attrs["cell_type"]),
                               m["facets"][()], m["facet_tags"][()], names)
        out["control_volumes"] = {k: v[()] for k, v in f["control_volumes"].items()}
        out["control_volumes_kind"] = str(f["control_volumes"].attrs["kind"])
        out["times"] = f["times"][()] if "times" in f else None
        for split in ("train", "test"):
            if split in f:
                g = f[split]
                out[split] = {k: v[()] for k, v in g.items()}
                out[split]["parameter_names"] = list(g.attrs["parameter_names"])
    return out
