"""What an ensemble trains on: the case's surrogate grid, the mesh↔grid transfer, and the
:class:`~hybrid.surrogates.training.TrainingSet` of one ensemble (inputs, targets,
normalisation, train/validation split, model configuration and training settings).
"""

from __future__ import annotations

import numpy as np
import torch

from hybrid.case.config import periodic_pairs
from hybrid.errors import CaseError
from hybrid.problems import problem_for
from hybrid.surrogates.config import ModelConfig
from hybrid.surrogates.data import Normaliser, build_inputs, split_indices
from hybrid.surrogates.ensemble import state_targets
from hybrid.surrogates.training import TrainingSet
from hybrid.surrogates.transfer import Transfer

__all__ = ["CHECKPOINT_EVERY", "grid_shape", "case_transfer", "training_set"]

CHECKPOINT_EVERY = 5   # epochs between a member's checkpoints


def grid_shape(case, dim: int) -> tuple[int, ...]:
    """The surrogate grid's nodes per axis for a ``dim``-D mesh: ``[surrogate] grid``, one size
    for every axis or one per axis. Raises CaseError when the sizes do not match ``dim`` or the
    grid cannot resolve ``[surrogate] modes``."""
    grid = case.surrogate["grid"]
    shape = tuple(grid) if isinstance(grid, (list, tuple)) else (int(grid),) * dim
    if len(shape) != dim:
        raise CaseError(f"grid has {len(shape)} sizes for a {dim}-D mesh",
                        file=str(case.display_file), key="surrogate.grid")
    modes = case.surrogate["modes"]
    if modes > min(shape) // 2 + 1:
        raise CaseError(f"modes = {modes} is more than the grid resolves (at most "
                        f"{min(shape) // 2 + 1} for grid {list(shape)})",
                        file=str(case.display_file), key="surrogate.modes")
    return shape


def case_transfer(case, data: dict):
    """Control volumes and the mesh↔grid transfer for the dataset's mesh."""
    mesh, cv = data.mesh, data.cv   # the control volumes the solver balanced, read back
    return cv, Transfer.build(mesh, cv, grid_shape(case, mesh.gdim))


def training_set(case, data: dict, cv, transfer, penalty: float, boon: bool = False,
                  stepping: bool = False, padded: bool = True) -> TrainingSet:
    """What every member of one ensemble trains on; ``stepping``: autoregressive members;
    ``padded`` False: no zero padding whatever the grid's boundaries (the unpadded baseline)."""
    data = problem_for(case).view(data)
    train = data.train
    S, T1 = train.u.shape[:2]
    if S < 2:
        raise CaseError("training needs at least 2 training scenarios",
                        file=str(case.display_file), key="data.train")
    params = train.params
    u, phi, u0, C = state_targets(train, cv, data.times)
    names = case.surrogate["parameter_inputs"]
    norm = Normaliser.fit(params, u, phi, steps=stepping,
                          inputs=None if names is None else
                          [n in names for n in train.parameter_names])
    inputs = build_inputs(transfer, u0, params, norm)
    ends = None
    if boon:
        from hybrid.surrogates.boon import model_ends, with_boundary_channels
        inputs, ends = with_boundary_channels(case, cv, transfer, inputs, params,
                                              train.parameter_names, data.times, norm)
    train_idx, val_idx = split_indices(case, S)
    s = case.surrogate
    T, d = T1 - 1, cv.dim
    padding = (0 if not padded or _fully_periodic(case, data.mesh) or ends is not None
               else max(2, max(transfer.grid.shape) // 8))
    history = int(s["rollout_history"]) if stepping else 1
    config = ModelConfig(in_channels=int(inputs.grid_inputs.shape[1]) + stepping
                         + (history - 1) * C,
                         out_channels=(C + d) if stepping else T * C + T * d, dim=d, outputs=T,
                         modes=int(s["modes"]), width=int(s["width"]), layers=int(s["layers"]),
                         padding=padding, heteroscedastic=bool(s["heteroscedastic"]),
                         variance_channels=(T * C + T * d) if s["heteroscedastic"] else 0,
                         components=C,
                         boon_ends=None if ends is None else tuple(model_ends(ends)),
                         autoregressive=stepping, history=history)
    residual = None
    if penalty > 0:
        from hybrid.surrogates.softc import gpme_residual_penalty
        residual = gpme_residual_penalty(case, transfer, inputs, norm, data.times, params,
                                         train.parameter_names)
    return TrainingSet(transfer, inputs, torch.as_tensor(u[:, 1:]), torch.as_tensor(phi),
                       torch.as_tensor(np.tile(cv.volume, C)), torch.as_tensor(cv.face_area),
                       torch.as_tensor(cv.face_normal),
                       norm, train_idx, val_idx, config,
                       {"epochs": int((stepping and s["rollout_epochs"]) or s["epochs"]),
                        "lr": float(s["lr"]), "batch": int(s["batch"]),
                        "patience": int(s["patience"]), "softc_weight": float(penalty),
                        "checkpoint_every": CHECKPOINT_EVERY,
                        "rollout_noise": float(s["rollout_noise"]),
                        "rollout_loss": str(s["rollout_loss"])},
                        residual, data.times)


def _fully_periodic(case, mesh) -> bool:
    """Every boundary of the mesh is periodic: the FFT's own periodicity is then right, so
    the spectral layers get no zero padding."""
    periodic = {name for pair in periodic_pairs(case) for name in pair}
    return bool(periodic) and set(mesh.boundary_names) <= periodic
