"""Constraint-update benchmark: its cost against surrogate inference, and its growth with
the number of control volumes. Ratios and fitted exponents from one run; never gated on.

    .venv/bin/python benchmarks/constraints.py

1. For every shipped case that has been run (``results/predict/metrics.json``): seconds of
   the per-cell + boundary update per test scenario against the ensemble's inference
   seconds per scenario (target: update ≤ 10% of inference).
2. Growth: per-cell rows on rectangles of decreasing h (dual control volumes, 10 output
   intervals, a random prediction with a diagonal covariance): update time for the mean
   alone and with the posterior variance, against the number of control volumes, with
   the fitted exponent (target ≤ 1.1).

3. Ranks: the distributed update (PETSc over the control volumes' partition, CG + GAMG)
   of per-cell rows on the finest rectangle, mean and 32 Matheron samples, under
   ``mpirun -n 1`` and ``-n 2``: the speed-up (on this 2-core machine), and the largest
   difference between the two results.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def per_case() -> None:
    print(f"{'case':18s} {'variant':18s} {'update s':>9s} {'inference s':>11s} {'update/inference':>16s}")
    for metrics_file in sorted((ROOT / "cases").glob("*/results/predict/metrics.json")):
        m = json.loads(metrics_file.read_text())
        variants = m.get("variants", {})
        for variant in ("per-cell", "per-cell+boundary"):
            if variant in variants:
                upd, inf = variants[variant]["update_seconds"], m["surrogate_seconds"]
                print(f"{metrics_file.parts[-4]:18s} {variant:18s} {upd:9.4f} {inf:11.4f} {upd / inf:16.1f}")


def growth() -> None:
    from hybrid.constraints.rows import StateLayout, conservation_rows
    from hybrid.constraints.update import GaussianUpdate
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.shapes import generate

    rng = np.random.default_rng(0)
    sizes, mean_s, var_s = [], [], []
    for h in (0.1, 0.05, 0.025, 0.0125):
        cv = build_control_volumes(generate({"shape": "rectangle", "h": h}, seed=0), "dual")
        layout = StateLayout(cv.num_cvs, cv.num_faces, 10)
        rows = conservation_rows(cv, layout, rng.standard_normal(cv.num_cvs))
        mu = rng.standard_normal(layout.size)
        var = rng.uniform(0.5, 1.5, layout.size)
        t0 = time.perf_counter()
        update = GaussianUpdate(rows.G, rows.b, var)
        update.mean(mu)
        t1 = time.perf_counter()
        update.variance(exact=False, samples=64)
        t2 = time.perf_counter()
        sizes.append(cv.num_cvs)
        mean_s.append(t1 - t0)
        var_s.append(t2 - t0)
        print(f"  {cv.num_cvs:7d} control volumes, {rows.count:8d} rows: mean {t1 - t0:7.3f} s, "
              f"mean + variance (64 samples) {t2 - t0:7.3f} s")
    for label, seconds in (("mean", mean_s), ("mean + variance", var_s)):
        slope = np.polyfit(np.log(sizes[1:]), np.log(seconds[1:]), 1)[0]
        print(f"  fitted exponent ({label}, three finest meshes): {slope:.2f}")


def distributed_worker(h: float, out: str) -> None:
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
    update = DistributedUpdate(rows.G, rows.b, var, None, 0.0, entry_owners(cv, layout.T), comm)
    mean = update.mean(mu[update.entries])
    t1 = time.perf_counter()
    update.sample(update.prior_samples(mean, 32, seed=1), seed=1)
    t2 = time.perf_counter()
    full = update.gather(mean)
    if comm.rank == 0:
        np.save(out, full)
        print(json.dumps({"cvs": cv.num_cvs, "rows": rows.count, "mean_s": t1 - t0, "samples_s": t2 - t1}))


def ranks(h: float = 0.0125) -> None:
    import subprocess
    import tempfile

    env = dict(__import__("os").environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    results, means = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for P in (1, 2):
            out = f"{tmp}/mean{P}.npy"
            cmd = ["mpirun", "-n", str(P), "--oversubscribe", sys.executable, __file__, "--worker", str(h), out]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            results[P] = json.loads(proc.stdout.strip().splitlines()[-1])
            means[P] = np.load(out)
    r1, r2 = results[1], results[2]
    diff = np.abs(means[1] - means[2]).max() / np.abs(means[1]).max()
    print(f"  {r1['cvs']} control volumes, {r1['rows']} rows")
    for P, r in results.items():
        print(f"  {P} rank(s): mean {r['mean_s']:.3f} s, 32 posterior samples {r['samples_s']:.3f} s")
    print(f"  speed-up 1 -> 2 ranks: mean {r1['mean_s'] / r2['mean_s']:.2f}x, samples "
          f"{r1['samples_s'] / r2['samples_s']:.2f}x; largest relative difference of the means {diff:.1e}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        distributed_worker(float(sys.argv[2]), sys.argv[3])
        return
    per_case()
    print("\ngrowth with the number of control volumes (serial: sparse LU up to 30000 rows, CG + GAMG above):")
    growth()
    print("\ndistributed update, 1 vs 2 ranks:")
    ranks()


if __name__ == "__main__":
    main()
