"""What a variant's rows say about the states alone, for predictions without face fluxes.

A model that predicts states but no fluxes (``hybrid constrain`` with only ``u_mean`` and
``u_var``) leaves the fluxes free. A row that touches no flux (a Dirichlet value, a normal
derivative through the states) holds as it is. A row that does touch fluxes constrains the
states only through combinations in which every unknown flux cancels: per-cell balances of
control volumes joined by interior faces sum to the balance of their union, where each
interior face's flux enters once with + and once with −; a boundary face's flux drops out
too when a known-flux row (Neumann data) gives its value. So the per-cell rows of one output
interval reduce to one global balance per connected piece of the mesh, and only when every
boundary face of that piece has a known flux; a piece with a Dirichlet wall keeps no row
(its inflow is unknown). Per-cell conservation as such is not a statement about states.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from hybrid.constraints.rows import ConstraintRows, StateLayout

__all__ = ["states_only"]

CANCELLATION = 1e-12   # a summed row's flux coefficients below this (relative) count as cancelled


def states_only(rows: ConstraintRows, layout: StateLayout) -> ConstraintRows:
    """The rows' consequences for the states u¹..uᵀ alone (columns 0..T·N−1), with the fluxes
    unknown: see the module's docstring. The result may have no rows."""
    G = sp.csr_matrix(rows.G)
    n_u = layout.T * layout.N
    Gu, Gf = G[:, :n_u].tocsr(), G[:, n_u:].tocsr()
    flux_count, state_count = np.diff(Gf.indptr), np.diff(Gu.indptr)
    plain = flux_count == 0
    known = (flux_count == 1) & (state_count == 0)            # Φ_f = value: Neumann data
    b = rows.b.astype(np.float64).copy()
    known_value = np.zeros(Gf.shape[1])
    is_known = np.zeros(Gf.shape[1], dtype=bool)
    for r in np.flatnonzero(known):
        col, coef = Gf.indices[Gf.indptr[r]], Gf.data[Gf.indptr[r]]
        known_value[col], is_known[col] = b[r] / coef, True
    mixed = np.flatnonzero(~plain & ~known)
    out_G, out_b, out_kind = [Gu[plain]], [b[plain]], [rows.kind[plain]]
    if len(mixed):
        Gm = Gf[mixed].tocsc()
        b_m = b[mixed] - Gm @ known_value                # known fluxes moved to the right-hand side
        unknown = Gm[:, np.flatnonzero(~is_known)].tocsr()
        links = (abs(unknown) > 0).astype(np.int8)
        graph = sp.bmat([[None, links], [links.T, None]]).tocsr()
        _, label = connected_components(graph, directed=False)
        component = label[:len(mixed)]
        summing = sp.csr_matrix((np.ones(len(mixed)), (component, np.arange(len(mixed)))),
                                shape=(component.max() + 1, len(mixed)))
        left = summing @ unknown
        scale = np.maximum(summing @ abs(unknown).max(axis=1).toarray().ravel(), 1e-300)
        residual = (abs(left).max(axis=1).toarray().ravel() if left.shape[1]
                    else np.zeros(left.shape[0]))
        keep = np.flatnonzero(residual <= CANCELLATION * scale)
        out_G.append((summing @ Gu[mixed])[keep])
        out_b.append((summing @ b_m)[keep])
        out_kind.append(np.full(len(keep), "conservation-sum", dtype="U24"))
    G_states = sp.vstack(out_G).tocsr()
    G_states.eliminate_zeros()
    nonempty = np.diff(G_states.indptr) > 0
    return ConstraintRows(G_states[nonempty], np.concatenate(out_b)[nonempty],
                          np.concatenate(out_kind).astype("U24")[nonempty])
