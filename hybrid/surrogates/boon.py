"""BOON: boundary-corrected Fourier layers (Saad, Gupta, Alizadeh, Maddix, ICLR 2023), 1-D and 2-D.

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

__all__ = ["BoonFNO", "boundary_ends", "boundary_data", "mesh_ends", "enforce_on_mesh", "KINDS",
           "box_faces", "boundary_fields", "enforce_walls_on_mesh"]

KINDS = ("dirichlet", "neumann", "periodic", "none")


class BoonFNO(FNO):
    """A 1-D or 2-D :class:`FNO` with BOON's kernel correction and strict boundary
    enforcement. ``ends``: the kind of each face of the grid's box, one of :data:`KINDS` —
    (left, right) in 1-D, (x low, x high, y low, y high) in 2-D, where Neumann faces are
    not available. ``components``: state components per output time (a velocity's d).

    In 2-D (as in the reference code's multi-dimensional layers) the kernel's face blocks
    are the responses to a unit input on a whole face, and the elimination runs along each
    axis in turn; the boundary data enter as fields whose face values are the data
    (:func:`boundary_fields`), and the strict enforcement sets every Dirichlet face node."""

    def __init__(self, in_channels: int, out_channels: int, dim: int, *, ends: tuple[str, ...],
                 outputs: int, components: int = 1, modes: int = 16, width: int = 32,
                 layers: int = 4, variance_channels: int = 0, tol: float | None = None):
        if dim not in (1, 2):
            raise ValueError("BOON's correction is implemented for 1-D and 2-D grids")
        if len(ends) != 2 * dim:
            raise ValueError(f"a {dim}-D grid has {2 * dim} faces; found boundary kinds "
                             f"{tuple(ends)}")
        if any(e not in KINDS for e in ends):
            raise ValueError(f"boundary kinds {ends}: each must be one of {KINDS}")
        pairs = [tuple(ends[2 * a:2 * a + 2]) for a in range(dim)]
        if any((lo == "periodic") != (hi == "periodic") for lo, hi in pairs):
            raise ValueError("periodic ends come in pairs")
        if dim == 2 and "neumann" in ends:
            raise ValueError("2-D BOON takes Dirichlet, periodic or uncorrected faces (no Neumann "
                             "faces)")
        super().__init__(in_channels, out_channels, dim, modes=modes, width=width, layers=layers,
                         padding=0, variance_channels=variance_channels)
        # the regularisation of the elimination's inverses (see _inverse): absolute in 1-D,
        # relative in 2-D
        self.ends, self.pairs, self.outputs = tuple(ends), pairs, int(outputs)
        self.tol = float(tol if tol is not None else (1e-6 if dim == 1 else 0.05))
        self.components = int(components)

    # --------------------------------------------------------------- the correction
    @staticmethod
    def _face(v: torch.Tensor, axis: int, index: int) -> torch.Tensor:
        return v.select(2 + axis, index)

    def _with_face(self, v: torch.Tensor, axis: int, index: int,
                   face: torch.Tensor) -> torch.Tensor:
        v = v.clone()
        v.select(2 + axis, index).copy_(face)
        return v

    def _face_blocks(self, layer, C: int, shape: tuple[int, ...], axis: int, dtype, device):
        """(K_00, K_N0, K_0N, K_NN): the C × C blocks [out, in] of the layer between the low (0)
        and high (N) faces along ``axis`` of a grid of ``shape``."""
        dim = self.dim
        # a unit input on a whole face is constant along the other axes, and so is the layer's
        # response (periodic FFT, pointwise skip, no padding): evaluate it on the grid reduced to
        # one node along those axes (SpectralConv keeps just their zero frequency there)
        reduced = [n if a == axis else 1 for a, n in enumerate(shape)]
        unit = torch.zeros((2 * C, C, *reduced), dtype=dtype, device=device)
        eye = torch.eye(C, dtype=dtype, device=device).reshape(C, C, *([1] * (dim - 1)))
        unit[:C].select(2 + axis, 0).copy_(eye.expand_as(unit[:C].select(2 + axis, 0)))
        unit[C:].select(2 + axis, -1).copy_(eye.expand_as(unit[C:].select(2 + axis, -1)))
        # the kernel's face blocks (C x C, channels mix): responses to a unit input in each channel
        # on each face, less the response to zero (the skip has a bias)
        response = layer(unit) - layer(torch.zeros_like(unit[:1]))     # (2C, C_out, *grid)
        block = lambda r, i: self._face(r, axis, i).reshape(C, C).T   # [out, in]
        return (block(response[:C], 0), block(response[:C], -1), block(response[C:], 0),
                block(response[C:], -1))

    def _eliminate(self, layer, x: torch.Tensor, axis: int, left: bool,
                   right: bool) -> torch.Tensor:
        """The paper's Gaussian elimination along ``axis``: the changed input of the layer."""
        C = x.shape[1]
        k00, kn0, k0n, knn = self._face_blocks(layer, C, tuple(x.shape[2:]), axis, x.dtype,
                                               x.device)
        inv = self._inverse
        mul = lambda M, v: torch.einsum("oi,bi...->bo...", M, v)
        face = lambda v, i: self._face(v, axis, i)
        knn_inv = inv(knn)
        if left and not right:   # the one-sided elimination, as on the right
            x0 = 2 * face(x, 0) - mul(inv(k00), face(layer(x), 0))
            return self._with_face(x, axis, 0, x0)
        if left:
            kx = layer(x)
            k00t = k00 - k0n @ knn_inv @ kn0
            rhs = face(kx, 0) - mul(k0n @ knn_inv, face(kx, -1)) + mul(k0n, face(x, -1))
            x = self._with_face(x, axis, 0, 2 * face(x, 0) - mul(inv(k00t), rhs))
        if right:
            ky = layer(x)
            x = self._with_face(x, axis, -1, 2 * face(x, -1) - mul(knn_inv, face(ky, -1)))
        return x

    def _inverse(self, A: torch.Tensor) -> torch.Tensor:
        """A block's inverse in the elimination. 1-D: (A + tol I)⁻¹. 2-D: the damped inverse
        (AᵀA + (tol σ_max)² I)⁻¹ Aᵀ — the face blocks of 2-D layers come close to singular in
        training (smallest singular value ~1e-3 of the largest), and the exact inverse then
        feeds huge face inputs into the interior (measured on the cavity: loss spikes of 10×,
        gradients of 1e5, a network that stops learning). The strict enforcement at the output
        still sets the boundary exactly."""
        eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        if self.dim == 1:
            return torch.linalg.inv(A + self.tol * eye)
        damping = (self.tol * torch.linalg.matrix_norm(A, ord=2).detach()) ** 2
        return torch.linalg.solve(A.T @ A + damping * eye, A.T)

    def _periodic(self, y: torch.Tensor) -> torch.Tensor:
        """BOON's periodic correction: both faces of a periodic axis take their average
        (α = β = ½)."""
        for axis, (lo, _) in enumerate(self.pairs):
            if lo == "periodic":
                end = 0.5 * (self._face(y, axis, 0) + self._face(y, axis, -1))
                y = self._with_face(self._with_face(y, axis, 0, end), axis, -1, end)
        return y

    def _corrected(self, spectral, skip, x: torch.Tensor) -> torch.Tensor:
        layer = lambda v: spectral(v) + skip(v)
        for axis, (lo, hi) in enumerate(self.pairs):
            if lo != "periodic" and (lo != "none" or hi != "none"):
                x = self._eliminate(layer, x, axis, lo != "none", hi != "none")
        return self._periodic(layer(x))

    def _fixed(self, shape: tuple[int, ...], device) -> torch.Tensor:
        """Grid nodes on a Dirichlet or Neumann face: not activated, overwritten at the output."""
        mask = torch.zeros(shape, dtype=torch.bool, device=device)
        for axis, (lo, hi) in enumerate(self.pairs):
            for kind, index in ((lo, 0), (hi, -1)):
                if kind in ("dirichlet", "neumann"):
                    mask.select(axis, index).fill_(True)
        return mask

    def _activate_interior(self, h: torch.Tensor) -> torch.Tensor:
        return torch.where(self._fixed(tuple(h.shape[2:]), h.device), h, self.activation(h))

    def enforce(self, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """Strict enforcement on the state channels z (B, T C, *grid): 1-D from the data β
        (B, 2, T); 2-D from the boundary fields β (B, T C, *grid) at the Dirichlet faces."""
        if self.dim == 2:   # no Neumann faces in 2-D: the fixed nodes are the Dirichlet faces
            return self._periodic(torch.where(self._fixed(tuple(z.shape[2:]), z.device), beta, z))
        if self.ends[0] == "periodic":
            return self._periodic(z)
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
        """(B, C_in, *grid) → (B, C_out, *grid), the module docstring's contract: the corrected
        layers, then the strict enforcement on the state channels from the boundary data in the
        last input channels (1-D: 2T channels, constant along x; 2-D: T C boundary fields)."""
        T = self.outputs
        states = T * self.components
        if self.dim == 1:
            beta = x[:, -2 * T:, 0].reshape(x.shape[0], 2, T)
        else:
            beta = x[:, -states:]
        h = self.lifting(x)
        for i, (spectral, skip) in enumerate(zip(self.spectral, self.skip)):
            h = self._corrected(spectral, skip, h)
            if i < len(self.spectral) - 1:
                h = self._activate_interior(h)
        out = self.projection(h)
        out = torch.cat([self.enforce(out[:, :states], beta), out[:, states:]], dim=1)
        if self.variance is None:
            return out
        return torch.cat([out, self.variance(h.detach())], dim=1)


# ------------------------------------------------------------------ data from the case
def boundary_ends(case, cv) -> list[tuple[str, str, object]]:
    """(boundary name, kind, expression) of the left and the right end of a 1-D case.

    ``flux`` conditions count as Neumann when k is constant (h = -q / k) and the family has
    no convection; otherwise that end gets no correction (``none``)."""
    if cv.dim != 1:
        raise CaseError(f"boundary_ends is for 1-D cases (2-D: box_faces); this mesh is {cv.dim}-D",
                        file=str(case.display_file), key="constraints.compare")
    if cv.periodic_pairs:
        return [(name, "periodic", None) for name in cv.periodic_pairs[0]]
    bfaces = cv.boundary_faces
    x = cv.face_centroid[bfaces, 0]
    tag_of = {tag: name for name, tag in cv.boundary_names.items()}
    names = [tag_of.get(int(cv.face_tag[bfaces[np.argmin(x)]])),
             tag_of.get(int(cv.face_tag[bfaces[np.argmax(x)]]))]
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


def model_ends(ends) -> tuple[str, ...]:
    """The model's face kinds: from :func:`boundary_ends` (1-D) or :func:`box_faces`' kinds
    (2-D)."""
    if all(isinstance(e, str) for e in ends):
        return tuple(ends)
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
    for e, (_name, kind, expr) in enumerate(ends):
        if kind in ("periodic", "none"):
            continue
        point = np.array([[lo if e == 0 else hi]])
        for i, p in enumerate(params):
            value = _end_data(kind, expr, point, times, p)
            if kind == "dirichlet":
                beta[i, e] = (value - a[i, 0 if e == 0 else -1]) / du_std
            else:
                a0, a1, a2 = ((a[i, 0], a[i, 1], a[i, 2]) if e == 0
                              else (a[i, -1], a[i, -2], a[i, -3]))
                beta[i, e] = ((4 * a1 - a2 + 2 * dx * value) / 3 - a0) / du_std
    return beta


def mesh_ends(ends, cv, times: np.ndarray,
              params: dict) -> list[tuple[str, str, int, int, np.ndarray]]:
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
        out.append((name, "dirichlet" if kind == "dirichlet" else "neumann", int(end), int(nxt),
                    data))
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


def with_boundary_channels(case, cv, transfer, inputs, params: np.ndarray, names: list[str],
                           times: np.ndarray, norm):
    """The inputs of a :class:`BoonFNO`: ``inputs`` plus the boundary data — in 1-D 2T
    constant channels, returning (inputs, :func:`boundary_ends`); in 2-D the T C fields of
    :func:`boundary_fields`, returning (inputs, the face kinds of :func:`box_faces`)."""
    from hybrid.surrogates.data import SurrogateInputs

    if cv.dim == 2:
        kinds, _ = box_faces(case, cv, transfer)
        plist = [dict(zip(names, map(float, row))) for row in np.atleast_2d(params)]
        N = cv.num_cvs
        beta = boundary_fields(case, cv, transfer, inputs.u0.numpy(), plist, times, norm.du_std,
                               inputs.u0.shape[-1] // N)
        x = inputs.grid_inputs
        return SurrogateInputs(torch.cat([x, torch.as_tensor(beta, dtype=x.dtype)], dim=1),
                               inputs.u0), kinds
    ends = boundary_ends(case, cv)
    plist = [dict(zip(names, map(float, row))) for row in np.atleast_2d(params)]
    beta = boundary_data(ends, transfer, inputs.u0.numpy(), plist, times, norm.du_std)
    x = inputs.grid_inputs
    channels = torch.as_tensor(beta.reshape(len(plist), -1, 1),
                               dtype=x.dtype).expand(-1, -1, x.shape[-1])
    return SurrogateInputs(torch.cat([x, channels], dim=1), inputs.u0), ends


# ---------------------------------------------------------------- 2-D: the faces of the grid's box
def box_faces(case, cv, transfer) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """The kinds of the four faces of a 2-D grid (x low, x high, y low, y high) and, for every
    Dirichlet wall, the flat indices of the grid's face nodes it owns (in the case's order:
    where walls meet, the one listed later owns the node, as in the solvers).

    The grid must be the mesh's box and the domain must fill it (a rectangle); a face is
    ``dirichlet`` when Dirichlet walls cover all its nodes, ``periodic`` for a periodic pair."""
    where = dict(file=str(case.display_file), key="constraints.compare")
    grid = transfer.grid
    if cv.dim != 2:
        raise CaseError(f"box_faces is for 2-D meshes; this one is {cv.dim}-D", **where)
    lo, hi = cv.face_centroid.min(axis=0), cv.face_centroid.max(axis=0)
    span = float(np.max(hi - lo))
    if not transfer.inside.all() or np.abs(np.asarray(grid.lo) - lo).max() > 1e-9 * span \
            or np.abs(np.asarray(grid.hi) - hi).max() > 1e-9 * span:
        raise CaseError("2-D BOON needs a rectangular domain that fills the surrogate's grid (the "
                        "grid's faces must be the walls)", **where)
    shape = tuple(grid.shape)
    index = np.arange(grid.size).reshape(shape)
    faces = [index[0, :], index[-1, :], index[:, 0], index[:, -1]]
    bfaces = cv.boundary_faces
    pts = grid.points
    periodic = {name for pair in cv.periodic_pairs for name in pair}
    owned: dict[str, np.ndarray] = {}
    covered = np.zeros(grid.size, dtype=bool)
    from hybrid.solvers.boundaries import wall_order

    for name in wall_order(case, cv):
        on = bfaces[cv.face_tag[bfaces] == cv.boundary_names[name]]
        if not len(on) or name in periodic:
            continue
        # a node is on the wall when it lies on one of the wall's (dual) boundary faces: segments
        # through the face centroid, |f| long, with normal n
        rel = pts[None, :, :] - cv.face_centroid[on][:, None, :]                   # (F, n_grid, 2)
        normal = np.einsum("fgd,fd->fg", rel, cv.face_normal[on])
        along = np.linalg.norm(rel - normal[..., None] * cv.face_normal[on][:, None, :], axis=-1)
        hit = ((np.abs(normal) <= 1e-9 * span)
               & (along <= 0.5 * cv.face_area[on][:, None] + 1e-9 * span)).any(axis=0)
        bc = case.boundary_condition(name)
        if bc.type != "dirichlet":
            if hit.any():
                raise CaseError(f"2-D BOON corrects Dirichlet and periodic walls; boundary "
                                f"{name!r} is {bc.type} (the 1-D BOON variant takes Neumann ends)",
                                **where)
            continue
        for other in owned:
            owned[other] = owned[other][~hit[owned[other]]]
        owned[name] = np.flatnonzero(hit)
        covered |= hit
    kinds = []
    for a, face in enumerate(faces):
        pair = [p for p in cv.periodic_pairs if any(_on_face(cv, n, a) for n in p)]
        if pair:
            kinds.append("periodic")
        elif covered[face].all():
            kinds.append("dirichlet")
        else:
            kinds.append("none")
    return tuple(kinds), owned


def _on_face(cv, name: str, face: int) -> bool:
    """Boundary ``name`` lies on face ``face`` (0: x low, 1: x high, 2: y low, 3: y high) of the
    box."""
    axis, side = divmod(face, 2)
    c = cv.face_centroid[cv.faces_of(name), axis]
    box = cv.face_centroid[:, axis]
    return bool(len(c)) and np.allclose(c, box.max() if side else box.min())


def boundary_fields(case, cv, transfer, u0_mesh: np.ndarray, params: list[dict], times: np.ndarray,
                    du_std: float, components: int = 1) -> np.ndarray:
    """β (S, T C, *grid) of a 2-D :class:`BoonFNO`: on each Dirichlet wall's face nodes the
    normalised increment (g − a) / s that makes the grid state equal the data g (a the
    initial state on the grid), channels ordered (time, component) like the state's; zero
    elsewhere."""
    _, owned = box_faces(case, cv, transfer)
    S, T, C = len(params), len(times) - 1, components
    # (S, C, n_grid)
    a = np.asarray(transfer.to_grid(np.asarray(u0_mesh).reshape(S, C, -1))).reshape(S, C, -1)
    beta = np.zeros((S, T, C, transfer.grid.size))
    for name, nodes in owned.items():
        bc = case.boundary_condition(name)
        pts = transfer.grid.points[nodes]
        for i, p in enumerate(params):
            for n, t in enumerate(times[1:]):
                beta[i, n][:, nodes] = (bc.dirichlet_values(pts, t, p) - a[i][:, nodes]) / du_std
    return beta.reshape(S, T * C, *transfer.grid.shape)


def enforce_walls_on_mesh(U: np.ndarray, case, cv, times: np.ndarray,
                          params: list[dict]) -> np.ndarray:
    """BOON's strict Dirichlet enforcement again, in float64 on the control-volume values
    U (S, M, T+1, C N) of a 2-D dual mesh: every Dirichlet wall's control volumes take the
    data, in the case's order (later walls own shared vertices)."""
    from hybrid.solvers.boundaries import dirichlet_walls

    U = U.copy()
    N = cv.num_cvs
    for i, p in enumerate(params):
        for n, t in enumerate(times[1:], start=1):
            for _, cvs, values in dirichlet_walls(case, cv, t, p):   # values (n, C)
                for c in range(values.shape[1]):
                    U[i, :, n][:, c * N + cvs] = values[:, c]
    return U
