"""The ensemble's prediction: every member's inference of a split's scenarios on the mesh,
combined into the predictive mean, the variance over members and the members' deviations
(the low-rank factor U of the ensemble covariance U Uᵀ / (M − 1)), for the control-volume
states and the face fluxes.

:class:`EnsemblePrediction` is what ``hybrid predict`` writes to ``predictions.h5`` and what
the calibration and the constraint driver read (by attribute, or by name: ``pred["u_mean"]``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
from mpi4py import MPI

from hybrid.dataset import scenario_parameters
from hybrid.surrogates.boon import (boundary_ends, enforce_on_mesh, enforce_walls_on_mesh,
                                    with_boundary_channels)
from hybrid.surrogates.data import build_inputs, flux_density, to_mesh_outputs, to_mesh_variances
from hybrid.surrogates.rollout import rollout
from hybrid.surrogates.training import device

__all__ = ["EnsemblePrediction", "predict_ensemble", "initial_states", "state_targets"]


@dataclass
class EnsemblePrediction:
    """An ensemble's prediction of S scenarios (M members, T outputs, N control volumes, F faces).

    Attributes:
        u_mean: (S, T+1, N) predictive mean of the states (t = 0 is the given state).
        u_var: (S, T+1, N) variance over members (plus the heads' own, heteroscedastic members).
        u_dev: (S, M, T+1, N) each member's deviation from the mean.
        flux_mean: (S, T, F) face fluxes: integrated over each output interval for scalar
            states, instantaneous for a velocity.
        flux_var: (S, T, F).
        flux_dev: (S, M, T, F).
    """

    u_mean: np.ndarray
    u_var: np.ndarray
    u_dev: np.ndarray
    flux_mean: np.ndarray
    flux_var: np.ndarray
    flux_dev: np.ndarray

    NAMES = ("u_mean", "u_var", "u_dev", "flux_mean", "flux_var", "flux_dev")

    def keys(self) -> tuple[str, ...]:
        """The arrays' names, as a mapping's keys."""
        return self.NAMES

    def items(self):
        """(name, array) pairs, in the order of NAMES."""
        return [(k, getattr(self, k)) for k in self.NAMES]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: str) -> bool:
        return name in self.NAMES

    def replace(self, **arrays) -> "EnsemblePrediction":
        """A copy with these arrays replaced."""
        return dataclasses.replace(self, **arrays)


def initial_states(split: dict) -> tuple[np.ndarray, int]:
    """(initial states, components C) of a split: (S, N), or (S, C, N) for a velocity (the
    :meth:`~hybrid.problems.base.Problem.view` of a vector family keeps it under ``velocity``)."""
    u0 = split["u"][:, 0]
    if "velocity" not in split:
        return u0, 1
    C = split["velocity"].shape[-1]
    return u0.reshape(len(u0), C, -1), C


def state_targets(split: dict, cv,
                  times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(states (S, T+1, C N), face-flux densities (S, T, F), initial states, components C) of
    a split: for scalar states the mean flux density of each output interval, for a
    velocity the volume flux at each output time over |f|."""
    u0, C = initial_states(split)
    phi = (split["flux"] / cv.face_area if "velocity" in split
           else flux_density(split["flux"], cv.face_area, times))
    return split["u"], phi, u0, C


def predict_ensemble(members: dict, M: int, transfer, cv, data, comm: MPI.Comm, boon_case=None,
                     warm: bool = True):
    """Every member's prediction of ``data``'s test scenarios (a :class:`~hybrid.dataset.Dataset`
    as the family's view gives it; ``members`` {index: (model, config, normaliser)}, each rank
    its own), combined on rank 0 into an :class:`EnsemblePrediction`; (prediction, inference
    seconds per scenario (S,)) on rank 0, (None, None) on the other ranks. ``boon_case``: the
    members are BOON networks of this case (boundary-data input channels, and BOON's strict
    enforcement again on the mesh). ``warm``: time a second pass (False where the seconds are
    not used)."""
    test = data.test
    S, T1, _ = test.u.shape
    T = T1 - 1
    dt = np.diff(data.times)
    # fluxes: scalar states' are integrated over each output interval, a velocity's face fluxes
    # instantaneous
    scale = cv.face_area * (1.0 if "velocity" in test else dt[:, None])   # flux density ->
                                                                          # face flux
    u0, C = initial_states(test)
    dev = device()
    normal = torch.as_tensor(cv.face_normal).to(dev)

    def infer(model, config, norm):
        inputs = build_inputs(transfer, u0, test.params, norm)
        if boon_case is not None:
            inputs, _ = with_boundary_channels(boon_case, cv, transfer, inputs, test.params,
                                               test.parameter_names, data.times, norm)
        if config.autoregressive:
            u, phi = rollout(model, transfer, inputs.grid_inputs.to(dev), inputs.u0.to(dev),
                             data.times, norm, normal, C, config.history)
            return u, phi, None
        output = model(inputs.grid_inputs.to(dev))
        u, phi = to_mesh_outputs(transfer, output, inputs.u0.to(dev), norm, T, normal, C)
        return u, phi, (to_mesh_variances(transfer, output, norm, T, normal, C)
                        if config.heteroscedastic else None)

    results = {}
    with torch.no_grad():
        for m, (model, config, norm) in members.items():
            model.to(dev)
            # inference is timed warm, as the update is (its plan timed apart): a first, untimed
            # pass over the same inputs pays torch's one-time set-up for these shapes
            if warm:
                infer(model, config, norm)
            t0 = time.perf_counter()
            u, phi, noise = infer(model, config, norm)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            flux = phi.double().cpu().numpy() * scale
            u_full = np.concatenate([test.u[:, :1], u.double().cpu().numpy()], axis=1)
            if noise is not None:
                noise = (np.concatenate([np.zeros_like(u_full[:, :1]),
                                         noise[0].double().cpu().numpy()], axis=1),
                         noise[1].double().cpu().numpy() * scale ** 2)
            results[m] = (u_full, flux, seconds, noise)
    gathered = comm.gather(results, root=0)
    if comm.rank != 0:
        return None, None
    allres = {k: v for part in gathered for k, v in part.items()}
    U = np.stack([allres[m][0] for m in range(M)], axis=1)       # (S, M, T+1, N)
    if boon_case is not None:
        plist = [scenario_parameters(test, i) for i in range(len(test.params))]
        U = (enforce_on_mesh(U, boundary_ends(boon_case, cv), cv, data.times, plist) if cv.dim == 1
             else enforce_walls_on_mesh(U, boon_case, cv, data.times, plist))
    Fx = np.stack([allres[m][1] for m in range(M)], axis=1)      # (S, M, T, F)
    surrogate_seconds = np.full(S, sum(allres[m][2] for m in range(M)) / max(S, 1))
    u_mean, flux_mean = U.mean(axis=1), Fx.mean(axis=1)
    ddof = 1 if M > 1 else 0
    u_var, flux_var = U.var(axis=1, ddof=ddof), Fx.var(axis=1, ddof=ddof)
    if allres[0][3] is not None:
        # heteroscedastic members: the mixture's variance, spread of the means + mean of the heads'
        # variances
        u_var = u_var + np.mean([allres[m][3][0] for m in range(M)], axis=0)
        flux_var = flux_var + np.mean([allres[m][3][1] for m in range(M)], axis=0)
    return (EnsemblePrediction(u_mean, u_var, U - u_mean[:, None], flux_mean, flux_var,
                               Fx - flux_mean[:, None]),
            surrogate_seconds)
