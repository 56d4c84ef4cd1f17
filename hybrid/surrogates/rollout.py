"""Autoregressive surrogates: one network steps a state from t_n to t_{n+1}, and a
prediction is the rollout of T steps from the initial state (``[surrogate] time =
"autoregressive"``).

A step's grid input is the state at t_n in place of the initial state of
:mod:`hybrid.surrogates.data`, the same parameter, coordinate and mask channels, and one
more channel, t_n / t_T, last:

    channels 0..C-1      state at t_n (normalised as the initial state)
    (history 2) C..2C-1  the last increment u_n - u_(n-1) (/ ``du_std``; 0 at the first step)
    then                 parameters, coordinates, inside mask (as :func:`build_inputs`)
    last channel         t_n / t_T, constant over the grid

With ``[surrogate] rollout_history = 2`` a step sees two time levels, as a second-order
equation needs: the wave equation's state u alone does not fix its next step (u_t does), so a
one-level step of a wave case had one-step errors of 13–45%. The first step's increment
channel is zero, and the network learns that step from the time channel and the parameters.

Its output is C + d channels: the state's increment over the step (× ``du_std``, the
one-step increments' scale) and the flux density vector of the step's target, the mean
over the interval (t_n, t_{n+1}) for scalar states, the instantaneous flux at t_{n+1} for
a velocity (:func:`~hybrid.surrogates.ensemble.state_targets`). The next step's input is
the predicted state carried to the grid again from the mesh, as in training, where the
inputs are the solver's states carried the same way.

Training is teacher-forced: every (scenario, step) pair of the fitting scenarios is a
sample, and the input state gets Gaussian noise of ``rollout_noise`` × ``du_std`` so that
the network learns to correct the errors a rollout feeds it (Sanchez-Gonzalez et al.,
ICML 2020, train on noisy inputs for the same reason).
"""

from __future__ import annotations

import numpy as np
import torch

from hybrid.surrogates.data import Normaliser

__all__ = ["step_inputs", "step_outputs", "rollout", "step_pairs"]


def step_inputs(transfer, state: torch.Tensor, static: torch.Tensor, t: torch.Tensor, t_end: float,
                norm: Normaliser, components: int,
                last: torch.Tensor | None = None) -> torch.Tensor:
    """The grid input of one step for B scenarios.

    Args:
        transfer: the mesh ↔ grid :class:`~hybrid.surrogates.transfer.Transfer`.
        state: (B, C N) states at t_n on the mesh (float64).
        static: (B, C_in - 1, *grid) the one-shot inputs of the same scenarios, whose first C
            channels (the initial state) are replaced by ``state``.
        t: (B,) the step's start times t_n.
        t_end: t_T, the last output time.
        norm: the member's normaliser; ``state`` is scaled as the initial state.
        components: C, the state's components per control volume.
        last: (B, C N) the last increment u_n - u_(n-1) on the mesh (history 2), else None.

    Returns:
        (B, C_in, *grid) float32.
    """
    B, shape = state.shape[0], tuple(static.shape[2:])
    grid_state = transfer.to_grid(((state - norm.u_mean) / norm.u_std).reshape(B, components, -1))
    time = (t.to(static.dtype) / t_end).reshape(B, 1, *([1] * len(shape))).expand(B, 1, *shape)
    parts = [grid_state.to(static.dtype)]
    if last is not None:
        parts.append(transfer.to_grid((last / norm.du_std).reshape(B, components, -1))
                     .to(static.dtype))
    return torch.cat(parts + [static[:, components:], time], dim=1)


def step_outputs(transfer, output: torch.Tensor, state: torch.Tensor, norm: Normaliser,
                 face_normal: torch.Tensor, components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's output (B, C + d, *grid) → (states at t_{n+1} (B, C N), normal flux
    densities of the step (B, F)); the state is ``state`` plus the transferred increment."""
    B = output.shape[0]
    d = face_normal.shape[1]
    increment = (transfer.to_mesh(output[:, :components].to(state.dtype)).reshape(B, -1)
                 * norm.du_std)
    q = (transfer.to_faces(output[:, components:components + d].to(state.dtype))
         * norm.flux_std)   # (B, d, F)
    return state + increment, torch.einsum("bdf,fd->bf", q, face_normal.to(q.dtype))


def rollout(model, transfer, static: torch.Tensor, u0: torch.Tensor, times: np.ndarray,
            norm: Normaliser, face_normal: torch.Tensor, components: int,
            history: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """T steps of ``model`` from the initial states ``u0`` (B, C N): (states at t_1..t_T
    (B, T, C N), normal flux densities (B, T, F)). ``history`` 2: each step also sees the last
    increment (zero at the first). Differentiable; wrap it in ``torch.no_grad()`` to predict."""
    state = u0
    last = torch.zeros_like(u0) if history == 2 else None
    states, fluxes = [], []
    start = torch.as_tensor(np.asarray(times[:-1], dtype=np.float64), device=u0.device)
    for n in range(len(times) - 1):
        x = step_inputs(transfer, state, static, start[n].expand(u0.shape[0]), float(times[-1]),
                        norm, components, last)
        new, phi = step_outputs(transfer, model(x), state, norm, face_normal, components)
        if last is not None:
            last = new - state
        state = new
        states.append(state)
        fluxes.append(phi)
    return torch.stack(states, dim=1), torch.stack(fluxes, dim=1)


def step_pairs(scenarios: np.ndarray, steps: int) -> np.ndarray:
    """(scenario, step) index pairs (K, 2), every step of every scenario, in that order."""
    scenarios = np.asarray(scenarios, dtype=np.int64)
    return np.stack([np.repeat(scenarios, steps), np.tile(np.arange(steps), len(scenarios))],
                    axis=1)
