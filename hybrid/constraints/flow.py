"""Constraint rows for incompressible flow on median-dual control volumes (the cavity).

The unknowns of one output time are the vertex velocities, stacked by component, and the
volume flux through every dual face: x = (u_1 … u_N, v_1 … v_N, Φ_1 … Φ_F) (velocity
component c of control volume k at c N + k, face f at d N + f). Rows:

* ``divergence``: zero net volume flux out of every control volume, Σ_f s_{K,f} Φ_f = 0 —
  what the Scott–Vogelius reference satisfies to round-off (its velocity is
  divergence-free pointwise and the solver records the faces' exact fluxes);
* ``dirichlet``: the wall velocities (no-slip, the lid) at the wall vertices; where two
  walls meet, the one listed later in the case owns the vertex, as in the solver;
* ``boundary-flux``: the volume flux through each boundary face, known from the wall data.

With every boundary face's flux known, the divergence rows sum to the net flux of the data,
so one of them is implied by the others: :func:`flow_rows` drops the last divergence row
(tests check that it still holds after the update).

:func:`vertex_divergence_rows` is the same balance written on the vertex velocities alone
(face flux ≈ ½ S·(u_a + u_b)). The reference's own velocities miss it by O(h²) — on the
steady Re = 100 cavity at h = 0.05 up to 0.13 of max|u| × max|f| in the control volumes at
the lid's corners — so imposing it moves predictions away from the truth there; the flux
rows above are the ones to impose.

The cavity's variants (:class:`hybrid.constraints.problems.FlowRows`) impose these rows on the
surrogate's prediction of each output time.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from hybrid.constraints.rows import ConstraintRows, stack_rows
from hybrid.mesh.control_volumes import ControlVolumes
from hybrid.solvers.boundaries import dirichlet_walls

__all__ = ["flux_divergence_rows", "vertex_divergence_rows", "wall_rows", "boundary_flux_rows",
           "flow_rows", "flow_size", "wall_data", "flow_rhs"]


def flow_size(cv: ControlVolumes) -> int:
    """Length of one time's unknown vector: N d velocity components and F face fluxes."""
    return cv.num_cvs * cv.dim + cv.num_faces


def flux_divergence_rows(cv: ControlVolumes) -> ConstraintRows:
    """One row per control volume: Σ_f s_{K,f} Φ_f = 0 (signed incidence on the face fluxes)."""
    N, off = cv.num_cvs, cv.num_cvs * cv.dim
    D = cv.incidence().tocoo()
    G = sp.csr_matrix((D.data, (D.row, off + D.col)), shape=(N, flow_size(cv)))
    return ConstraintRows(G, np.zeros(N), np.full(N, "divergence", dtype="U24"))


def vertex_divergence_rows(cv: ControlVolumes) -> ConstraintRows:
    """One row per control volume: its net volume flux from the vertex velocities,
    Σ_f s ½ S_f·(u_a + u_b) (boundary faces: S_f·u_a); only the velocity columns."""
    N, d = cv.num_cvs, cv.dim
    a, b = cv.face_cv[:, 0], cv.face_cv[:, 1]
    S = cv.face_normal * cv.face_area[:, None]
    inner = b >= 0
    rows, cols, vals = [], [], []
    for c in range(d):
        half = 0.5 * S[inner, c]
        ai, bi = a[inner], b[inner]
        rows += [ai, ai, bi, bi, a[~inner]]
        cols += [c * N + ai, c * N + bi, c * N + ai, c * N + bi, c * N + a[~inner]]
        vals += [half, half, -half, -half, S[~inner, c]]
    G = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(N, flow_size(cv)))
    G.sum_duplicates()
    return ConstraintRows(G, np.zeros(N), np.full(N, "divergence", dtype="U24"))


def wall_rows(cv: ControlVolumes, walls: list[tuple[str, np.ndarray]]) -> ConstraintRows:
    """Rows fixing the velocity of every vertex on the listed walls; ``walls`` holds
    (boundary name, velocities (n, d) of that wall's control volumes in ascending order),
    later walls overriding earlier ones at shared vertices."""
    N, d = cv.num_cvs, cv.dim
    ks, b = _wall_values(cv, walls)
    rows = np.arange(len(ks) * d)
    cols = np.concatenate([c * N + ks for c in range(d)])
    G = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(rows), flow_size(cv)))
    return ConstraintRows(G, b, np.full(len(rows), "dirichlet", dtype="U24"))


def _wall_values(cv: ControlVolumes,
                 walls: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(the wall control volumes, ascending; their velocities component by component), later
    walls overriding earlier ones at shared vertices: the columns and b of :func:`wall_rows`."""
    d = cv.dim
    value, on_wall = np.zeros((cv.num_cvs, d)), np.zeros(cv.num_cvs, bool)
    for name, velocities in walls:
        cvs = np.unique(cv.face_cv[cv.faces_of(name), 0])
        value[cvs] = np.asarray(velocities, float).reshape(len(cvs), d)
        on_wall[cvs] = True
    ks = np.flatnonzero(on_wall)
    return ks, value[ks].T.ravel()


def boundary_flux_rows(cv: ControlVolumes, flux: np.ndarray) -> ConstraintRows:
    """Φ_f = ``flux[f]`` on every boundary face (``flux``: (F,), read at boundary faces)."""
    faces = cv.boundary_faces
    off = cv.num_cvs * cv.dim
    G = sp.csr_matrix((np.ones(len(faces)), (np.arange(len(faces)), off + faces)),
                      shape=(len(faces), flow_size(cv)))
    return ConstraintRows(G, np.asarray(flux, float)[faces],
                          np.full(len(faces), "boundary-flux", dtype="U24"))


def flow_rows(cv: ControlVolumes, walls: list[tuple[str, np.ndarray]],
              boundary_flux: np.ndarray) -> ConstraintRows:
    """Divergence rows on the fluxes (all but the last, which the others and the boundary
    fluxes imply), the wall velocities and the boundary fluxes."""
    div = flux_divergence_rows(cv)
    keep = ConstraintRows(div.G[:-1], div.b[:-1], div.kind[:-1])
    return stack_rows([keep, wall_rows(cv, walls), boundary_flux_rows(cv, boundary_flux)])


def flow_rhs(cv: ControlVolumes, walls: list[tuple[str, np.ndarray]],
             boundary_flux: np.ndarray) -> np.ndarray:
    """The right-hand side b of :func:`flow_rows` alone (its G is the same for every scenario
    and output time)."""
    return np.concatenate([np.zeros(cv.num_cvs - 1), _wall_values(cv, walls)[1],
                           np.asarray(boundary_flux, float)[cv.boundary_faces]])


def wall_data(case, cv: ControlVolumes, times: np.ndarray, params: dict) -> tuple[list, np.ndarray]:
    """The walls' data at t_1..t_T: for each time the list of (wall, velocities of its control
    volumes) in the case's order (later walls own shared vertices, as in the solver), and the
    boundary faces' volume fluxes (T, F): the wall velocity at the face centroid · n |f|, the
    solver's own boundary fluxes."""
    bfaces = cv.boundary_faces
    walls_t, bflux = [], np.zeros((len(times) - 1, cv.num_faces))
    for n, t in enumerate(times[1:]):
        walls = dirichlet_walls(case, cv, t, params)
        for name, _, _ in walls:
            faces = bfaces[cv.face_tag[bfaces] == cv.boundary_names[name]]
            S = cv.face_normal[faces] * cv.face_area[faces, None]
            g = case.boundary_condition(name).dirichlet_values(cv.face_centroid[faces], t, params).T
            bflux[n, faces] = np.einsum("fd,fd->f", g, S)
        walls_t.append([(name, values) for name, _, values in walls])
    return walls_t, bflux
