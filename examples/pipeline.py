"""# The whole pipeline from Python: solve, train, predict, validate, export

What ``hybrid run CASE`` does, step by step through the public API, with the results read
back from the files each stage writes: the reference solver's dataset, the FNO ensemble, its
constraint variants (the ablation table), the report and the ParaView series. Each call is
collective, so the script runs serially or as ``mpirun -n 2 python examples/pipeline.py
CASE``; a stage whose inputs did not change is reused, so a second run only reads.

CASE defaults to ``cases/stefan-1d`` (the full case: about eight minutes on two cores).
"""

import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

from hybrid.stages import api

comm = MPI.COMM_WORLD
case = api.load_case(sys.argv[1] if len(sys.argv) > 1 else "cases/stefan-1d")

# ## The reference solver
# Every scenario's trajectory on the case's control volumes; the dataset also stores the
# control volumes themselves, so later stages never rebuild them.
dataset = api.solve(case, comm=comm)
data = api.read_dataset(dataset)
volume = data["control_volumes"]["volume"]

# ## The surrogate ensemble, its test predictions and their constraint variants
train_dir = api.train(case, comm=comm)
predict_dir = api.predict(case, comm=comm)

# ## The report and the ParaView series
report = api.validate(case, comm=comm)
series = api.export(case, comm=comm)

if comm.rank == 0:
    metrics = json.loads((Path(predict_dir) / "metrics.json").read_text())
    test = data["test"]
    print(f"{case.name}: {len(volume)} control volumes, {test['u'].shape[0]} test scenarios, "
          f"{len(data.times) - 1} output intervals")
    print(f"{'variant':20s} {'rel. L2':>8s} {'MSE / raw':>9s} {'balance':>9s} {'cover90':>7s}")
    raw = metrics["variants"]["raw"]["mse"]
    for name, scores in metrics["variants"].items():
        print(f"{name:20s} {scores['rel_l2']:8.4f} {scores['mse'] / raw:9.3f} "
              f"{scores['max_balance_residual']:9.1e} {scores['coverage90']:7.2f}")
    # every constrained variant closes every control volume's balance to round-off
    per_cell = metrics["variants"].get("per-cell+boundary") or metrics["variants"]["per-cell"]
    assert per_cell["max_balance_residual"] <= 1e-10
    assert np.isfinite(per_cell["mse"])
    print(f"members in {train_dir}; report {report}; {len(series)} ParaView series, e.g. "
          f"{series[0]}")
