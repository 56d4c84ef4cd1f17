"""Scale benchmark of the reference solver: wall time and peak memory against the number of
control volumes, for one scenario solved serially with LU, serially with Newton–Krylov + AMG,
and over 2 ranks' partition of the mesh (``[solver] parallel = "partition"``).

    .venv/bin/python benchmarks/scale.py [--sizes 0.03,0.015,0.0075,0.005,0.0035]
                                         [--out docs/figures/scale.md] [--family wave]

The problem: a porous-medium front (k = u², m = 2) on a dual rectangle (h as given), u = 1
held on the left wall, no flux elsewhere, 10 implicit steps of 0.005 from u = 0.01. Every run is
a fresh process (``mpirun -n 2`` for the partition), which prints its seconds (the solve, and
the mesh + control volumes apart), Newton iterations, peak resident memory (the largest rank's)
and balance residual. Reported as ratios measured in one run: the fitted growth exponent of
time against control volumes for each solver, the 1 → 2 rank speed-up of one distributed solve,
and, at the largest size, hypre's BoomerAMG against PETSc's GAMG as the preconditioner. Never
gated on in CI.

``--family wave``: the wave equation (c = 1, a Gaussian pulse released from rest, the left wall
held at 0, no flux elsewhere, 10 trapezoidal steps of 0.005): one LU per step size serially,
against GMRES + BoomerAMG on every step over the partition (:class:`PartitionWaveSolver`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = (("lu", 1, "serial LU"), ("amg", 1, "serial Newton-Krylov + AMG"),
         ("amg", 2, "2 ranks' partition"))


def one(h: float, mode: str, pc: str, family: str = "gpme") -> dict:
    """One solve in this process (under mpirun for several ranks); returns its measurements on
    rank 0."""
    import numpy as np
    from mpi4py import MPI

    from hybrid.case.expressions import compile_expression
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.distribute import partition_owners
    from hybrid.mesh.shapes import generate
    from hybrid.petsc_options import SOLVER_PREFIX, petsc_options
    from hybrid.solvers.gpme import BoundaryData, Conductivity, GPMESolver
    from hybrid.solvers.partition import PartitionGPMESolver, PartitionWaveSolver
    from hybrid.solvers.wave import WaveSolver

    comm = MPI.COMM_WORLD
    t0 = time.perf_counter()
    mesh = generate({"shape": "rectangle", "h": h}, seed=0)
    cv = build_control_volumes(mesh, "dual")
    cv.assign_owners(*partition_owners(mesh, comm))
    setup = time.perf_counter() - t0
    wave = family == "wave"
    bcs = [BoundaryData("left", "dirichlet", compile_expression("0" if wave else "1"))] + \
          [BoundaryData(n, "flux", compile_expression("0")) for n in ("right", "top", "bottom")]
    options = {} if pc == "hypre" else {"pc_type": pc}
    with petsc_options(SOLVER_PREFIX, options):
        if wave:
            solver = (WaveSolver(cv, 1.0, bcs, {}) if mode == "lu"
                      else PartitionWaveSolver(cv, 1.0, bcs, {}, comm=comm))
            x = cv.centre
            u0 = np.exp(-60 * ((x[:, 0] - 0.5) ** 2 + (x[:, 1] - 0.5) ** 2))
        else:
            k = Conductivity("power", m=2.0)
            solver = (GPMESolver(cv, k, bcs, {}) if mode == "lu"
                      else PartitionGPMESolver(cv, k, bcs, {}, comm=comm))
            u0 = np.full(cv.num_cvs, 0.01)
        comm.Barrier()
        t0 = time.perf_counter()
        traj = solver.run(u0, 0.05, 0.005, 2)
        comm.Barrier()
        seconds = time.perf_counter() - t0
        linear = None if mode == "lu" else \
            solver.linear_iterations() if wave else solver.snes.getLinearSolveIterations()
        solver.close()
    rss = comm.allreduce(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                         op=MPI.MAX) / 1024   # MiB
    balance = float(np.abs(cv.balance_residual(traj.u, traj.flux, traj.source)).max()
                    / (np.abs(traj.u).max() * cv.volume.max()))
    return {"h": h, "cvs": cv.num_cvs, "ranks": comm.size, "mode": mode, "pc": pc,
            "seconds": seconds, "setup_seconds": setup,
            # a wave step is one linear solve: its "Newton iterations" are the steps
            "newton": solver.stats["steps" if wave else "newton_its"],
            "linear_last_step": linear, "peak_rss_mib": rss, "balance": balance}


def run(h: float, mode: str, ranks: int, pc: str = "hypre", family: str = "gpme") -> dict:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [sys.executable, __file__, "--one", str(h), mode, pc, family]
    if ranks > 1:
        cmd = (["mpirun", "-n", str(ranks)]
               + (["--oversubscribe"] if (os.cpu_count() or 1) < ranks else []) + cmd)
    out = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def exponent(xs, ys) -> float:
    import numpy as np
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0.03,0.015,0.0075,0.005,0.0035",
                    help="mesh sizes h, comma-separated")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) here")
    ap.add_argument("--family", default="gpme", choices=("gpme", "wave"),
                    help="the porous-medium front (default) or the wave equation")
    ap.add_argument("--one", nargs=4, metavar=("H", "MODE", "PC", "FAMILY"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        from mpi4py import MPI
        result = one(float(args.one[0]), args.one[1], args.one[2], args.one[3])
        if MPI.COMM_WORLD.rank == 0:
            print(json.dumps(result), flush=True)
        return
    sizes = [float(h) for h in args.sizes.split(",")]
    rows = {}
    for h in sizes:
        for mode, ranks, _ in MODES:
            rows[(h, mode, ranks)] = r = run(h, mode, ranks, family=args.family)
            print(f"h {h:<7g} {r['cvs']:7d} CVs  {mode:3s} x{ranks}: {r['seconds']:8.2f} s  "
                  f"({r['newton']} Newton its, setup {r['setup_seconds']:.1f} s, peak "
                  f"{r['peak_rss_mib']:.0f} MiB, balance {r['balance']:.1e})", flush=True)
    lines = ["| control volumes | serial LU s | serial AMG s | 2 ranks s | 2-rank speed-up (vs "
             "serial AMG) | vs serial LU | Newton its | peak MiB (LU / AMG / 2 ranks, largest "
             "rank) | balance |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for h in sizes:
        lu, amg, two = rows[(h, "lu", 1)], rows[(h, "amg", 1)], rows[(h, "amg", 2)]
        lines.append(f"| {lu['cvs']:,} | {lu['seconds']:.2f} | {amg['seconds']:.2f} | "
                     f"{two['seconds']:.2f} | {amg['seconds'] / two['seconds']:.2f}× | "
                     f"{lu['seconds'] / two['seconds']:.2f}× | {lu['newton']} | "
                     f"{lu['peak_rss_mib']:.0f} / {amg['peak_rss_mib']:.0f} / "
                     f"{two['peak_rss_mib']:.0f} | "
                     f"{max(lu['balance'], amg['balance'], two['balance']):.0e} |")
    cvs = [rows[(h, "lu", 1)]["cvs"] for h in sizes]
    fits = []
    for mode, ranks, label in MODES:
        t = [rows[(h, mode, ranks)]["seconds"] for h in sizes]
        per_it = [rows[(h, mode, ranks)]["seconds"] / rows[(h, mode, ranks)]["newton"]
                  for h in sizes]
        fits.append(f"- {label}: time ∝ N^{exponent(cvs, t):.2f}; per Newton iteration ∝ "
                    f"N^{exponent(cvs, per_it):.2f}")
    largest = sizes[-1]
    gamg = run(largest, "amg", 2, "gamg", args.family)
    hypre = rows[(largest, "amg", 2)]
    fits.append(f"- preconditioner at {hypre['cvs']:,} control volumes, 2 ranks: BoomerAMG "
                f"{hypre['seconds']:.2f} s, GAMG {gamg['seconds']:.2f} s (last step's linear "
                f"iterations {hypre['linear_last_step']} against {gamg['linear_last_step']})")
    text = "\n".join(lines + [""] + fits) + "\n"
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
