"""Constraint rows ``G x = b`` from a case's control volumes and boundary conditions.

The state of one scenario is ``x = [u^1, …, u^T, Φ^1, …, Φ^T]``: control-volume values at
the output times t_1..t_T (u^0, the initial state, is given) and the time-integrated face
fluxes of each output interval. Rows (see ``shared/design.md``, "The constraint engine"):

per-cell conservation, one per control volume K and interval n
    |K| (u_K^n − u_K^{n−1}) + Σ_f s_{K,f} Φ_f^n = S_K^n          (u^0 moves to b)
global conservation, one per interval n (ProbConserv's row; the sum of the per-cell rows)
    Σ_K |K| (u_K^n − u_K^{n−1}) + Σ_{boundary f} Φ_f^n = Σ_K S_K^n
known boundary flux (Neumann ``flux``), one per boundary face and interval
    Φ_f^n = ∫ q dt |f|
Dirichlet values, one per Dirichlet control volume (dual) and output time
    u_K^n = g(x_K, t_n)
normal derivative on values (Neumann ``normal_derivative``, dual), one per boundary facet
and output time: the P1 gradient of the adjacent mesh cell along the outward normal
    Σ_v (∇φ_v · n) u_{K(v)}^n = h(x_facet, t_n)
(with a constant conductivity k the same condition also fixes the flux, Φ_f^n = −k |f| ∫ h dt)

Rows are built as scipy CSR matrices in float64 over the whole problem; the distributed
PETSc assembly follows the control volumes' owner ranks (``cv_owner``/``face_owner``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from hybrid.mesh.control_volumes import ControlVolumes

__all__ = ["StateLayout", "ConstraintRows", "conservation_rows", "conservation_rhs", "global_rows",
           "boundary_flux_rows", "dirichlet_rows", "normal_derivative_rows", "stack_rows"]


@dataclass(frozen=True)
class StateLayout:
    """Where each unknown lives in x: T blocks of N states, then T blocks of F fluxes."""

    N: int
    F: int
    T: int

    @property
    def size(self) -> int:
        """The length of x, T (N + F)."""
        return self.T * (self.N + self.F)

    def u(self, n: int) -> slice:
        """States at output time t_n, n = 1..T."""
        return slice((n - 1) * self.N, n * self.N)

    def flux(self, n: int) -> slice:
        """Fluxes of interval n (t_{n-1}, t_n], n = 1..T."""
        start = self.T * self.N + (n - 1) * self.F
        return slice(start, start + self.F)

    def pack(self, u: np.ndarray, flux: np.ndarray) -> np.ndarray:
        """The vector x from states (T, N) at t_1..t_T and fluxes (T, F)."""
        return np.concatenate([np.asarray(u, float).ravel(), np.asarray(flux, float).ravel()])

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """States (..., T, N) and fluxes (..., T, F) from x (..., T (N + F))."""
        n = self.T * self.N
        return (x[..., :n].reshape(*x.shape[:-1], self.T, self.N),
                x[..., n:].reshape(*x.shape[:-1], self.T, self.F))


@dataclass
class ConstraintRows:
    """A block of rows with its right-hand side and a name per row kind (for reports)."""

    G: sp.csr_matrix
    b: np.ndarray
    kind: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="U24"))

    @property
    def count(self) -> int:
        """The number of rows."""
        return self.G.shape[0]


def _rows(layout: StateLayout, rows, cols, vals, b, kind: str) -> ConstraintRows:
    G = sp.csr_matrix((vals, (rows, cols)), shape=(len(b), layout.size))
    G.sum_duplicates()
    return ConstraintRows(G, np.asarray(b, float), np.full(len(b), kind, dtype="U24"))


def conservation_rows(cv: ControlVolumes, layout: StateLayout, u0: np.ndarray,
                      source: np.ndarray | None = None) -> ConstraintRows:
    """One balance row per control volume per interval."""
    N, T = layout.N, layout.T
    D = cv.incidence().tocoo()
    rows, cols, vals = [], [], []
    b = conservation_rhs(cv, layout, u0, source)
    for n in range(1, T + 1):
        r0 = (n - 1) * N
        K = np.arange(N)
        rows += [r0 + K]
        cols += [layout.u(n).start + K]
        vals += [cv.volume]
        if n > 1:
            rows += [r0 + K]
            cols += [layout.u(n - 1).start + K]
            vals += [-cv.volume]
        rows += [r0 + D.row]
        cols += [layout.flux(n).start + D.col]
        vals += [D.data]
    return _rows(layout, np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), b,
                 "per-cell")


def conservation_rhs(cv: ControlVolumes, layout: StateLayout, u0: np.ndarray,
                     source: np.ndarray | None = None) -> np.ndarray:
    """The right-hand side b of the per-cell rows: |K| u_K^0 in the first interval's rows, plus
    ∫_K source dt."""
    b = np.zeros(layout.T * layout.N)
    b[:layout.N] = cv.volume * u0
    if source is not None:
        b += np.asarray(source, float).ravel()
    return b


def global_rows(cv: ControlVolumes, layout: StateLayout, u0: np.ndarray,
                source: np.ndarray | None = None) -> ConstraintRows:
    """The per-cell rows summed over all control volumes: one mass balance per interval."""
    per_cell = conservation_rows(cv, layout, u0, source)
    N, T = layout.N, layout.T
    summing = sp.csr_matrix((np.ones(T * N), (np.repeat(np.arange(T), N), np.arange(T * N))),
                            shape=(T, T * N))
    G = (summing @ per_cell.G).tocsr()
    G.eliminate_zeros()  # interior fluxes cancel exactly (+1 and -1)
    return ConstraintRows(G, summing @ per_cell.b, np.full(T, "global", dtype="U24"))


def boundary_flux_rows(layout: StateLayout, faces: np.ndarray,
                       values: np.ndarray) -> ConstraintRows:
    """Φ_f^n = values[n-1, i] for the given boundary faces (known Neumann fluxes)."""
    T, nf = layout.T, len(faces)
    rows = np.arange(T * nf)
    cols = np.concatenate([layout.flux(n).start + faces for n in range(1, T + 1)])
    return _rows(layout, rows, cols, np.ones(T * nf), np.asarray(values, float).ravel(),
                 "neumann-flux")


def dirichlet_rows(layout: StateLayout, cvs: np.ndarray, values: np.ndarray) -> ConstraintRows:
    """u_K^n = values[n-1, i] for the given control volumes."""
    T, nc = layout.T, len(cvs)
    rows = np.arange(T * nc)
    cols = np.concatenate([layout.u(n).start + cvs for n in range(1, T + 1)])
    return _rows(layout, rows, cols, np.ones(T * nc), np.asarray(values, float).ravel(),
                 "dirichlet")


def normal_derivative_rows(cv: ControlVolumes, layout: StateLayout, faces: np.ndarray,
                           values) -> ConstraintRows:
    """∇u_h · n = h on the mesh facets under the given dual boundary faces, at t_1..t_T.

    A boundary facet of a d-D mesh carries d dual faces (one per vertex), all with the
    adjacent cell's gradient; they give one row, evaluated at the facet's centroid (the mean
    of its pieces' centroids). ``values(points, n)`` returns h at those points and t_n."""
    if cv.kind != "dual":
        raise ValueError("normal-derivative rows need dual control volumes (cell values hold no "
                         "gradient)")
    bp = cv.boundary_pieces
    piece = np.searchsorted(bp.face, faces)
    if np.any(bp.face[np.minimum(piece, len(bp.face) - 1)] != faces):
        raise ValueError("normal-derivative rows: some faces are not boundary faces")
    # the row of a piece: -weight / |f| = ∇φ_v · n; pieces of one facet share stencil and normal
    key = np.concatenate([np.sort(bp.stencil[piece], axis=1), np.round(cv.face_normal[faces], 12)],
                         axis=1)
    _, group, count = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    group = group.ravel()
    first = np.full(len(count), -1)
    first[group[::-1]] = np.arange(len(group))[::-1]
    centroid = np.zeros((len(count), cv.dim))
    np.add.at(centroid, group, cv.face_centroid[faces])
    centroid /= count[:, None]
    coeff = -bp.weight[piece[first]] / cv.face_area[faces[first]][:, None]
    stencil = bp.stencil[piece[first]]
    G = len(count)
    rows, cols, vals, b = [], [], [], []
    for n in range(1, layout.T + 1):
        rows.append(np.repeat((n - 1) * G + np.arange(G), stencil.shape[1]))
        cols.append((layout.u(n).start + stencil).ravel())
        vals.append(coeff.ravel())
        b.append(np.asarray(values(centroid, n), float) * np.ones(G))
    return _rows(layout, np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                 np.concatenate(b), "normal-derivative")


def stack_rows(blocks: list[ConstraintRows]) -> ConstraintRows:
    """The blocks' rows one after the other (empty blocks dropped); ValueError when none has
    a row."""
    blocks = [b for b in blocks if b.count]
    if not blocks:
        raise ValueError("no constraint rows")
    return ConstraintRows(sp.vstack([b.G for b in blocks]).tocsr(),
                          np.concatenate([b.b for b in blocks]),
                          np.concatenate([b.kind for b in blocks]))
