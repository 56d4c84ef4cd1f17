"""BOON: boundary-corrected Fourier layers (Saad, Gupta, Alizadeh, Maddix, ICLR 2023), 1-D.

BOON makes an FNO satisfy a boundary condition by construction. Each Fourier layer's
linear operator K (spectral convolution plus the pointwise skip, here taken together) is
replaced by a corrected operator whose boundary rows no longer see the interior, and the
network's output is overwritten at the boundary from the data ("strict enforcement").

Kernel correction (the paper's Gaussian elimination, written from its equations). With
K_ij the response at node i to a unit input at node j — here C × C blocks, because the
layer mixes its C channels (measured by applying K to unit vectors at the two end nodes,
one per channel; the paper's scalars are the one-channel case) — the input x of the layer
is first changed at its boundary entries and K is applied to the result:

    left:   x'_0 = 2 x_0 - ((K x)_0 - (K x)_N K_0N / K_NN + K_0N x_N) / K̃_00,
            K̃_00 = K_00 - K_N0 K_0N / K_NN
    right:  x''_N = 2 x'_N - (K x')_N / K_NN,     output K x''
    (left end alone: x'_0 = 2 x_0 - (K x)_0 / K_00).

Then (K x'')_0 = K̃_00 x_0 and (K x'')_N = K_NN x_N: each boundary output depends on that
boundary's input alone, so the interior never pollutes it (tested). The end conditions:

* ``dirichlet``: the output's end node is the given value;
* ``neumann``: the end node follows the given outward derivative h through the
  second-order one-sided difference, u_0 = (4 u_1 - u_2 + 2 Δx h) / 3 (mirrored at the
  right end);
* ``periodic``: both end nodes take the average of the two (BOON's α = β = ½), in every
  layer and at the output; periodic layers need no elimination.

As in BOON the activation acts on interior nodes only, and there is no zero padding
(the end nodes are the domain's ends). Differences from the reference code, for our
multi-time outputs: the hidden layers are corrected by the elimination but their end
nodes are not overwritten with the boundary data (the hidden channels are features, not
the T output times); the data reach the network as input channels instead.

Tensor contract (as :class:`~hybrid.surrogates.fno.FNO`): input (B, C_in, n) with the
last 2T channels the boundary data β (constant along x) of the left and the right end for
t_1..t_T, in the output's units; output (B, C_out, n). The first T output channels are the
normalised state increments z = (u - u_0) / s, and the strict enforcement acts on them:
Dirichlet z_end = β; Neumann z_0 = (4 z_1 - z_2) / 3 + β with β = ((4 a_1 - a_2 +
2 Δx h) / 3 - a_0) / s (a the initial state on the grid) — both exact statements about u.
"""

from __future__ import annotations

import numpy as np
import torch

from hybrid.errors import CaseError
from hybrid.surrogates.fno import FNO

__all__ = ["BoonFNO", "boundary_ends", "boundary_data", "mesh_ends", "enforce_on_mesh", "KINDS"]

KINDS = ("dirichlet", "neumann", "periodic", "none")


class BoonFNO(FNO):
    """A 1-D :class:`FNO` with BOON's kernel correction and strict boundary enforcement;
    ``ends`` is the (left, right) kind, one of :data:`KINDS`."""

    def __init__(self, in_channels: int, out_channels: int, dim: int, *, ends: tuple[str, str], outputs: int,
                 modes: int = 16, width: int = 32, layers: int = 4, variance_channels: int = 0, tol: float = 1e-6):
        if dim != 1:
            raise ValueError("BOON's correction is implemented for 1-D grids")
        if any(e not in KINDS for e in ends):
            raise ValueError(f"boundary kinds {ends}: each must be one of {KINDS}")
        if (ends[0] == "periodic") != (ends[1] == "periodic"):
            raise ValueError("periodic ends come in pairs")
        super().__init__(in_channels, out_channels, dim, modes=modes, width=width, layers=layers,
                         padding=0, variance_channels=variance_channels)
        self.ends, self.outputs, self.tol = tuple(ends), int(outputs), float(tol)

    # --------------------------------------------------------------- the correction
    def _corrected(self, spectral, skip, x: torch.Tensor) -> torch.Tensor:
        layer = lambda v: spectral(v) + skip(v)
        if self.ends[0] == "periodic":
            y = layer(x)
            end = 0.5 * (y[..., 0] + y[..., -1])
            return torch.cat([end[..., None], y[..., 1:-1], end[..., None]], dim=-1)
        left, right = self.ends[0] != "none", self.ends[1] != "none"
        if not (left or right):
            return layer(x)
        C, n = x.shape[1], x.shape[-1]
        # the kernel's end blocks (C x C, channels mix): responses to a unit input in each
        # channel at each end, less the response to zero (the skip has a bias)
        unit = torch.zeros((2 * C, C, n), dtype=x.dtype, device=x.device)
        eye = torch.eye(C, dtype=x.dtype, device=x.device)
        unit[:C, :, 0] = eye
        unit[C:, :, -1] = eye
        response = layer(unit) - layer(torch.zeros_like(unit[:1]))     # (2C, C_out, n)
        k00, kn0 = response[:C, :, 0].T, response[:C, :, -1].T            # [out, in]
        k0n, knn = response[C:, :, 0].T, response[C:, :, -1].T
        ridge = self.tol * eye
        knn_inv = torch.linalg.inv(knn + ridge)
        if left and not right:   # the one-sided elimination, as on the right
            x0 = 2 * x[..., 0] - layer(x)[..., 0] @ torch.linalg.inv(k00 + ridge).T
            return layer(torch.cat([x0[..., None], x[..., 1:]], dim=-1))
        if left:
            kx = layer(x)
            k00t = k00 - k0n @ knn_inv @ kn0
            rhs = kx[..., 0] - kx[..., -1] @ (k0n @ knn_inv).T + x[..., -1] @ k0n.T   # (B, C)
            x0 = 2 * x[..., 0] - torch.linalg.solve(k00t + ridge, rhs.T).T
            x = torch.cat([x0[..., None], x[..., 1:]], dim=-1)
        if right:
            ky = layer(x)
            xn = 2 * x[..., -1] - ky[..., -1] @ knn_inv.T
            x = torch.cat([x[..., :-1], xn[..., None]], dim=-1)
        return layer(x)

    def _activate_interior(self, h: torch.Tensor) -> torch.Tensor:
        lo = 0 if self.ends[0] in ("periodic", "none") else 1
        hi = h.shape[-1] - (0 if self.ends[1] in ("periodic", "none") else 1)
        return torch.cat([h[..., :lo], self.activation(h[..., lo:hi]), h[..., hi:]], dim=-1)

    def enforce(self, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """Strict enforcement on the T state channels z (B, T, n) from the data β (B, 2, T)."""
        if self.ends[0] == "periodic":
            end = 0.5 * (z[..., 0] + z[..., -1])
            return torch.cat([end[..., None], z[..., 1:-1], end[..., None]], dim=-1)
        first, last = z[..., 0], z[..., -1]
        if self.ends[0] == "dirichlet":
            first = beta[:, 0]
        elif self.ends[0] == "neumann":
            first = (4 * z[..., 1] - z[..., 2]) / 3 + beta[:, 0]
        if self.ends[1] == "dirichlet":
            last = beta[:, 1]
        elif self.ends[1] == "neumann":
            last = (4 * z[..., -2] - z[..., -3]) / 3 + beta[:, 1]
        return torch.cat([first[..., None], z[..., 1:-1], last[..., None]], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.outputs
        beta = x[:, -2 * T:, 0].reshape(x.shape[0], 2, T)
        h = self.lifting(x)
        for i, (spectral, skip) in enumerate(zip(self.spectral, self.skip)):
            h = self._corrected(spectral, skip, h)
            if i < len(self.spectral) - 1:
                h = self._activate_interior(h)
        out = self.projection(h)
        out = torch.cat([self.enforce(out[:, :T], beta), out[:, T:]], dim=1)
        if self.variance is None:
            return out
        return torch.cat([out, self.variance(h.detach())], dim=1)


# ------------------------------------------------------------------ data from the case
def boundary_ends(case, cv) -> list[tuple[str, str, object]]:
    """(boundary name, kind, expression) of the left and the right end of a 1-D case.

    ``flux`` conditions count as Neumann when k is constant (h = -q / k) and the family has
    no convection; otherwise that end gets no correction (``none``)."""
    if cv.dim != 1:
        raise CaseError(f"the boon variant is implemented for 1-D cases; this mesh is {cv.dim}-D",
                        file=str(case.display_file), key="constraints.compare")
    if cv.periodic_pairs:
        return [(name, "periodic", None) for name in cv.periodic_pairs[0]]
    bfaces = cv.boundary_faces
    x = cv.face_centroid[bfaces, 0]
    tag_of = {tag: name for name, tag in cv.boundary_names.items()}
    names = [tag_of.get(int(cv.face_tag[bfaces[np.argmin(x)]])), tag_of.get(int(cv.face_tag[bfaces[np.argmax(x)]]))]
    ends = []
    for name in names:
        bc = case.boundary_condition(name)
        if bc.type == "dirichlet":
            ends.append((name, "dirichlet", bc.value))
        elif bc.normal_derivative is not None:
            ends.append((name, "neumann", bc.normal_derivative))
        elif case.pde["family"] == "gpme" and case.pde["k"] == "constant":
            ends.append((name, "neumann_flux", bc.flux))
        else:
            ends.append((name, "none", None))
    return ends


def model_ends(ends) -> tuple[str, str]:
    return tuple("neumann" if kind == "neumann_flux" else kind for _, kind, _ in ends)


def _end_data(kind: str, expr, point: np.ndarray, times: np.ndarray, params: dict) -> np.ndarray:
    """An end's data at t_1..t_T at ``point`` (1, d): the value (Dirichlet) or the outward
    du/dn (Neumann; from a flux condition q = -k du/dn when ``kind`` is neumann_flux)."""
    data = np.array([float(np.ravel(expr(point, t=t, params=params))[0]) for t in times[1:]])
    return -data / float(params["k"]) if kind == "neumann_flux" else data


def boundary_data(ends, transfer, u0_mesh: np.ndarray, params: list[dict], times: np.ndarray,
                  du_std: float) -> np.ndarray:
    """β (S, 2, T) of :class:`BoonFNO` for S scenarios (zeros where an end has no data)."""
    S, T = len(params), len(times) - 1
    a = np.asarray(transfer.to_grid(u0_mesh)).reshape(S, -1)        # initial states on the grid
    dx = float(transfer.grid.spacing[0])
    lo, hi = float(transfer.grid.lo[0]), float(transfer.grid.hi[0])
    beta = np.zeros((S, 2, T))
    for e, (name, kind, expr) in enumerate(ends):
        if kind in ("periodic", "none"):
            continue
        point = np.array([[lo if e == 0 else hi]])
        for i, p in enumerate(params):
            value = _end_data(kind, expr, point, times, p)
            if kind == "dirichlet":
                beta[i, e] = (value - a[i, 0 if e == 0 else -1]) / du_std
            else:
                a0, a1, a2 = (a[i, 0], a[i, 1], a[i, 2]) if e == 0 else (a[i, -1], a[i, -2], a[i, -3])
                beta[i, e] = ((4 * a1 - a2 + 2 * dx * value) / 3 - a0) / du_std
    return beta


def mesh_ends(ends, cv, times: np.ndarray, params: dict) -> list[tuple[str, str, int, int, np.ndarray]]:
    """For each end of a 1-D dual mesh with data: (name, "dirichlet" | "neumann", end control
    volume, its neighbour, the data at t_1..t_T — the value, or the outward du/dn)."""
    if cv.kind != "dual":
        return []
    order = np.argsort(cv.centre[:, 0])
    out = []
    for e, (name, kind, expr) in enumerate(ends):
        if kind in ("periodic", "none"):
            continue
        end, nxt = (order[0], order[1]) if e == 0 else (order[-1], order[-2])
        data = _end_data(kind, expr, cv.centre[[end]], times, params)
        out.append((name, "dirichlet" if kind == "dirichlet" else "neumann", int(end), int(nxt), data))
    return out


def enforce_on_mesh(U: np.ndarray, ends, cv, times: np.ndarray, params: list[dict]) -> np.ndarray:
    """BOON's strict enforcement again, in float64 on the control-volume values U (S, M, T+1, N)
    of a 1-D dual mesh: Dirichlet end values are set to the data and Neumann ends follow the
    mesh's own two-point difference, u_end = u_next + h |x_end - x_next| (the P1 gradient of
    the end cell). The network's float32 grid output meets the data to ~1e-7 only."""
    U = U.copy()
    x = cv.centre[:, 0]
    for i, p in enumerate(params):
        for _, kind, end, nxt, data in mesh_ends(ends, cv, times, p):
            if kind == "dirichlet":
                U[i, :, 1:, end] = data
            else:
                U[i, :, 1:, end] = U[i, :, 1:, nxt] + data * abs(x[end] - x[nxt])
    return U


def with_boundary_channels(case, cv, transfer, inputs, params: np.ndarray, names: list[str], times: np.ndarray,
                           norm):
    """The inputs of a :class:`BoonFNO`: ``inputs`` plus the 2T boundary-data channels;
    returns (inputs, ends)."""
    from hybrid.surrogates.data import SurrogateInputs

    ends = boundary_ends(case, cv)
    plist = [dict(zip(names, map(float, row))) for row in np.atleast_2d(params)]
    beta = boundary_data(ends, transfer, inputs.u0.numpy(), plist, times, norm.du_std)
    x = inputs.grid_inputs
    channels = torch.as_tensor(beta.reshape(len(plist), -1, 1), dtype=x.dtype).expand(-1, -1, x.shape[-1])
    return SurrogateInputs(torch.cat([x, channels], dim=1), inputs.u0), ends
