"""SoftC: the PDE residual as a training penalty (the soft-constraint baseline of ProbConserv).

For the GPME ``u_t = ∇·(k(u)∇u) + f`` the residual is taken in differential form on the
surrogate's grid, as ProbConserv's SoftC takes it on its model's output:

    r_n = (u_n - u_{n-1}) / Δt_n - Σ_axes D⁻[ k(ū_{i+½}) D⁺u ]_i - f

(backward difference in time, conservative centred differences in space, k at the
mid-point average), on interior grid nodes inside the domain. For Burgers
``u_t + Σ_i (u²/2)_{x_i} = ν Δu`` the residual also holds the convective term with the
solver's central face flux (u_i² + u_{i+1}²)/4, and k = ν. The penalty is the mean
of (r Δt̄ / σ_Δu)², dimensionless, so ``softc_weight`` means the same in every case.
It shapes training only: nothing here constrains a prediction.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from hybrid.errors import CaseError

__all__ = ["conductivity_torch", "gpme_residual_penalty"]


def conductivity_torch(kind: str,
                       p: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """k(u) in torch, the same models as :class:`hybrid.solvers.gpme.Conductivity`;
    parameters are tensors broadcastable against u."""
    if kind == "constant":
        return lambda u: p["k"] * torch.ones_like(u)
    if kind == "power":
        return lambda u: torch.clamp(u, min=0.0) ** p["m"]

    def stefan(u):
        eps = torch.as_tensor(p["smoothing"], dtype=u.dtype, device=u.device)
        s = torch.clamp((u - p["u_star"] + eps)
                        / (2 * torch.where(eps > 0, eps, torch.ones_like(eps))), 0.0, 1.0)
        s = torch.where(eps > 0, s, (u >= p["u_star"]).to(u.dtype))   # ε = 0: the sharp step, as
                                                                      # the solver's
        return p["k_min"] + (p["k_max"] - p["k_min"]) * s * s * (3 - 2 * s)
    return stefan


def gpme_residual_penalty(case, transfer, inputs, norm, times: np.ndarray, params: np.ndarray,
                          names: list[str]) -> Callable[[torch.Tensor, np.ndarray], torch.Tensor]:
    """The SoftC penalty of the module docstring for the S training scenarios of ``inputs``
    (``params`` (S, P), columns named by ``names``; ``times`` (T+1,)): a function of a
    one-shot output (B, C_out, *grid), whose first T channels are the normalised state
    increments, and of the indices ``idx`` (B,) of its scenarios among the S. Raises CaseError
    for a family other than gpme and burgers, or a nonzero source."""
    family = case.pde["family"]
    if family not in ("gpme", "burgers"):
        raise CaseError("SoftC is available for the gpme and burgers families only",
                        file=str(case.display_file), key="surrogate.softc_weight")
    source = case.pde.get("source")
    if source is not None and not (source.is_constant and source.constant_value() == 0.0):
        raise CaseError("SoftC supports source = \"0\" only", file=str(case.display_file),
                        key="surrogate.softc_weight")
    shape = tuple(transfer.grid.shape)
    d = len(shape)
    h = [(transfer.grid.hi[a] - transfer.grid.lo[a]) / (shape[a] - 1) for a in range(d)]
    dt = torch.as_tensor(np.diff(times), dtype=torch.float32)
    dt_mean = float(dt.mean())
    u0_grid = torch.as_tensor(transfer.to_grid(inputs.u0.numpy()),
                              dtype=torch.float32).reshape(-1, 1, *shape)
    # interior nodes inside the domain
    inside = torch.as_tensor(transfer.inside.reshape(shape))
    interior = torch.zeros(shape, dtype=torch.bool)
    interior[tuple(slice(1, -1) for _ in range(d))] = True
    mask = (inside & interior).float()
    P = torch.as_tensor(params, dtype=torch.float32)
    kind = case.pde["k"] if family == "gpme" else "constant"
    convective = family == "burgers"

    def penalty(output: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        dev = output.device
        T = dt.shape[0]
        start = u0_grid[idx].to(dev)
        u = start + output[:, :T] * norm.du_std                        # (B, T, *grid)
        u_all = torch.cat([start, u], dim=1)
        pb = {n: P[idx, names.index(n)].to(dev).reshape(-1, 1, *([1] * d)) for n in names}
        if convective:
            pb["k"] = pb["nu"]
        k = conductivity_torch(kind, pb)
        u_t = (u_all[:, 1:] - u_all[:, :-1]) / dt.to(dev).reshape(1, -1, *([1] * d))
        div = torch.zeros_like(u)
        for a in range(d):
            ax = 2 + a
            n = u.shape[ax]
            lo, hi = u.narrow(ax, 0, n - 1), u.narrow(ax, 1, n - 1)
            flux = k(0.5 * (lo + hi)) * (hi - lo) / h[a]                 # at i+½
            if convective:
                flux = flux - 0.25 * (lo * lo + hi * hi)
            inner = (flux.narrow(ax, 1, n - 2) - flux.narrow(ax, 0, n - 2)) / h[a]
            div = div + torch.nn.functional.pad(inner, _pad_for(d, a))
        r = (u_t - div) * (dt_mean / norm.du_std)
        m = mask.to(dev)
        return (r ** 2 * m).sum() / (m.sum() * r.shape[0] * r.shape[1])

    return penalty


def _pad_for(d: int, axis: int) -> list[int]:
    """torch.nn.functional.pad spec adding one node at both ends of grid axis ``axis``."""
    spec = []
    for a in reversed(range(d)):
        spec += [1, 1] if a == axis else [0, 0]
    return spec
