"""The even prior's free-flux limit, computed exactly.

A test scenario outside the training span (and every scenario when validation rejects the
ensemble's variances) takes the prior of :func:`~hybrid.constraints.selection.outside_prior`:
the states' variances spread evenly over the volume, the fluxes' inflated. Its promise is the
limit of free fluxes, λ → ∞: the fluxes absorb every balance defect they can, and the states
move only where the rows pin them down whatever the fluxes do. At a finite λ the projection is
orthogonal in the joint (state, flux) norm instead, and the states share the correction (on a
periodic wave, MSE 1.004 of raw at λ = 10³). This module computes the limit itself, in two
updates with the same engine:

1. **States.** The rows that leave the fluxes free to satisfy the rest are those of the left
   null space of the flux part G_Φ: the state-only rows (Dirichlet values, normal derivatives)
   and every combination pᵀ G with pᵀ G_Φ = 0 (for per-cell rows with every boundary flux
   known, one total-mass balance per interval). The states are conditioned on these alone, with
   the even prior's state variances: per output time a projection orthogonal in the
   volume-weighted norm onto rows the solver's states satisfy, so no time's state error grows.
2. **Fluxes.** With the states fixed, the flux-carrying rows (one per null vector dropped: it is
   implied by the others) are consistent; the fluxes are conditioned on them with their own
   variances. Every row then holds to round-off.

The null vectors come from the rows' graph: a flux column that appears in two rows ties their
weights (p_b = −p_a g_a / g_b); a component of rows joined that way has one null vector, the
propagated weights, if every one of its columns cancels under them, and none otherwise (a free
boundary flux, in one row only, forces p = 0). A column in three or more rows would need a
general null-space computation: :func:`free_flux_split` returns None there, and the caller
keeps the finite inflation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = ["FreeFluxSplit", "free_flux_split"]

CANCEL_RTOL = 1e-10   # a column cancels under the weights when |Σ p g| is below this
                      # fraction of Σ |p g|


@dataclass
class FreeFluxSplit:
    """The two updates' rows of one G (every scenario of a variant: only b changes).

    Attributes:
        states: H, the state-only rows over x (no flux entry): G's own state-only rows, then
            one pᵀ G per null vector p of the flux part.
        combine: the map from G's right-hand side b to H's (rows of H × rows of G).
        fluxes: the kept flux-carrying rows over x with their state entries removed.
        keep: the indices in G of those rows.
        coupling: their state entries (rows of ``fluxes`` × x), which move to the right-hand
            side once the states are known.
        null_vectors: how many null vectors the flux part has.
    """

    states: sp.csr_matrix
    combine: sp.csr_matrix
    fluxes: sp.csr_matrix
    keep: np.ndarray
    coupling: sp.csr_matrix
    null_vectors: int

    def state_rhs(self, b: np.ndarray) -> np.ndarray:
        """H's right-hand side for G's ``b``."""
        return self.combine @ b

    def flux_rhs(self, b: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The flux rows' right-hand side once the states of ``x`` are fixed."""
        return b[self.keep] - self.coupling @ x


def _null_weights(Gf: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(weights p with pᵀ Gf = 0 where a null vector exists and 0 elsewhere, each row's component
    label, each component's first row, where p = 1), for the rows of ``Gf`` (all with a flux entry,
    no stored zeros); None when a column has three or more rows."""
    C = Gf.tocsc()
    C.sort_indices()
    counts = np.diff(C.indptr)
    if np.any(counts > 2):
        return None
    rows = Gf.shape[0]
    pair = np.flatnonzero(counts == 2)
    a, b = C.indices[C.indptr[pair]], C.indices[C.indptr[pair] + 1]
    ga, gb = C.data[C.indptr[pair]], C.data[C.indptr[pair] + 1]
    graph = sp.csr_matrix((np.ones(len(pair)), (a, b)), shape=(rows, rows))
    count, label = connected_components(graph, directed=False)
    # breadth-first propagation from each component's first row, every component at once
    p = np.zeros(rows)
    reached = np.zeros(rows, bool)
    first = np.full(count, -1)
    first[label[::-1]] = np.arange(rows)[::-1]
    p[first], reached[first] = 1.0, True
    ends = np.concatenate([a, b])
    others = np.concatenate([b, a])
    ratio = np.concatenate([-ga / gb, -gb / ga])     # p[other] = p[end] * ratio
    order = np.argsort(ends, kind="stable")
    ends, others, ratio = ends[order], others[order], ratio[order]
    start = np.searchsorted(ends, np.arange(rows + 1))
    frontier = first
    while frontier.size:
        lengths = start[frontier + 1] - start[frontier]
        edge = np.repeat(start[frontier] - np.cumsum(np.r_[0, lengths[:-1]]), lengths) + \
            np.arange(lengths.sum())
        src, dst = ends[edge], others[edge]
        new = ~reached[dst]
        dst, src, r = dst[new], src[new], ratio[edge][new]
        dst, at = np.unique(dst, return_index=True)
        p[dst] = p[src[at]] * r[at]
        reached[dst] = True
        frontier = dst
    # a component has its null vector only if every column cancels: its pairs, and no single row
    bad = np.zeros(count, bool)
    residual = np.abs(p[a] * ga + p[b] * gb)
    bad[label[a[residual > CANCEL_RTOL * (np.abs(p[a] * ga) + np.abs(p[b] * gb))]]] = True
    single = np.flatnonzero(counts == 1)
    bad[label[C.indices[C.indptr[single]]]] = True
    p[bad[label]] = 0.0
    return p, label, first


def free_flux_split(G: sp.csr_matrix, states: int) -> FreeFluxSplit | None:
    """The rows of the two updates of the free-flux limit for rows ``G`` over x, whose first
    ``states`` entries are the states and the rest the fluxes; None when a flux column appears
    in three or more rows (see the module's docstring)."""
    G = sp.csr_matrix(G, dtype=np.float64)
    n = G.shape[1]
    is_flux = np.zeros(n, bool)
    is_flux[states:] = True
    on_flux = sp.diags(is_flux.astype(float))
    on_states = sp.diags((~is_flux).astype(float))
    Gphi = (G @ on_flux).tocsr()
    Gphi.eliminate_zeros()
    carrying = np.flatnonzero(np.diff(Gphi.indptr) > 0)
    state_only = np.flatnonzero(np.diff(Gphi.indptr) == 0)
    found = (_null_weights(Gphi[carrying]) if carrying.size else
             (np.zeros(0), np.zeros(0, int), np.zeros(0, int)))
    if found is None:
        return None
    p, label, first = found
    with_null = np.unique(label[p != 0])
    # one null vector per such component: a row of H, and the component's first row is dropped
    column = np.searchsorted(with_null, label[p != 0])
    P = sp.csr_matrix((p[p != 0], (column, carrying[p != 0])), shape=(len(with_null), G.shape[0]))
    select = sp.csr_matrix((np.ones(len(state_only)), (np.arange(len(state_only)), state_only)),
                           shape=(len(state_only), G.shape[0]))
    combine = sp.vstack([select, P]).tocsr()
    H = (combine @ G @ on_states).tocsr()   # the null combinations' flux entries cancel: drop them
    H.eliminate_zeros()
    keep = np.setdiff1d(carrying, carrying[first[with_null]])
    kept = G[keep]
    fluxes = (kept @ on_flux).tocsr()
    fluxes.eliminate_zeros()
    coupling = (kept @ on_states).tocsr()
    coupling.eliminate_zeros()
    return FreeFluxSplit(H, combine, fluxes, keep, coupling, len(with_null))
