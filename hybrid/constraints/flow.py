"""Constraint rows for incompressible flow on median-dual control volumes (the cavity).

The unknowns are the vertex velocities of one output time, stacked by component,
x = (u_1 … u_N, v_1 … v_N) (index c N + k). Two kinds of rows:

* ``divergence``: zero net volume flux through every control volume,
  Σ_f s_{K,f} (ū_f · n_f) |f| = 0, with ū_f the mean of the two vertex velocities of an
  interior face and the vertex's own velocity on a boundary face (the same discrete
  divergence as :func:`hybrid.stages.solve.net_volume_flux`);
* ``dirichlet``: the wall velocities (no-slip, the lid) at the wall vertices; where two
  walls meet, the one listed later in the case owns the vertex, as in the solver.

With every wall a Dirichlet wall the divergence rows sum to the net flux of the wall data,
so one of them is implied by the others and the wall rows: :func:`flow_rows` drops the
last divergence row (checked: the dropped row still holds, to round-off, after the update).

Not yet part of a variant: the cavity has no surrogate (vector outputs) yet. Measured on
the steady Re = 100 cavity (h = 0.05): the Taylor–Hood reference is divergence-free only
weakly, so its own vertex velocities miss these rows — by up to 0.13 of max|u| × max|f| in
the control volumes at the lid's corners, 7.6e-5 in the median one — and imposing them on
a noisy copy of it raised the relative error from 0.149 to 0.168. A reference that is
divergence-free per control volume (Scott–Vogelius; an attempt on barycentric splits gave
near-singular systems here) is what these rows need.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from hybrid.constraints.rows import ConstraintRows, stack_rows
from hybrid.mesh.control_volumes import ControlVolumes

__all__ = ["divergence_rows", "wall_rows", "flow_rows"]


def divergence_rows(cv: ControlVolumes) -> ConstraintRows:
    """One row per control volume: its net outward volume flux, G x (N × N d)."""
    N, d = cv.num_cvs, cv.dim
    a, b = cv.face_cv[:, 0], cv.face_cv[:, 1]
    S = cv.face_normal * cv.face_area[:, None]
    inner = b >= 0
    rows, cols, vals = [], [], []
    for c in range(d):
        half = 0.5 * S[inner, c]
        ai, bi = a[inner], b[inner]
        # face flux ½ S·(u_a + u_b): out of a, into b
        rows += [ai, ai, bi, bi]
        cols += [c * N + ai, c * N + bi, c * N + ai, c * N + bi]
        vals += [half, half, -half, -half]
        rows.append(a[~inner])
        cols.append(c * N + a[~inner])
        vals.append(S[~inner, c])
    G = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(N, N * d))
    G.sum_duplicates()
    return ConstraintRows(G, np.zeros(N), np.full(N, "divergence", dtype="U24"))


def wall_rows(cv: ControlVolumes, walls: list[tuple[str, np.ndarray]]) -> ConstraintRows:
    """Rows fixing the velocity of every vertex on the listed walls; ``walls`` holds
    (boundary name, velocities (n, d) at ``cv.centre`` of that wall's control volumes in
    ascending order), later walls overriding earlier ones at shared vertices."""
    N, d = cv.num_cvs, cv.dim
    value: dict[int, np.ndarray] = {}
    for name, velocities in walls:
        cvs = np.unique(cv.face_cv[cv.faces_of(name), 0])
        velocities = np.asarray(velocities, float).reshape(len(cvs), d)
        for k, vel in zip(cvs, velocities):
            value[int(k)] = vel
    ks = np.array(sorted(value), dtype=np.int64)
    rows = np.arange(len(ks) * d)
    cols = np.concatenate([c * N + ks for c in range(d)])
    b = np.concatenate([[value[int(k)][c] for k in ks] for c in range(d)]) if len(ks) else np.zeros(0)
    G = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(rows), N * d))
    return ConstraintRows(G, b, np.full(len(rows), "dirichlet", dtype="U24"))


def flow_rows(cv: ControlVolumes, walls: list[tuple[str, np.ndarray]]) -> ConstraintRows:
    """Divergence rows (all but the last, which the others and the walls imply) and the walls."""
    div = divergence_rows(cv)
    keep = ConstraintRows(div.G[:-1], div.b[:-1], div.kind[:-1])
    return stack_rows([keep, wall_rows(cv, walls)])
