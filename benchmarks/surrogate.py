"""Surrogate benchmark: inference vs reference solver per test trajectory, and training
time per epoch at 1 and 2 MPI ranks. Ratios measured in one run, never gated on in CI.

    .venv/bin/python benchmarks/surrogate.py [--case cases/diffusion-1d] [--epochs 5]

1. On a copy of the case (its own model settings, 40 training and 8 test scenarios,
   ``--epochs`` epochs, 2 members), the training loop's wall time (the slowest rank's)
   ``hybrid train`` at 1 rank and at 2 ranks: seconds per epoch (all members), speed-up.
2. ``hybrid predict`` on the same copy: the ensemble's inference seconds per test
   trajectory against the solver's seconds for the same scenarios (from the dataset).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from case_copies import ROOT, set_key  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="cases/diffusion-1d")
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    hybrid = str(ROOT / ".venv" / "bin" / "hybrid")
    src = ROOT / args.case
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / src.name
        case.mkdir()
        text = (src / "case.toml").read_text().replace('file = "../../meshes/',
                                                       f'file = "{ROOT}/meshes/')
        for (section, key), value in {("surrogate", "epochs"): str(args.epochs),
                                      ("surrogate", "members"): "2",
                                      ("surrogate", "patience"): str(args.epochs + 1),
                                      ("data", "train"): "40", ("data", "test"): "8"}.items():
            text = set_key(text, section, key, value)
        (case / "case.toml").write_text(text)
        subprocess.run([hybrid, "solve", str(case), "--quiet"], check=True, env=env,
                       capture_output=True)
        per_epoch = {}
        for ranks in (1, 2):
            cmd = [hybrid, "train", str(case), "--force", "--quiet"]
            if ranks > 1:
                cmd = (["mpirun", "-n", str(ranks)]
                       + (["--oversubscribe"] if (os.cpu_count() or 1) < ranks else []) + cmd)
            subprocess.run(cmd, check=True, env=env, capture_output=True)
            stamp = json.loads((case / "results" / "train" / "stage.json").read_text())
            # training loop only, slowest rank
            per_epoch[ranks] = stamp["training_seconds"] / args.epochs
        subprocess.run([hybrid, "predict", str(case), "--quiet"], check=True, env=env,
                       capture_output=True)
        with h5py.File(case / "results" / "predict" / "predictions.h5", "r") as f:
            surrogate = float(np.mean(f["surrogate_seconds"][()]))
            solver = float(np.mean(f["solver_seconds"][()]))
        metrics = json.loads((case / "results" / "predict" / "metrics.json").read_text())
        shutil.rmtree(case / "results")
    print(f"case {src.name}: training loop, 2 members, {args.epochs} epochs (start-up excluded):")
    print(f"  1 rank {per_epoch[1]:.2f} s/epoch, 2 ranks {per_epoch[2]:.2f} s/epoch, speed-up "
          f"{per_epoch[1] / per_epoch[2]:.2f}x")
    print(f"inference, 2 members: {surrogate * 1e3:.2f} ms per test trajectory; solver "
          f"{solver * 1e3:.1f} ms; solver / surrogate = {solver / surrogate:.1f}x")
    print(f"(accuracy after only {args.epochs} epochs is not meaningful: relative L2 "
          f"{metrics['rel_l2_mean']:.3f})")


if __name__ == "__main__":
    main()
