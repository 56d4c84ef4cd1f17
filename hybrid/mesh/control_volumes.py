"""Control volumes of a mesh: the cells of the finite-volume balance.

Two definitions, both on simplex meshes in 1-D, 2-D and 3-D:

``cells``
    The mesh cells themselves (cell-centred finite volumes, DG0). Faces are the mesh
    facets; the flux through a face is the two-point flux
    ``F = k̄ |f| (u_a - u_b) / d_ab`` with ``d_ab = (x_b - x_a)·n`` (exact in 1-D;
    consistent in 2-D/3-D on meshes whose centroid-to-centroid lines are close to
    normal to the facets — the ``dual`` definition has no such restriction).
``dual``
    Median-dual cells around the vertices (vertex-centred finite volumes / control-volume
    finite elements on P1). The dual face between vertices i and j is made of one piece
    in every cell holding the edge ij: in 2-D the segment from the edge midpoint to the
    cell centroid, in 3-D the two triangles (edge midpoint, facet centroid, cell
    centroid). The flux through a piece in cell K is ``F = -k̄_K ∇u_K · S`` with S the
    piece's area vector, so that, summed over a control volume, the scheme is exactly
    P1 finite elements with a lumped mass matrix and a cell-averaged coefficient:
    ``Σ_j S_{i→j,K} = -|K| ∇φ_i`` (tested).

Everything here is in the mesh's original numbering, computed serially with numpy (it
is O(cells) and cheap next to any solve); :meth:`ControlVolumes.assign_owners` records
which MPI rank owns each control volume and face under DOLFINx's partition, and
:meth:`ControlVolumes.local_view` gives one rank its owned and ghost entities.

Each face ``f`` joins ``face_cv[f] = (a, b)``: its unit normal points from a to b, and
its flux is counted positive from a to b. Boundary faces have ``b = -1`` and an outward
normal. The signed incidence ``D`` (control volumes × faces) has +1 at (a, f) and -1 at
(b, f), so that ``(D Φ)_K`` is the net outflow of control volume K and the balance law
reads ``|K| (u_K^n - u_K^{n-1}) + (D Φ^n)_K = S_K^n``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import scipy.sparse as sp

from hybrid.errors import CaseError
from hybrid.mesh.meshdata import MeshData

__all__ = ["ControlVolumes", "FluxPieces", "build_control_volumes", "balance_residual",
           "cell_gradients", "cell_measures"]


@dataclass
class FluxPieces:
    """Linear flux stencils with a nonlinear coefficient: the solver's flux model.

    Piece p contributes ``k̄_p Σ_j weight[p, j] u[stencil[p, j]]`` to the flux of face
    ``face[p]`` (from a to b), where ``k̄_p`` is the mean of ``k(u)`` over the control
    volumes ``k_cvs[p]`` (the cell's vertices for ``dual``, the two cells for ``cells``).
    Padding entries have weight 0 and point at control volume 0.
    """

    face: np.ndarray      # (P,) int64
    stencil: np.ndarray   # (P, ns) int64
    weight: np.ndarray    # (P, ns) float64
    k_cvs: np.ndarray     # (P, nk) int64

    def select(self, mask: np.ndarray) -> "FluxPieces":
        """The pieces ``mask`` (a boolean mask or indices over P)."""
        return FluxPieces(self.face[mask], self.stencil[mask], self.weight[mask], self.k_cvs[mask])


@dataclass
class ControlVolumes:
    """Control volumes with their faces, areas, normals and signed incidence.

    See the module docstring for the conventions. ``boundary`` faces carry the physical
    tag of the mesh boundary they lie on (``face_tag``, 0 for interior faces).
    """

    kind: str
    volume: np.ndarray            # (N,)
    centre: np.ndarray            # (N, d) representative point (vertex or cell centroid)
    face_cv: np.ndarray           # (F, 2) int64, b = -1 on the boundary
    face_area: np.ndarray         # (F,)
    face_normal: np.ndarray       # (F, d) unit normal from a to b
    face_centroid: np.ndarray     # (F, d)
    face_tag: np.ndarray          # (F,) int32, 0 for interior faces
    boundary_names: dict[str, int]
    pieces: FluxPieces            # interior flux stencils
    boundary_pieces: FluxPieces   # stencils of boundary faces (dual: the flux
                                  # estimate at Dirichlet control volumes)
    boundary_distance: np.ndarray  # (F,) cells: distance from the cell centre
                                   # to a boundary face along n; 0 elsewhere
    entity_of_cv: np.ndarray      # (N,) vertex (dual) or cell (cells) index of each control volume
    cv_of_entity: np.ndarray      # (n_vertices or n_cells,) control volume of each vertex / cell
    cv_owner: np.ndarray | None = None    # (N,) MPI rank owning each control volume
    face_owner: np.ndarray | None = None  # (F,)
    periodic_pairs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_cvs(self) -> int:
        """The number of control volumes N."""
        return self.volume.shape[0]

    @property
    def num_faces(self) -> int:
        """The number of faces F, boundary faces included."""
        return self.face_cv.shape[0]

    @property
    def dim(self) -> int:
        """The geometric dimension d."""
        return self.centre.shape[1]

    @property
    def boundary_faces(self) -> np.ndarray:
        """Indices of the boundary faces (``b = -1``), ascending."""
        return np.flatnonzero(self.face_cv[:, 1] < 0)

    def faces_of(self, name: str) -> np.ndarray:
        """Indices of the boundary faces on the named boundary."""
        return np.flatnonzero((self.face_cv[:, 1] < 0)
                              & (self.face_tag == self.boundary_names[name]))

    def incidence(self) -> sp.csr_matrix:
        """Signed control-volume × face incidence D: +1 at (a, f), -1 at (b, f)."""
        a, b = self.face_cv[:, 0], self.face_cv[:, 1]
        f = np.arange(self.num_faces)
        inner = b >= 0
        rows = np.concatenate([a, b[inner]])
        cols = np.concatenate([f, f[inner]])
        vals = np.concatenate([np.ones(self.num_faces), -np.ones(inner.sum())])
        return sp.csr_matrix((vals, (rows, cols)), shape=(self.num_cvs, self.num_faces))

    def balance_residual(self, u: np.ndarray, flux: np.ndarray,
                         source: np.ndarray | None = None) -> np.ndarray:
        """See :func:`balance_residual`."""
        return balance_residual(self.volume, self.face_cv, u, flux, source)

    def assign_owners(self, cell_owner: np.ndarray, vertex_owner: np.ndarray) -> None:
        """Record DOLFINx's partition: a control volume belongs to its cell's / vertex's owner,
        a face to the owner of its first control volume."""
        owner_of_entity = cell_owner if self.kind == "cells" else vertex_owner
        self.cv_owner = np.asarray(owner_of_entity, dtype=np.int32)[self.entity_of_cv]
        self.face_owner = self.cv_owner[self.face_cv[:, 0]]

    def local_view(self, rank: int) -> dict[str, np.ndarray]:
        """Owned control volumes, ghost control volumes (neighbours through a face owned
        elsewhere) and the faces touching owned control volumes, for one rank."""
        if self.cv_owner is None:
            raise RuntimeError("assign_owners() has not been called")
        owned = np.flatnonzero(self.cv_owner == rank)
        mine = np.zeros(self.num_cvs, bool)
        mine[owned] = True
        a, b = self.face_cv[:, 0], self.face_cv[:, 1]
        touching = mine[a] | ((b >= 0) & mine[np.maximum(b, 0)])
        faces = np.flatnonzero(touching)
        neighbours = np.unique(np.concatenate([a[faces], b[faces][b[faces] >= 0]]))
        ghosts = neighbours[~mine[neighbours]]
        return {"owned_cvs": owned, "ghost_cvs": ghosts, "faces": faces,
                "owned_faces": np.flatnonzero(self.face_owner == rank)}

    def to_dict(self) -> dict[str, np.ndarray]:
        """Arrays for export (HDF5): the definition, not the solver's stencils."""
        out = {
            "volume": self.volume, "centre": self.centre, "face_cv": self.face_cv,
            "face_area": self.face_area, "face_normal": self.face_normal,
            "face_centroid": self.face_centroid, "face_tag": self.face_tag,
            "entity_of_cv": self.entity_of_cv, "cv_of_entity": self.cv_of_entity,
        }
        if self.cv_owner is not None:
            out["cv_owner"] = self.cv_owner
            out["face_owner"] = self.face_owner
        return out


def balance_residual(volume: np.ndarray, face_cv: np.ndarray, u: np.ndarray, flux: np.ndarray,
                     source: np.ndarray | None = None) -> np.ndarray:
    """Per-control-volume balance ``|K|(u^n - u^{n-1}) + (D Φ^n)_K - S^n_K`` of every interval.

    ``u``: (T+1, N) states, ``flux``: (T, F) time-integrated face fluxes, ``source``:
    (T, N) time-integrated sources (zero when None). Returns (T, N); zero to round-off
    for a conservative solution.
    """
    a, b = face_cv[:, 0], face_cv[:, 1]
    inner = b >= 0
    div = np.zeros((flux.shape[0], len(volume)))
    np.add.at(div.T, a, flux.T)
    np.subtract.at(div.T, b[inner], flux.T[inner])
    res = volume * np.diff(u, axis=0) + div
    if source is not None:
        res -= source
    return res


# --------------------------------------------------------------------------- geometry

def cell_measures(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Length, area or volume of each simplex."""
    x = points[cells]
    J = (x[:, 1:, :] - x[:, :1, :]).transpose(0, 2, 1)  # (m, d, d) columns = edge vectors
    tdim = cells.shape[1] - 1
    return np.abs(np.linalg.det(J)) / {1: 1.0, 2: 2.0, 3: 6.0}[tdim]


def cell_gradients(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Gradients of the P1 basis functions on each simplex, shape (m, tdim+1, d)."""
    x = points[cells]
    J = (x[:, 1:, :] - x[:, :1, :]).transpose(0, 2, 1)
    tdim = cells.shape[1] - 1
    ref = np.vstack([-np.ones(tdim), np.eye(tdim)])  # reference gradients (tdim+1, tdim)
    Jinv = np.linalg.inv(J)                            # ∇φ = J^{-T} ∇̂φ
    return np.einsum("kd,mde->mke", ref, Jinv)


def _facet_table(cells: np.ndarray):
    """Unique facets of a simplex mesh with their (one or two) cells.

    Returns facets (nf, tdim) sorted vertex indices, facet_cells (nf, 2) with -1 for
    boundary facets, and the local index in each cell of the vertex opposite the facet.
    """
    m, nv = cells.shape
    local = [tuple(i for i in range(nv) if i != k) for k in range(nv)]  # facet k omits vertex k
    all_facets = np.concatenate([cells[:, list(lf)] for lf in local])   # (nv*m, tdim)
    all_facets.sort(axis=1)
    owner = np.tile(np.arange(m), nv)
    opposite = np.repeat(np.arange(nv), m)
    facets, inverse, counts = np.unique(all_facets, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    if counts.max() > 2:
        raise CaseError("mesh is not a manifold: a facet is shared by more than two cells")
    order = np.argsort(inverse, kind="stable")
    first = np.searchsorted(inverse[order], np.arange(len(facets)))
    facet_cells = -np.ones((len(facets), 2), np.int64)
    facet_opp = -np.ones((len(facets), 2), np.int64)
    facet_cells[:, 0] = owner[order[first]]
    facet_opp[:, 0] = opposite[order[first]]
    two = counts == 2
    facet_cells[two, 1] = owner[order[first[two] + 1]]
    facet_opp[two, 1] = opposite[order[first[two] + 1]]
    return facets, facet_cells, facet_opp


def _facet_area_vectors(points: np.ndarray, facets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Area and an (unoriented) unit normal of each facet."""
    d = points.shape[1]
    x = points[facets]
    if d == 1:
        return np.ones(len(facets)), np.ones((len(facets), 1))
    if d == 2:
        t = x[:, 1] - x[:, 0]
        n = np.stack([t[:, 1], -t[:, 0]], axis=1)
    else:
        n = 0.5 * np.cross(x[:, 1] - x[:, 0], x[:, 2] - x[:, 0])
    area = np.linalg.norm(n, axis=1)
    return area, n / area[:, None]


def _orient_outward(normal: np.ndarray, facet_centroid: np.ndarray,
                    inner_point: np.ndarray) -> np.ndarray:
    sign = np.sign(np.einsum("fd,fd->f", normal, facet_centroid - inner_point))
    sign[sign == 0] = 1.0
    return normal * sign[:, None]


def _tag_of_facets(mesh: MeshData, facets: np.ndarray) -> np.ndarray:
    """Physical tag of each (sorted) facet; 0 where untagged."""
    tags = np.zeros(len(facets), np.int32)
    if len(mesh.facets) == 0:
        return tags
    tagged = np.sort(mesh.facets, axis=1)
    # match rows through a structured view
    def view(a):
        a = np.ascontiguousarray(a)
        return a.view([("", a.dtype)] * a.shape[1]).ravel()
    fv, tv = view(facets), view(tagged)
    order = np.argsort(fv)
    pos = np.searchsorted(fv[order], tv)
    pos = np.minimum(pos, len(fv) - 1)
    hit = fv[order][pos] == tv
    tags[order[pos[hit]]] = mesh.facet_tags[hit]
    return tags


def _match_by_translation(src: np.ndarray, dst: np.ndarray, scale: float, what: str) -> np.ndarray:
    """Index in dst of each src point after the translation that maps src onto dst."""
    from scipy.spatial import cKDTree

    if len(src) != len(dst):
        raise CaseError(f"periodic boundaries {what} do not match: {len(src)} and {len(dst)} "
                        "entities")
    shift = dst.mean(axis=0) - src.mean(axis=0)
    dist, idx = cKDTree(dst).query(src + shift)
    if len(src) and dist.max() > 1e-8 * max(scale, 1.0):
        raise CaseError(f"periodic boundaries {what} do not match by a translation "
                        f"(largest mismatch {dist.max():.3g})")
    if len(np.unique(idx)) != len(idx):
        raise CaseError(f"periodic boundaries {what} do not match one to one")
    return idx


# --------------------------------------------------------------------------- builders

def build_control_volumes(mesh: MeshData, kind: str = "dual",
                          periodic: list[tuple[str, str]] | None = None) -> ControlVolumes:
    """Control volumes of ``mesh``: ``kind`` is ``"cells"`` or ``"dual"``.

    ``periodic`` lists pairs (primary, partner) of boundary names whose entities are
    identified by a translation; their boundary faces become interior.
    """
    if kind not in ("cells", "dual"):
        raise CaseError(f"control_volumes must be 'cells' or 'dual', found {kind!r}",
                        key="mesh.control_volumes")
    periodic = list(periodic or [])
    for pair in periodic:
        for name in pair:
            if name not in mesh.boundary_names:
                raise CaseError(f"periodic boundary {name!r} is not in the mesh; it has "
                                f"{', '.join(sorted(mesh.boundary_names))}")
    builder = _build_cells if kind == "cells" else _build_dual
    cv = builder(mesh, periodic)
    cv.periodic_pairs = periodic
    return cv


def _boundary_facet_data(mesh: MeshData):
    points, cells = mesh.points, mesh.cells
    facets, facet_cells, facet_opp = _facet_table(cells)
    bnd = np.flatnonzero(facet_cells[:, 1] < 0)
    area, normal = _facet_area_vectors(points, facets[bnd])
    centroid = points[facets[bnd]].mean(axis=1)
    cell = facet_cells[bnd, 0]
    opposite_vertex = points[cells[cell, facet_opp[bnd, 0]]]
    normal = _orient_outward(normal, centroid, opposite_vertex)
    tags = _tag_of_facets(mesh, facets[bnd])
    return facets, facet_cells, facet_opp, bnd, area, normal, centroid, tags


def _build_cells(mesh: MeshData, periodic) -> ControlVolumes:
    points, cells = mesh.points, mesh.cells
    volume = cell_measures(points, cells)
    centre = points[cells].mean(axis=1)
    (facets, facet_cells, facet_opp, bnd, b_area, b_normal, b_centroid,
     b_tags) = _boundary_facet_data(mesh)

    inner = np.flatnonzero(facet_cells[:, 1] >= 0)
    i_area, i_normal = _facet_area_vectors(points, facets[inner])
    i_centroid = points[facets[inner]].mean(axis=1)
    a, b = facet_cells[inner, 0], facet_cells[inner, 1]
    i_normal = _orient_outward(i_normal, i_centroid, centre[a])  # from a to b
    i_dist = np.einsum("fd,fd->f", centre[b] - centre[a], i_normal)

    # periodic: pair boundary facets and join their cells by a face
    keep = np.ones(len(bnd), bool)
    p_a, p_b, p_area, p_normal, p_centroid, p_dist = [], [], [], [], [], []
    scale = np.ptp(points, axis=0).max()
    for primary, partner in periodic:
        s = np.flatnonzero(b_tags == mesh.boundary_names[primary])
        t = np.flatnonzero(b_tags == mesh.boundary_names[partner])
        match = t[_match_by_translation(b_centroid[s], b_centroid[t], scale,
                                        f"{primary}/{partner}")]
        ca, cb = facet_cells[bnd[s], 0], facet_cells[bnd[match], 0]
        da = np.einsum("fd,fd->f", b_centroid[s] - centre[ca], b_normal[s])
        db = np.einsum("fd,fd->f", b_centroid[match] - centre[cb], b_normal[match])
        p_a.append(ca); p_b.append(cb); p_area.append(b_area[s]); p_normal.append(b_normal[s])
        p_centroid.append(b_centroid[s]); p_dist.append(da + db)
        keep[s] = False
        keep[match] = False
    if periodic:
        a = np.concatenate([a] + p_a); b = np.concatenate([b] + p_b)
        i_area = np.concatenate([i_area] + p_area); i_normal = np.concatenate([i_normal] + p_normal)
        i_centroid = np.concatenate([i_centroid] + p_centroid)
        i_dist = np.concatenate([i_dist] + p_dist)
    if np.any(i_dist <= 0):
        raise CaseError("cell-centred control volumes need centroid-to-centroid distances along "
                        "the face normals to be positive; this mesh is too distorted — use "
                        "control_volumes = \"dual\"")

    bk = np.flatnonzero(keep)
    n_in = len(a)
    face_cv = np.concatenate([np.stack([a, b], 1),
                              np.stack([facet_cells[bnd[bk], 0], -np.ones(len(bk), np.int64)], 1)])
    face_area = np.concatenate([i_area, b_area[bk]])
    face_normal = np.concatenate([i_normal, b_normal[bk]])
    face_centroid = np.concatenate([i_centroid, b_centroid[bk]])
    face_tag = np.concatenate([np.zeros(n_in, np.int32), b_tags[bk]])
    b_dist = np.einsum("fd,fd->f", b_centroid[bk] - centre[facet_cells[bnd[bk], 0]], b_normal[bk])
    boundary_distance = np.concatenate([np.zeros(n_in), b_dist])

    coef = i_area / i_dist
    pieces = FluxPieces(face=np.arange(n_in), stencil=np.stack([a, b], 1),
                        weight=np.stack([coef, -coef], 1), k_cvs=np.stack([a, b], 1))
    nb = len(bk)
    boundary_pieces = FluxPieces(face=np.arange(n_in, n_in + nb), stencil=face_cv[n_in:, :1].copy(),
                                 weight=np.zeros((nb, 1)), k_cvs=face_cv[n_in:, :1].copy())
    ident = np.arange(len(cells))
    return ControlVolumes("cells", volume, centre, face_cv, face_area, face_normal, face_centroid,
                          face_tag, dict(mesh.boundary_names), pieces, boundary_pieces,
                          boundary_distance, ident, ident.copy())


def _build_dual(mesh: MeshData, periodic) -> ControlVolumes:
    points, cells = mesh.points, mesh.cells
    nvert, d = points.shape
    m, nv = cells.shape
    tdim = nv - 1
    measure = cell_measures(points, cells)
    grads = cell_gradients(points, cells)          # (m, nv, d)
    centroid = points[cells].mean(axis=1)

    # control volume of each vertex (periodic partners merge into their primary vertex)
    cv_of_vertex = np.arange(nvert)
    (facets, facet_cells, facet_opp, bnd, b_area, b_normal, b_centroid,
     b_tags) = _boundary_facet_data(mesh)
    periodic_tags = set()
    scale = np.ptp(points, axis=0).max()
    for primary, partner in periodic:
        tp, tq = mesh.boundary_names[primary], mesh.boundary_names[partner]
        periodic_tags.update((tp, tq))
        vp = np.unique(facets[bnd[b_tags == tp]])
        vq = np.unique(facets[bnd[b_tags == tq]])
        match = vq[_match_by_translation(points[vp], points[vq], scale, f"{primary}/{partner}")]
        cv_of_vertex[match] = cv_of_vertex[vp]
    # chains (corners of doubly periodic boxes): follow to the root
    for _ in range(3):
        cv_of_vertex = cv_of_vertex[cv_of_vertex]
    roots, cv_of_vertex = np.unique(cv_of_vertex, return_inverse=True)
    entity_of_cv = roots
    n_cv = len(roots)

    volume = np.bincount(cv_of_vertex[cells.ravel()], weights=np.repeat(measure / nv, nv),
                         minlength=n_cv)
    centre = points[entity_of_cv]

    # interior dual faces: one per mesh edge, made of pieces in each cell holding the edge
    pairs = list(combinations(range(nv), 2))
    piece_cell = np.repeat(np.arange(m), len(pairs))
    li = np.tile([p[0] for p in pairs], m)
    lj = np.tile([p[1] for p in pairs], m)
    vi, vj = cells[piece_cell, li], cells[piece_cell, lj]
    xi, xj = points[vi], points[vj]
    mid = 0.5 * (xi + xj)
    c = centroid[piece_cell]
    if tdim == 1:
        S = np.sign(xj - xi)
        piece_centroid = mid
    elif tdim == 2:
        t = c - mid
        S = np.stack([t[:, 1], -t[:, 0]], axis=1)
        S *= np.sign(np.einsum("pd,pd->p", S, xj - xi))[:, None]
        piece_centroid = 0.5 * (mid + c)
    else:
        S = np.zeros_like(mid)
        piece_centroid = np.zeros_like(mid)
        others = [[k for k in range(4) if k not in p] for p in pairs]
        for slot in range(2):
            lk = np.tile([o[slot] for o in others], m)
            fc = (xi + xj + points[cells[piece_cell, lk]]) / 3.0
            tri = 0.5 * np.cross(fc - mid, c - mid)
            tri *= np.sign(np.einsum("pd,pd->p", tri, xj - xi))[:, None]
            S += tri
            piece_centroid += 0.5 * (mid + fc + c) / 3.0
    # weights of the stencil: flux i->j = -k̄ ∇u·S = k̄ Σ_v (-S·∇φ_v) u_v
    weight = -np.einsum("pd,pvd->pv", S, grads[piece_cell])
    stencil_cv = cv_of_vertex[cells[piece_cell]]

    # one face per pair of control volumes joined by an edge
    ci, cj = cv_of_vertex[vi], cv_of_vertex[vj]
    flip = ci > cj
    lo, hi = np.where(flip, cj, ci), np.where(flip, ci, cj)
    S = np.where(flip[:, None], -S, S)
    weight = np.where(flip[:, None], -weight, weight)
    if np.any(lo == hi):
        raise CaseError("periodic identification joins the two ends of a mesh edge; the mesh is "
                        "too coarse")
    edge_key = np.stack([lo, hi], 1)
    faces, piece_face = np.unique(edge_key, axis=0, return_inverse=True)
    piece_face = piece_face.ravel()
    nf_in = len(faces)
    Ssum = np.zeros((nf_in, d))
    np.add.at(Ssum, piece_face, S)
    Snorm = np.linalg.norm(S, axis=1)
    # area = |Σ S|: the face's area vector, so that Σ_f s n_f |f| = 0 around every
    # control volume and the flux of a uniform field through the face is exact
    area_in = np.linalg.norm(Ssum, axis=1)
    normal_in = Ssum / area_in[:, None]
    centroid_in = np.zeros((nf_in, d))
    np.add.at(centroid_in, piece_face, piece_centroid * Snorm[:, None])
    centroid_in /= np.bincount(piece_face, weights=Snorm, minlength=nf_in)[:, None]

    # boundary faces: one piece per (boundary facet, vertex of the facet), except on periodic
    # boundaries
    keep = ~np.isin(b_tags, list(periodic_tags))
    kb = np.flatnonzero(keep)
    nfv = facets.shape[1]
    bf = np.repeat(kb, nfv)                              # index into bnd arrays
    bvert = facets[bnd[bf], np.tile(np.arange(nfv), len(kb))]
    b_cv = cv_of_vertex[bvert]
    piece_area = b_area[bf] / nfv
    piece_normal = b_normal[bf]
    piece_cent = 0.5 * (points[bvert] + b_centroid[bf]) if tdim > 1 else points[bvert]
    bcell = facet_cells[bnd[bf], 0]
    b_weight = -np.einsum("pd,pvd->pv", piece_normal * piece_area[:, None], grads[bcell])
    nb = len(bf)

    face_cv = np.concatenate([faces, np.stack([b_cv, -np.ones(nb, np.int64)], 1)])
    face_area = np.concatenate([area_in, piece_area])
    face_normal = np.concatenate([normal_in, piece_normal])
    face_centroid = np.concatenate([centroid_in, piece_cent])
    face_tag = np.concatenate([np.zeros(nf_in, np.int32), b_tags[bf]])

    pieces = FluxPieces(face=piece_face, stencil=stencil_cv, weight=weight, k_cvs=stencil_cv.copy())
    bstencil = cv_of_vertex[cells[bcell]]
    boundary_pieces = FluxPieces(face=np.arange(nf_in, nf_in + nb), stencil=bstencil,
                                 weight=b_weight, k_cvs=bstencil.copy())
    return ControlVolumes("dual", volume, centre, face_cv, face_area, face_normal, face_centroid,
                          face_tag, dict(mesh.boundary_names), pieces, boundary_pieces,
                          np.zeros(len(face_cv)), entity_of_cv, cv_of_vertex)
