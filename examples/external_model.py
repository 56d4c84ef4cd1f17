"""# A model that hybrid did not make, made exact by hybrid's coupling layer

A plain PyTorch MLP learns the map from a scenario's parameters to its whole trajectory (the
states at the output times and the face fluxes of each interval) from the reference solver's
training scenarios. Three such MLPs form a small ensemble: their mean and spread are the
prediction. ``hybrid constrain`` then imposes per-cell conservation and the boundary
conditions on it, and reports how far each variant is from the solver.

Run it as ``python examples/external_model.py CASE`` or under ``mpirun -n 2``; CASE defaults
to ``cases/stefan-1d`` (the full case: a few minutes).
"""

import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from mpi4py import MPI

from hybrid.stages import api

comm = MPI.COMM_WORLD
case = api.load_case(sys.argv[1] if len(sys.argv) > 1 else "cases/stefan-1d")

# ## The reference solver's trajectories
# Collective: each rank solves its share of the scenarios.
data = api.read_dataset(api.solve(case, comm=comm))
train, test = data["train"], data["test"]
S, T1, N = test["u"].shape
F = test["flux"].shape[-1]


# ## An ensemble of MLPs: parameters -> (states at t_1..t_T, fluxes of each interval)
def targets(split):
    return np.concatenate([split["u"][:, 1:].reshape(len(split["u"]), -1),
                           split["flux"].reshape(len(split["flux"]), -1)], axis=1)


low, high = train["params"].min(axis=0), train["params"].max(axis=0)
scale = np.where(high > low, high - low, 1.0)
x_train = torch.tensor((train["params"] - low) / scale, dtype=torch.float64)
y_train = torch.tensor(targets(train), dtype=torch.float64)
y_mean, y_std = y_train.mean(0), y_train.std(0) + 1e-12


def member(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x_train.shape[1], 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, y_train.shape[1]))
    net = net.double()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(400):
        optimiser.zero_grad()
        loss = ((net(x_train) - (y_train - y_mean) / y_std) ** 2).mean()
        loss.backward()
        optimiser.step()
    return net


prediction = Path(case.output_dir) / "mlp-prediction.h5"
if comm.rank == 0:   # the model is small: rank 0 trains it and writes the file
    x_test = torch.tensor((test["params"] - low) / scale, dtype=torch.float64)
    members = [member(seed) for seed in range(3)]
    with torch.no_grad():
        outputs = np.stack([(net(x_test) * y_std + y_mean).numpy() for net in members])
    u = outputs[..., :(T1 - 1) * N].reshape(3, S, T1 - 1, N)
    flux = outputs[..., (T1 - 1) * N:].reshape(3, S, T1 - 1, F)
    # t = 0 is the given initial state, with variance 0; a floor keeps every variance positive
    u_members = np.concatenate([np.broadcast_to(test["u"][None, :, :1], (3, S, 1, N)), u], axis=2)
    floor_u, floor_f = 1e-4 * np.abs(u).max() ** 2, 1e-4 * np.abs(flux).max() ** 2
    u_var = u_members.var(axis=0, ddof=1) + floor_u
    u_var[:, 0] = 0.0
    with h5py.File(prediction, "w") as f:
        f["u_mean"], f["u_var"] = u_members.mean(axis=0), u_var
        f["flux_mean"], f["flux_var"] = flux.mean(axis=0), flux.var(axis=0, ddof=1) + floor_f
        f["u_dev"] = np.swapaxes(u_members - u_members.mean(axis=0), 0, 1)
        f["flux_dev"] = np.swapaxes(flux - flux.mean(axis=0), 0, 1)
comm.Barrier()

# ## The coupling layer on the file: every variant of [constraints] compare
out = api.constrain(case, prediction, "mlp", comm=comm)

# ## ... and on arrays in memory, one variant
with h5py.File(prediction) as f:
    arrays = {name: f[name][()] for name in f}
exact = api.constrain_arrays(case, arrays, "per-cell+boundary")
if comm.rank == 0:
    w = data["control_volumes"]["volume"]
    mse = lambda u: float((((u[:, 1:] - test["u"][:, 1:]) ** 2) * w).sum()
                          / (w.sum() * S * (T1 - 1)))
    print(f"MLP ensemble MSE {mse(arrays['u_mean']):.3e}; per-cell+boundary "
          f"{mse(exact['u_mean']):.3e}; largest row residual {exact['residual']:.1e}; report "
          f"{out / 'report.md'}")
