"""From a solver dataset to the tensors a surrogate trains on, and back.

A scenario's input is its initial state, its parameters and the grid coordinates, on
the regular grid of :class:`~hybrid.surrogates.transfer.Transfer`:

    channel 0            initial state (normalised)
    channels 1..P        scenario parameters, normalised, as constant channels (those of
                         ``[surrogate] parameter_inputs``: :attr:`Normaliser.param_inputs`)
    channels P+1..P+d    grid coordinates scaled to [0, 1]
    channel P+d+1        1 inside the domain, 0 on grid nodes outside it

Targets live on the mesh: the state of every control volume at t_1..t_T and the mean
normal flux density of every face over each output interval, φ_f^n = Φ_f^n / (|f| Δt_n).
The model predicts on the grid (state increments from the initial state, and flux
density vectors); :meth:`Normaliser` and :func:`to_mesh_outputs` map its output back to
control-volume states and face fluxes Φ_f^n, whatever the model.

Vector states (the cavity's velocity, ``components`` = C > 1) take C input channels for the
initial state and C output channels per time, ordered (time, component); on the mesh a
time's state is the C blocks of N values one after the other, (u_1 … u_N, v_1 … v_N), the
layout of :mod:`hybrid.constraints.flow`. Their face targets are the instantaneous volume
fluxes at t_1..t_T divided by |f|, not interval averages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["to_mesh_variances", "Normaliser", "SurrogateInputs", "build_inputs", "to_mesh_outputs",
           "flux_density", "split_indices"]


def flux_density(flux: np.ndarray, face_area: np.ndarray, times: np.ndarray) -> np.ndarray:
    """φ_f^n = Φ_f^n / (|f| Δt_n) for fluxes of shape (..., T, F)."""
    dt = np.diff(times)
    return flux / face_area / dt[:, None]


@dataclass
class Normaliser:
    """Affine scalings fitted on the training scenarios (stored with each checkpoint)."""

    param_mean: np.ndarray
    param_std: np.ndarray
    u_mean: float
    u_std: float
    du_std: float
    flux_std: float
    # which of the P parameters are input channels (None: all, as before the key existed)
    param_inputs: np.ndarray | None = None

    @classmethod
    def fit(cls, params: np.ndarray, u: np.ndarray, phi: np.ndarray,
            steps: bool = False, inputs: np.ndarray | None = None) -> "Normaliser":
        """Scalings of training parameters (S, P), states (S, T+1, N) and flux densities;
        ``du_std`` is the scale of the increments from the initial state, or with ``steps``
        of the one-step increments (an autoregressive network's outputs). ``inputs``: the
        parameters that are input channels, a boolean mask of P (None: all)."""
        std = params.std(axis=0)
        increments = np.diff(u, axis=1) if steps else u[:, 1:] - u[:, :1]
        return cls(params.mean(axis=0), np.where(std > 0, std, 1.0), float(u.mean()),
                   float(u.std() or 1.0), float(np.std(increments) or 1.0),
                   float(np.sqrt(np.mean(phi ** 2)) or 1.0),
                   None if inputs is None else np.asarray(inputs, bool))

    def to_state(self) -> dict:
        """The scalings as tensors, for a checkpoint (read back by :meth:`from_state`)."""
        state = {"param_mean": torch.as_tensor(self.param_mean),
                 "param_std": torch.as_tensor(self.param_std),
                 "scalars": torch.tensor([self.u_mean, self.u_std, self.du_std, self.flux_std],
                                         dtype=torch.float64)}
        if self.param_inputs is not None:
            state["param_inputs"] = torch.as_tensor(self.param_inputs)
        return state

    @classmethod
    def from_state(cls, state: dict) -> "Normaliser":
        """The normaliser a checkpoint holds (written by :meth:`to_state`)."""
        s = state["scalars"].tolist()
        inputs = state.get("param_inputs")
        return cls(state["param_mean"].numpy(), state["param_std"].numpy(), *s,
                   None if inputs is None else inputs.numpy().astype(bool))

    def parameter_channels(self, params: np.ndarray) -> np.ndarray:
        """The normalised parameters (S, P) that are input channels, (S, P')."""
        p = (params - self.param_mean) / self.param_std
        return p if self.param_inputs is None else p[:, self.param_inputs]


@dataclass
class SurrogateInputs:
    """Inputs of S scenarios on the grid, with their initial states on the mesh."""

    grid_inputs: torch.Tensor   # (S, C_in, *grid) float32
    u0: torch.Tensor            # (S, N) float64, initial control-volume values


def build_inputs(transfer, u0: np.ndarray, params: np.ndarray, norm: Normaliser) -> SurrogateInputs:
    """Stack the input channels of the module docstring for S scenarios; ``u0`` is (S, N),
    or (S, C, N) for a state of C components."""
    S = u0.shape[0]
    shape = tuple(transfer.grid.shape)
    C = 1 if u0.ndim == 2 else u0.shape[1]
    u0_grid = transfer.to_grid((u0 - norm.u_mean) / norm.u_std).reshape(S, C, *shape)
    p = norm.parameter_channels(params)
    p_grid = np.broadcast_to(p.reshape(S, -1, *([1] * len(shape))), (S, p.shape[1], *shape))
    coords = transfer.grid.points.T.reshape(len(shape), *shape)
    lo, hi = np.asarray(transfer.grid.lo), np.asarray(transfer.grid.hi)
    coords = ((coords - lo.reshape(-1, *([1] * len(shape))))
              / (hi - lo).reshape(-1, *([1] * len(shape))))
    coords = np.broadcast_to(coords, (S, *coords.shape))
    inside = np.broadcast_to(transfer.inside.reshape(1, 1, *shape).astype(float), (S, 1, *shape))
    x = np.concatenate([u0_grid, p_grid, coords, inside], axis=1)
    return SurrogateInputs(torch.as_tensor(x, dtype=torch.float32),
                           torch.as_tensor(u0.reshape(S, -1), dtype=torch.float64))


def _states(transfer, grid_values: torch.Tensor, T: int, components: int) -> torch.Tensor:
    """State channels (B, T C, *grid), ordered (time, component) → (B, T, C N) on the mesh."""
    on_mesh = transfer.to_mesh(grid_values)                                   # (B, T C, N)
    return on_mesh.reshape(on_mesh.shape[0], T, components * on_mesh.shape[-1])


def to_mesh_variances(transfer, output: torch.Tensor, norm: Normaliser, T: int,
                      face_normal: torch.Tensor,
                      components: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Heteroscedastic heads (B, 2C, *grid) → variances of the states (B, T, N) (vector
    states: (B, T, C N)) and of the normal flux densities (B, T, F), in physical units.

    The log-variance channels follow the C = T·components + T d mean channels in the same order. The
    transfer's weights are non-negative, so interpolated variances stay positive; flux
    components count as independent, var(q·n) = Σ_k n_k² var(q_k).
    """
    B = output.shape[0]
    d = face_normal.shape[1]
    Tu = T * components
    C = Tu + T * d
    var = torch.exp(output[:, C:2 * C].clamp(-30.0, 30.0))
    var_u = _states(transfer, var[:, :Tu], T, components) * norm.du_std ** 2
    var_q = transfer.to_faces(var[:, Tu:].reshape(B, T, d, *output.shape[2:])) * norm.flux_std ** 2
    var_phi = torch.einsum("btdf,fd->btf", var_q, face_normal.to(var_q.dtype) ** 2)
    return var_u, var_phi


def to_mesh_outputs(transfer, output: torch.Tensor, u0: torch.Tensor, norm: Normaliser, T: int,
                    face_normal: torch.Tensor,
                    components: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Model output (B, C_out, *grid) → states (B, T, N) (vector states: (B, T, C N), u0
    (B, C N)) and normal flux densities (B, T, F).

    States are the initial control-volume values plus the transferred increments, so a
    prediction reproduces the initial state exactly.
    """
    B = output.shape[0]
    d = face_normal.shape[1]
    Tu = T * components
    du = _states(transfer, output[:, :Tu], T, components) * norm.du_std     # (B, T, C N)
    u = u0.to(du.dtype)[:, None, :] + du
    q = output[:, Tu:Tu + T * d].reshape(B, T, d, *output.shape[2:])
    q_faces = transfer.to_faces(q) * norm.flux_std                           # (B, T, d, F)
    phi = torch.einsum("btdf,fd->btf", q_faces, face_normal.to(q_faces.dtype))
    return u, phi


def split_indices(case, S: int) -> tuple[np.ndarray, np.ndarray]:
    """(fitting, validation) indices of the S training scenarios: one seeded split shared by
    every member, so the validation scenarios are unseen by the whole ensemble (early
    stopping and the calibration of variances use them, never the test scenarios)."""
    order = np.random.default_rng(np.random.SeedSequence([case.seed, 9001])).permutation(S)
    n_val = int(round(case.surrogate["validation"] * S))
    n_val = min(max(n_val, 1 if case.surrogate["validation"] > 0 else 0), S - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclass(frozen=True)
class EdgeSplit:
    """The training scenarios split at the edge of their span, to measure how a kind of member
    extrapolates where the test asks it to (``[surrogate] time = "select"``).

    Attributes:
        fit: the scenarios the probe members train on (inside the cut).
        edge: those beyond the cut, their validation scenarios.
        weight: the fraction of test scenarios outside the training span, the weight of the
            probes' error in the choice.
    """

    fit: np.ndarray
    edge: np.ndarray
    weight: float


def edge_split(case) -> EdgeSplit | None:
    """Where test scenarios lie outside the training span (the test parameters are inputs the
    case declares, not results), a split of the training scenarios that asks the same
    extrapolation of a probe: for each parameter the test exceeds by e beyond a span of width
    s, the cut is placed so that the held-out stretch is e / s of what is kept, (high - cut) /
    (cut - low) = e / s, at most half of the span; the scenarios beyond a cut are the edge.
    None when every test scenario is inside the span, or when fewer than 2 scenarios fall on
    either side."""
    from hybrid.constraints.selection import training_span, within_training_span

    train, test = case.scenarios("train"), case.scenarios("test")
    if len(train) < 4 or not test:
        return None
    names = sorted(train[0])
    P = np.array([[sc[n] for n in names] for sc in train], float)
    Q = np.array([[sc[n] for n in names] for sc in test], float)
    declared = case.declared_span(names)
    outside = ~within_training_span(P, Q, declared)
    if not outside.any():
        return None
    low, high = training_span(P, declared)
    edge = np.zeros(len(P), bool)
    for j in range(P.shape[1]):
        width = high[j] - low[j]
        if not width > 0:
            continue
        above, below = Q[:, j].max() - high[j], low[j] - Q[:, j].min()
        if above > 1e-9 * width:
            r = min(above / width, 1.0)
            edge |= P[:, j] > (high[j] + r * low[j]) / (1 + r)
        if below > 1e-9 * width:
            r = min(below / width, 1.0)
            edge |= P[:, j] < (low[j] + r * high[j]) / (1 + r)
    if edge.sum() < 2 or (~edge).sum() < 2:
        return None
    return EdgeSplit(np.flatnonzero(~edge), np.flatnonzero(edge), float(outside.mean()))
