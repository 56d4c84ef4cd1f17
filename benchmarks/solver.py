"""Reference-solver benchmark: cost per control volume per time step, and the 2-rank speed-up.

    .venv/bin/python benchmarks/solver.py [--scenarios 8]

Measured in one run, reported as ratios and per-unit costs (never gated on in CI):

1. For every shipped case, two test scenarios solved serially: wall time per scenario,
   Newton iterations per step, and microseconds per (control volume × time step).
2. ``hybrid solve`` on a copy of stefan-1d with ``--scenarios`` scenarios, at 1 and at 2
   MPI ranks: the speed-up ratio t(1) / t(2) of the whole command (start-up included).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def per_case_costs() -> list[tuple]:
    from hybrid.case import load_case
    from hybrid.stages.solve import case_control_volumes, case_mesh, solve_scenario

    rows = []
    for case_dir in sorted((ROOT / "cases").iterdir()):
        if not (case_dir / "case.toml").exists():
            continue
        case = load_case(case_dir)
        if case.pde["family"] != "gpme":
            continue
        mesh = case_mesh(case)
        cv = case_control_volumes(case, mesh)
        box = (mesh.points.min(axis=0), mesh.points.max(axis=0))
        walls, steps, its = [], 0, 0
        for i, params in enumerate(case.scenarios("test")[:2]):
            t0 = time.perf_counter()
            traj = solve_scenario(case, cv, params, "test", i, box=box)
            walls.append(time.perf_counter() - t0)
            steps += traj.stats["steps"]
            its += traj.stats["newton_its"]
        us = 1e6 * sum(walls) / (steps * cv.num_cvs)
        rows.append((case.name, cv.kind, cv.num_cvs, steps // len(walls), sum(walls) / len(walls),
                     its / steps, us))
    return rows


def speedup(scenarios: int) -> tuple[float, float]:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    hybrid = str(ROOT / ".venv" / "bin" / "hybrid")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        text = (ROOT / "cases" / "stefan-1d" / "case.toml").read_text()
        text = re.sub(r"^train = \d+", f"train = {scenarios}", text, flags=re.M)
        text = re.sub(r"^test = \d+", "test = 0", text, flags=re.M)
        text = text.replace('file = "../../meshes/', f'file = "{ROOT}/meshes/')
        case = Path(tmp) / "stefan-1d"
        case.mkdir()
        (case / "case.toml").write_text(text)
        for ranks in (1, 2):
            cmd = [hybrid, "solve", str(case), "--force", "--quiet"]
            if ranks > 1:
                cmd = (["mpirun", "-n", str(ranks)]
                       + (["--oversubscribe"] if (os.cpu_count() or 1) < ranks else []) + cmd)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, capture_output=True)
            times.append(time.perf_counter() - t0)
            shutil.rmtree(case / "results")
    return times[0], times[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", type=int, default=16,
                    help="scenarios for the speed-up measurement")
    args = ap.parse_args()
    print(f"{'case':18s} {'CVs':>6s} {'kind':>5s} {'steps':>6s} {'s/scenario':>10s} "
          f"{'Newton/step':>11s} {'us/(CV*step)':>12s}")
    for name, kind, n, steps, wall, its, us in per_case_costs():
        print(f"{name:18s} {n:6d} {kind:>5s} {steps:6d} {wall:10.2f} {its:11.2f} {us:12.2f}")
    t1, t2 = speedup(args.scenarios)
    print(f"\nhybrid solve, stefan-1d, {args.scenarios} scenarios: 1 rank {t1:.1f} s, 2 ranks "
          f"{t2:.1f} s, speed-up {t1 / t2:.2f}x on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
