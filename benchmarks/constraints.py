"""Constraint-update benchmark: where its time goes, its cost against the surrogate's inference
and the solver, its growth with the number of control volumes, the accuracy of the variance
estimate, and the 1 vs 2 rank distributed update. Ratios and fitted exponents from one run;
never gated on.

    .venv/bin/python benchmarks/constraints.py [--results DIR] [--largest H]

1. Per case, from every run case's ``results/predict/metrics.json`` under ``DIR/cases``
   (default: this checkout): the main variant's seconds per test scenario split into phases
   (prior: packing the prediction; rows: the scenario's right-hand side; assemble: A₀'s
   values; factor: numeric Cholesky or the preconditioner's; mean; posterior: samples and
   variance), and as ratios: mean / inference, update / inference, solver / (inference +
   update), and the plan's seconds (built once per case and variant, as inference leaves out
   loading the members; the last columns add it shared over the test scenarios, and name the
   prior shape, whose case-level form factors once per case). Targets: mean ≤ 1×, update ≤ 5×
   inference; solver ≥ 100× inference + update.
2. Growth: per-cell + Dirichlet rows on dual rectangles from about 10³ to 10⁵ control volumes
   × 10 intervals, a random prediction with a diagonal covariance (state variances 1e-3, flux
   variances 1e-5): seconds of the plan (once per case and variant), and per scenario of the
   mean and of mean + variance, against an untrained FNO
   ensemble's inference on a grid of the mesh's resolution (4 members, as the shipped cases),
   with the fitted exponents. Target: exponent ≤ 1.2 for mean + variance.
3. The variance estimate's relative RMS error against the exact diagonal on the smallest
   rectangle and a 1-D interval (stated and true).
4. Packages: the plan's Cholesky of G Σ Gᵀ through CHOLMOD, PETSc's own (nested dissection)
   and MUMPS, on 1-D intervals and dual rectangles: what sets ``NATIVE_ROWS``.
5. Ranks: the distributed update (PETSc over the control volumes' partition) of per-cell rows
   on a rectangle, mean and 32 Matheron samples, under ``mpirun -n 1`` and ``-n 2``.
6. Shared (``--only shared [--largest H]``): at 2 ranks on the dual rectangle of h = H (default
   0.0035, about 10⁵ control volumes), per-cell + Dirichlet rows × 10 intervals, three test
   scenarios on the case-level prior shape through the driver's distributed update
   (:class:`~hybrid.constraints.distributed.DistributedShapePlan`): the plan's seconds (one MUMPS
   factorisation, the 200 Matheron samples once) and each scenario's (mean, scaled variance and
   100 samples), against one scenario of the partitioned reference solver on the same mesh (the
   porous-medium front of benchmarks/scale.py, 10 steps) and an untrained FNO's inference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHASES = ("prior", "rows", "assemble", "factor", "mean", "posterior")


def per_case(results: Path) -> None:
    head = f"{'case':22s} {'variant':18s} " + " ".join(f"{p:>9s}" for p in PHASES)
    print(head
          + f" {'probes':>6s} {'mean/inf':>8s} {'upd/inf':>8s} {'sol/(inf+upd)':>13s} {'plan':>9s}"
          + f" {'(upd+plan/S)/inf':>16s} {'shape':>8s}")
    for metrics_file in sorted(results.glob("cases/*/results/predict/metrics.json")):
        m = json.loads(metrics_file.read_text())
        variants = m.get("variants") or {}
        variant = "per-cell+boundary" if "per-cell+boundary" in variants else "per-cell"
        if variant not in variants or "update_phases" not in variants[variant]:
            continue
        v, inf, solver = variants[variant], m["surrogate_seconds"], m["solver_seconds"]
        ms = " ".join(f"{1e3 * v['update_phases'].get(p, 0.0):7.1f}ms" for p in PHASES)
        plan = v.get("plan_seconds")
        # the plan (and a case-level shape's factorisation and variance) shared by the S test
        # scenarios
        amortised = (v["update_seconds"] + (plan or 0.0) / max(len(m.get("scenarios") or [1]), 1))
        shape = (m.get("prior_shape") or {}).get("chosen", "–")
        print(f"{metrics_file.parts[-4]:22s} {variant:18s} {ms} "
              f"{v['update_phases'].get('count_probes', 0):6.0f} "
              f"{v['mean_update_seconds'] / inf:8.2f} {v['update_seconds'] / inf:8.2f} "
              f"{solver / (inf + v['update_seconds']):13.1f} "
              f"{'–' if plan is None else f'{1e3 * plan:.1f}ms':>9s} "
              f"{amortised / inf:16.2f} {shape:>8s}")


def _problem(h: float, T: int = 10, seed: int = 0):
    from hybrid.constraints.rows import StateLayout, conservation_rows, dirichlet_rows, stack_rows
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.shapes import generate

    cv = build_control_volumes(generate({"shape": "rectangle", "h": h}, seed=0), "dual")
    layout = StateLayout(cv.num_cvs, cv.num_faces, T)
    rng = np.random.default_rng(seed)
    left = np.unique(cv.face_cv[cv.faces_of("left"), 0])
    rows = stack_rows([conservation_rows(cv, layout, rng.standard_normal(cv.num_cvs)),
                       dirichlet_rows(layout, left, np.ones((T, len(left))))])
    states = T * cv.num_cvs
    var = np.concatenate([rng.uniform(0.5, 1.5, states) * 1e-3,
                          rng.uniform(0.5, 1.5, layout.size - states) * 1e-5])
    return cv, layout, rows, var, rng.standard_normal(layout.size)


def _inference_seconds(cv, T: int, members: int = 4) -> float:
    """One scenario's inference by an untrained FNO ensemble on a grid of the mesh's resolution."""
    import torch

    from hybrid.surrogates.fno import FNO

    side = int(2 ** np.ceil(np.log2(max(16, np.sqrt(cv.num_cvs)))))
    model = FNO(in_channels=4, out_channels=T + 2 * T, dim=2, modes=12, width=24, layers=4,
                padding=side // 8)
    model.eval()
    x = torch.randn(1, 4, side, side)
    torch.set_num_threads(1)
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        for _ in range(members):
            model(x)
    return time.perf_counter() - t0


def growth(largest: float) -> None:
    from hybrid.constraints.update import GaussianUpdate

    sizes, mean_s, full_s = [], [], []
    print(f"  {'CVs':>7s} {'rows':>8s} {'method':>8s} {'plan s':>7s} {'mean s':>8s} "
          f"{'mean+var s':>10s} {'probes':>6s} {'inference s':>11s} {'mean/inf':>8s} "
          f"{'(mean+var)/inf':>14s}")
    for h in [h for h in (0.035, 0.02, 0.011, 0.006, 0.0035) if h >= largest]:
        cv, layout, rows, var, mu = _problem(h)
        states = slice(0, layout.T * layout.N)
        tp = time.perf_counter()
        # once per case: another scenario's
        plan = GaussianUpdate(rows.G, rows.b, var * 1.5, layout=layout).plan
        t0 = time.perf_counter()
        update = GaussianUpdate(rows.G, rows.b, var, layout=layout, plan=plan)
        update.mean(mu)
        t1 = time.perf_counter()
        update._variance(64, 0, states)
        t2 = time.perf_counter()
        inf = _inference_seconds(cv, layout.T)
        sizes.append(cv.num_cvs)
        mean_s.append(t1 - t0)
        full_s.append(t2 - t0)
        print(f"  {cv.num_cvs:7d} {rows.count:8d} {update.plan.method:>8s} {t0 - tp:7.2f} "
              f"{t1 - t0:8.3f} {t2 - t0:10.3f} {update.probes_used:6d} {inf:11.3f} "
              f"{(t1 - t0) / inf:8.2f} {(t2 - t0) / inf:14.2f}")
        update.plan.destroy()
    if len(sizes) >= 3:
        for label, seconds in (("mean", mean_s), ("mean + variance", full_s)):
            slope = np.polyfit(np.log(sizes[1:]), np.log(seconds[1:]), 1)[0]
            print(f"  fitted exponent ({label}, all but the smallest mesh): {slope:.2f}")


def _interval_problem(cells: int, T: int = 20, flux_var: float = 1e-5):
    """Per-cell + Dirichlet rows on a jittered dual interval × T intervals, and a random diagonal
    prior (state variances about 1e-3, flux variances about ``flux_var``)."""
    from hybrid.constraints.rows import StateLayout, conservation_rows, dirichlet_rows, stack_rows
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.shapes import generate

    cv = build_control_volumes(generate({"shape": "interval", "cells": cells, "jitter": 0.3},
                                        seed=0), "dual")
    layout = StateLayout(cv.num_cvs, cv.num_faces, T)
    rng = np.random.default_rng(1)
    rows = stack_rows([conservation_rows(cv, layout, rng.standard_normal(cv.num_cvs)),
                       dirichlet_rows(layout, np.array([0]), np.ones((T, 1)))])
    states = T * cv.num_cvs
    var = np.concatenate([rng.uniform(0.5, 1.5, states) * 1e-3,
                          rng.uniform(0.5, 1.5, layout.size - states) * flux_var])
    return layout, rows, var


def variance_error() -> None:
    from hybrid.constraints.update import PINNED, GaussianUpdate

    problems = {"rectangle h=0.1, T=10": _problem(0.1)[1:4]}
    for flux_var in (1e-5, 1e-8):
        label = f"interval 200, T=20, flux var {flux_var:g}"
        problems[label] = _interval_problem(200, 20, flux_var)
    for label, (layout, rows, var) in problems.items():
        states = slice(0, layout.T * layout.N)
        update = GaussianUpdate(rows.G, rows.b, var, layout=layout)
        t0 = time.perf_counter()
        exact = update.variance(exact=True)[states]
        t1 = time.perf_counter()
        estimate = update._variance(256, 0, states)
        t2 = time.perf_counter()
        rel = (estimate - exact) / np.maximum(exact, PINNED * var[states])
        print(f"  {label:36s}: {update.probes_used:4d} probes, relative RMS error "
              f"{np.sqrt(np.mean(rel ** 2)):.3f} (stated "
              f"{np.sqrt(np.mean(update.probe_error ** 2)):.3f}), max {np.abs(rel).max():.2f}; "
              f"{t2 - t1:.3f} s against {t1 - t0:.2f} s for the exact dense formula")


def distributed_worker(h: float, out: str, method: str = "auto") -> None:
    """Run under mpirun: time the distributed update, save the mean on rank 0."""
    from mpi4py import MPI

    from hybrid.constraints.distributed import DistributedUpdate, entry_owners
    from hybrid.constraints.rows import StateLayout, conservation_rows
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.distribute import partition_owners
    from hybrid.mesh.shapes import generate

    comm = MPI.COMM_WORLD
    mesh = generate({"shape": "rectangle", "h": h}, seed=0)
    cv = build_control_volumes(mesh, "dual")
    cv.assign_owners(*partition_owners(mesh, comm))
    layout = StateLayout(cv.num_cvs, cv.num_faces, 10)
    rng = np.random.default_rng(0)
    rows = conservation_rows(cv, layout, rng.standard_normal(cv.num_cvs))
    mu, var = rng.standard_normal(layout.size), rng.uniform(0.5, 1.5, layout.size)
    comm.Barrier()
    t0 = time.perf_counter()
    update = DistributedUpdate(rows.G, rows.b, var, None, 0.0, entry_owners(cv, layout.T), comm,
                               method=method)
    mean = update.mean(mu[update.entries])
    t1 = time.perf_counter()
    update.sample(update.prior_samples(mean, 32, seed=1), seed=1)
    t2 = time.perf_counter()
    full = update.gather(mean)
    if comm.rank == 0:
        np.save(out, full)
        print(json.dumps({"cvs": cv.num_cvs, "rows": rows.count, "mean_s": t1 - t0,
                          "samples_s": t2 - t1, "method": update.method}))


def ranks(sizes=(0.0125, 0.008)) -> None:
    """The distributed update at 1 and 2 ranks, MUMPS's Cholesky (the default) against CG + GAMG
    at 1e-14: the mean (factorisation or preconditioner included) and 32 posterior samples."""
    import os
    import subprocess
    import tempfile

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    print("  | control volumes | rows | solver | ranks | mean s | 32 samples s | speed-up 1 -> 2 "
          "(mean / samples) |")
    print("  |---:|---:|---|---:|---:|---:|---|")
    for h in sizes:
        means = {}
        for method in ("cholesky", "cg-amg"):
            results = {}
            with tempfile.TemporaryDirectory() as tmp:
                for P in (1, 2):
                    out = f"{tmp}/mean{P}.npy"
                    cmd = ["mpirun", "-n", str(P), "--oversubscribe", sys.executable, __file__,
                           "--worker", str(h), out, method]
                    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                    results[P] = json.loads(proc.stdout.strip().splitlines()[-1])
                    means[method, P] = np.load(out)
            r1, r2 = results[1], results[2]
            for P, r in results.items():
                speed = (f"{r1['mean_s'] / r2['mean_s']:.2f}x / "
                         f"{r1['samples_s'] / r2['samples_s']:.2f}x"
                         if P == 2 else "")
                print(f"  | {r['cvs']:,} | {r['rows']:,} | {r['method']} | {P} | {r['mean_s']:.2f} "
                      f"| {r['samples_s']:.2f} | {speed} |")
        ref = means["cholesky", 1]
        diff = max(np.abs(m - ref).max() for m in means.values()) / np.abs(ref).max()
        print(f"  largest relative difference of the four means at h = {h}: {diff:.1e}")


def packages(largest: float = 0.011) -> None:
    """The plan's Cholesky of G Σ Gᵀ through each factor package PETSc has: its numeric
    refactorisation, one solve and a block of 64 right-hand sides (what sets NATIVE_ROWS)."""
    from hybrid.constraints.update import UpdatePlan, _CholeskySolver

    problems = [(f"interval {c} x 20", *_interval_problem(c)) for c in (200, 1000)]
    problems += [(f"rectangle h={h} x 10", *_problem(h)[1:4]) for h in (0.035, 0.02, 0.011)
                 if h >= largest]
    print(f"  {'problem':22s} {'rows':>7s} " + " ".join(
        f"{p + ' refactor / solve / 64 ms':>34s}" for p in ("cholmod", "petsc", "mumps")))
    for label, layout, rows, var in problems:
        plan = UpdatePlan(rows.G, layout=layout, method="cholesky")
        values = plan.values(var, 0.0)
        cells = []
        for package in ("cholmod", "petsc", "mumps"):
            try:
                solver = _CholeskySolver(plan.pattern, solver=package)
                solver.factor(values)
            except Exception:   # a package this PETSc lacks
                cells.append(f"{'–':>34s}")
                continue
            reps = 3
            t0 = time.perf_counter()
            for _ in range(reps):
                solver.factor(values * 1.01)
            t1 = time.perf_counter()
            for _ in range(reps):
                solver.solve(np.ones(rows.count))
            t2 = time.perf_counter()
            solver.solve(np.ones((rows.count, 64)))
            t3 = time.perf_counter()
            cells.append(f"{1e3 * (t1 - t0) / reps:14.2f} / {1e3 * (t2 - t1) / reps:7.3f} / "
                         f"{1e3 * (t3 - t2):7.1f}")
            solver.destroy()
        print(f"  {label:22s} {rows.count:7d} " + " ".join(cells))
        plan.destroy()


def shared_worker(h: float) -> None:
    """Run under mpirun -n 2: the shared-plan update of three scenarios, then one solve."""
    from mpi4py import MPI

    from hybrid.case.expressions import compile_expression
    from hybrid.constraints import driver
    from hybrid.constraints.distributed import entry_owners
    from hybrid.constraints.rows import ConstraintRows
    from hybrid.mesh.distribute import partition_owners
    from hybrid.mesh.shapes import generate
    from hybrid.solvers.gpme import BoundaryData, Conductivity
    from hybrid.solvers.partition import PartitionGPMESolver

    comm = MPI.COMM_WORLD
    cv, layout, rows, var, mu = _problem(h)
    mesh = generate({"shape": "rectangle", "h": h}, seed=0)
    cv.assign_owners(*partition_owners(mesh, comm))
    owner, plans, per = entry_owners(cv, layout.T), {}, []
    rng = np.random.default_rng(1)
    for k, scale in enumerate((0.5, 1.0, 3.0)):
        b = rows.b + 1e-3 * rng.standard_normal(rows.count) * (rows.kind != "dirichlet")
        scenario = ConstraintRows(rows.G, b, rows.kind)
        comm.Barrier()
        t0 = time.perf_counter()
        _, _, _, phases, _ = driver._constrain(
            "main", scenario, mu + 0.01 * k, scale * var, scale * var, None, 0.0, owner, comm, 5,
            layout, driver.FRONT_SAMPLES, plans, var)
        comm.Barrier()
        per.append((time.perf_counter() - t0, phases))
    method = plans["main"].update.method
    for plan in plans.values():
        plan.destroy()

    bcs = [BoundaryData("left", "dirichlet", compile_expression("1"))] + \
          [BoundaryData(n, "flux", compile_expression("0")) for n in ("right", "top", "bottom")]
    solver = PartitionGPMESolver(cv, Conductivity("power", m=2.0), bcs, {}, comm=comm)
    comm.Barrier()
    t0 = time.perf_counter()
    solver.run(np.full(cv.num_cvs, 0.01), 0.05, 0.005, 2)
    comm.Barrier()
    solve = time.perf_counter() - t0
    solver.close()
    inference = _inference_seconds(cv, layout.T) if comm.rank == 0 else 0.0
    if comm.rank == 0:
        first = per[0][1]["plan"]
        later = [seconds - phases["plan"] for seconds, phases in per]
        update = float(np.mean(later))
        print(f"  {cv.num_cvs:,} control volumes, {rows.count:,} rows, {method}, 2 ranks")
        print(f"  plan (once per case: the factorisation and the 200 samples): {first:.1f} s")
        print("  per scenario (mean, variance, samples): "
              + ", ".join(f"{x:.2f}" for x in later) + " s; mean phase "
              + ", ".join(f"{p['mean']:.2f}" for _, p in per) + " s")
        print(f"  one scenario's solve over the partition: {solve:.1f} s; inference (4 members) "
              f"{inference:.3f} s")
        print(f"  solver / (inference + update) = {solve / (inference + update):.1f}x per "
              f"scenario; with the plan shared by 10 scenarios "
              f"{solve / (inference + update + first / 10):.1f}x")


def shared(h: float) -> None:
    """Part 6 under mpirun -n 2 (see the module's docstring)."""
    import os
    import subprocess

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.run(["mpirun", "-n", "2", sys.executable, __file__, "--shared-worker",
                           str(h)], env=env, capture_output=True, text=True)
    print(proc.stdout.rstrip())
    if proc.returncode:
        print(proc.stderr[-3000:])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        distributed_worker(float(sys.argv[2]), sys.argv[3], *sys.argv[4:5])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--shared-worker":
        shared_worker(float(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT, help="folder holding cases/*/results")
    parser.add_argument("--largest", type=float, default=0.0035,
                        help="smallest h of the growth study")
    parser.add_argument("--only", choices=("cases", "growth", "variance", "packages", "ranks",
                                           "shared"),
                        help="one part only")
    args = parser.parse_args()
    parts = {"cases": ("per case (main variant, seconds per test scenario):",
                       lambda: per_case(args.results)),
             "growth": ("growth with the number of control volumes (per-cell + Dirichlet rows, 10 "
                        "intervals):",
                        lambda: growth(args.largest)),
             "variance": ("the variance estimate against the exact diagonal (states):",
                          variance_error),
             "packages": ("the plan's Cholesky by factor package (ms):",
                          lambda: packages(max(args.largest, 0.011))),
             "ranks": ("distributed update, 1 vs 2 ranks:", ranks),
             "shared": ("one distributed factorisation shared by the scenarios of a case shape:",
                        lambda: shared(args.largest))}
    for name, (title, run) in parts.items():
        if args.only in (None, name):
            print(("\n" if name != "cases" and args.only is None else "") + title)
            run()


if __name__ == "__main__":
    main()
