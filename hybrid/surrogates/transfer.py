r"""Sparse transfer operators between control-volume values and a regular grid (for an FNO).

A Fourier neural operator works on a regular grid; the solver's values live on control
volumes of an unstructured simplex mesh. For one mesh the two linear maps are
precomputed once as ``scipy.sparse`` CSR matrices (float64):

``G`` (n_grid × N), mesh → grid, :func:`mesh_to_grid`
    ``u_grid = G u_cv``. Both control-volume kinds are first turned into P1 nodal values
    at the mesh vertices, ``u_vertex = V u_cv``:

    * ``dual``: the control-volume value *is* the nodal value, ``V[v, cv_of_entity[v]] = 1``
      (periodic partners share one column).
    * ``cells``: the value at vertex v is the constant term ``a`` of the least-squares
      linear fit ``u_K ≈ a + b·(c_K - x_v)`` over the cell centroids ``c_K`` of the cells
      around v (the patch grows to the cells around v's neighbours where the first ring
      has fewer than d + 2 cells or is degenerate — mesh corners). The fit reproduces
      linear fields exactly, hence ``u_vertex`` is exact for linear and O(h²) for smooth
      fields (a volume-weighted average would be only O(h) on unstructured meshes).

    A grid node x inside a simplex K then gets the P1 value ``Σ_v λ_v(x) u_v`` with the
    barycentric coordinates ``λ(x)`` of x in K. Nodes are located by rasterising every
    simplex over the grid nodes in its bounding box and testing ``λ ≥ -1e-10`` (exact,
    vectorised, O(Σ_K #nodes in bbox(K))); a node on a shared facet takes the cell where
    ``min λ`` is largest.

    Grid nodes in no cell (the L-shape's notch, the corners around a disk, the padding)
    are *outside* (``inside`` is False) and get a continuous extension, again rows of
    ``G``: a localised Shepard blend of the linear polynomials of nearby boundary cells,
    each anchored at its boundary-facet centroid ``a_i``:

    .. math::

        u(x) = \frac{\sum_i w_i(x)\, p_i\big(a_i + ψ(r_i)(x - a_i)\big)}{\sum_i w_i(x)},
        \quad w_i = \Big(1 - \frac{r_i - r_1}{W}\Big)_+^2,
        \quad W = \min\big(\tfrac12 r_1 + s,\; R - r_1\big),
        \quad ψ(r) = \frac{ℓ \tanh(r/ℓ)}{r},

    with ``r_i = |x - a_i|`` over the K nearest anchors (K = 2, 8, 24 in 1-D, 2-D, 3-D),
    ``r_1`` the nearest and ``R`` the (K+1)-th nearest distance, ``p_i`` the P1
    polynomial of boundary cell i (evaluated by extrapolated barycentric coordinates) and
    ``ℓ`` the extension length (default 0.1 × the diagonal of the mesh's bounding box).
    It is a compactly supported variant of Shepard's inverse-distance weighting (D.
    Shepard, ACM national conference 1968; R. Franke, Math. Comp. 38, 1982): every
    weight is a continuous function of x, and an anchor enters or leaves the K nearest
    with weight zero, so the extension is continuous. The support W grows with the
    distance r_1, so where two boundary pieces are equally far (the diagonal of the
    L-shape's notch) the blend is as wide as it is far from the boundary, and the
    discrete gradient stays of the size of the field's. To keep K anchors enough at any
    distance, anchors come in levels: level l keeps one boundary facet per voxel of
    size ``s = h_b 2^l`` (h_b the mean diameter of the boundary cells), and a node blends
    the levels ``floor(t)`` and ``floor(t) + 1`` linearly in ``t = log2(max(r_1, h_b)/h_b)``.
    Next to the boundary (level 0) the Taylor term makes the extension second-order
    accurate (error O((r + h)²); it meets the P1 trace to O(h²)), which keeps the
    mesh → grid → mesh round trip O(h²) up to the boundary; the ``tanh`` pull-back,
    ``|ψ(r) r| < ℓ``, bounds the extrapolation far away, so the FNO never sees values
    beyond about ``|∇u| ℓ`` from the boundary data. Linear fields are reproduced there up
    to O(r³/ℓ²).

``I`` (n_points × n_grid), grid → points, :func:`grid_to_mesh`
    Multilinear (linear, bilinear, trilinear) interpolation of the grid nodes' values at
    arbitrary points, used at control-volume centres and face centroids. Exact for
    linear fields; points outside the grid's box are clamped onto it.

Rows of both matrices sum to 1 to round-off, so constants pass exactly in both
directions, at outside nodes included.

:class:`Transfer` bundles the operators of one case and applies them to numpy arrays or
torch tensors with any leading (batch, channel) dimensions; for torch it keeps one
sparse COO copy per (device, dtype), so the products run on the tensor's device and
differentiate with respect to the values.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from hybrid.mesh.control_volumes import ControlVolumes, _facet_table
from hybrid.mesh.meshdata import MeshData

__all__ = ["GridSpec", "Transfer", "mesh_to_grid", "grid_to_mesh"]

_BARY_TOL = 1e-10             # a node with every barycentric coordinate ≥ -tol is in the cell
_PAIRS_PER_CHUNK = 1 << 20    # (cell, node) pairs tested at once: bounds the memory of the location
_SHEPARD_K = {1: 2, 2: 8, 3: 24}  # anchors per level and node


# --------------------------------------------------------------------------- the grid

@dataclass(frozen=True)
class GridSpec:
    """A regular tensor-product grid of nodes from ``lo`` to ``hi`` (both ends included).

    ``shape[a]`` nodes along axis a (≥ 2), spacing ``(hi - lo) / (shape - 1)``. Grid
    values are arrays of shape ``(..., *shape)``; the flat node index is C order, the
    same as :attr:`points`.
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        lo = tuple(float(v) for v in np.atleast_1d(np.asarray(self.lo, dtype=np.float64)))
        hi = tuple(float(v) for v in np.atleast_1d(np.asarray(self.hi, dtype=np.float64)))
        shape = np.atleast_1d(np.asarray(self.shape))
        if shape.size == 1 and len(lo) > 1:
            shape = np.repeat(shape, len(lo))
        shape = tuple(int(n) for n in shape)
        if not (len(lo) == len(hi) == len(shape)) or not 1 <= len(lo) <= 3:
            raise ValueError(f"grid lo, hi and shape need one entry per dimension (1-3), found "
                             f"{lo}, {hi}, {shape}")
        if min(shape) < 2:
            raise ValueError(f"a grid needs at least 2 nodes per axis, found shape {shape}")
        if not all(np.isfinite(lo + hi)) or any(b <= a for a, b in zip(lo, hi)):
            raise ValueError(f"grid box needs finite lo < hi on every axis, found lo={lo}, hi={hi}")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "shape", shape)

    @classmethod
    def covering(cls, points: np.ndarray, shape, pad: float = 0.0) -> "GridSpec":
        """The grid over the bounding box of ``points`` (n, d), widened by ``pad`` × its
        extent on every side. ``shape`` is one int (all axes) or one per axis."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim == 1:
            points = points[:, None]
        if pad < 0:
            raise ValueError(f"pad is a non-negative fraction of the box, found {pad}")
        lo, hi = points.min(axis=0), points.max(axis=0)
        margin = pad * (hi - lo)
        return cls(tuple(lo - margin), tuple(hi + margin), shape)

    @property
    def dim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of grid nodes."""
        return int(np.prod(self.shape))

    @property
    def spacing(self) -> np.ndarray:
        """Node spacing along each axis (d,)."""
        return (np.asarray(self.hi) - np.asarray(self.lo)) / (np.asarray(self.shape) - 1)

    @property
    def axes(self) -> list[np.ndarray]:
        """Node coordinates along each axis."""
        return [np.linspace(a, b, n) for a, b, n in zip(self.lo, self.hi, self.shape)]

    @cached_property
    def points(self) -> np.ndarray:
        """Node coordinates (n_grid, d), C order (read-only)."""
        mesh = np.meshgrid(*self.axes, indexing="ij")
        pts = np.stack([m.ravel() for m in mesh], axis=1)
        pts.flags.writeable = False
        return pts


# --------------------------------------------------------------------------- grid -> points

def grid_to_mesh(grid: GridSpec, points: np.ndarray) -> sp.csr_matrix:
    """Multilinear interpolation from the grid nodes to ``points`` (n, d): CSR (n, n_grid).

    Each row holds the 2^d weights ``Π_a (1 - t_a or t_a)`` of the corners of the grid
    cell containing the point (t the local coordinates in [0, 1]); points outside the
    grid's box are clamped onto it. Rows sum to 1; linear fields are exact.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 1:
        points = points[:, None]
    d = grid.dim
    if points.shape[1] != d:
        raise ValueError(f"points are {points.shape[1]}-D, the grid is {d}-D")
    n = len(points)
    shape = np.asarray(grid.shape)
    t = (points - np.asarray(grid.lo)) / grid.spacing
    base = np.clip(np.floor(t).astype(np.int64), 0, shape - 2)
    frac = np.clip(t - base, 0.0, 1.0)
    corners = np.array(np.meshgrid(*[[0, 1]] * d, indexing="ij")).reshape(d, -1).T  # (2^d, d)
    idx = base[:, None, :] + corners[None]                                             # (n, 2^d, d)
    w = np.where(corners[None] == 1, frac[:, None, :], 1.0 - frac[:, None, :]).prod(axis=2)
    cols = np.ravel_multi_index(tuple(idx[..., a] for a in range(d)), grid.shape)
    nc = corners.shape[0]
    return sp.csr_matrix((w.ravel(), cols.ravel(), np.arange(0, n * nc + 1, nc)),
                         shape=(n, grid.size))


# --------------------------------------------------------------------------- mesh -> grid

def mesh_to_grid(mesh: MeshData, cv: ControlVolumes, grid: GridSpec,
                 extension_length: float | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """Interpolation of control-volume values onto the grid nodes.

    Returns ``(G, inside)``: ``G`` CSR (n_grid, N) with ``u_grid = G @ u_cv``, and
    ``inside`` (n_grid,) bool, True where the node lies in a mesh cell. Outside nodes get
    the continuous extension of the module docstring (``extension_length`` = ℓ, default
    0.1 × the diagonal of the mesh's bounding box).
    """
    points, cells = mesh.points, mesh.cells
    d = points.shape[1]
    if grid.dim != d or mesh.tdim != d:
        raise ValueError(f"mesh is {mesh.tdim}-D in {d}-D space, grid is {grid.dim}-D; "
                         "transfer needs a full-dimensional mesh of the grid's dimension")
    x0 = points[cells[:, 0]]
    # λ_1..d = Tinv (x - x0)
    Tinv = np.linalg.inv((points[cells[:, 1:]] - x0[:, None, :]).transpose(0, 2, 1))

    cell, lam = _locate_grid_nodes(points, cells, x0, Tinv, grid)
    inside = cell >= 0
    nodes_in = np.flatnonzero(inside)
    lam_in = np.clip(lam[nodes_in], 0.0, None)  # nodes within the tolerance outside: onto the cell
    lam_in /= lam_in.sum(axis=1, keepdims=True)
    rows = [np.repeat(nodes_in, d + 1)]
    cols = [cells[cell[nodes_in]].ravel()]
    vals = [lam_in.ravel()]

    nodes_out = np.flatnonzero(~inside)
    if len(nodes_out):
        if extension_length is None:
            extension_length = 0.1 * float(np.linalg.norm(np.ptp(points, axis=0)))
        r, c, v = _extension(points, cells, x0, Tinv, grid.points[nodes_out], extension_length)
        rows.append(nodes_out[r])
        cols.append(c)
        vals.append(v)
    P = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(grid.size, mesh.num_vertices))
    G = (P @ _vertex_values(mesh, cv)).tocsr()
    G.sum_duplicates()
    return G, inside


def _barycentric(x: np.ndarray, cell: np.ndarray, x0: np.ndarray, Tinv: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (..., d+1) of points x (..., d) in cells ``cell`` (...)."""
    r = x - x0[cell]
    d = x.shape[-1]
    lam = np.empty(x.shape[:-1] + (d + 1,))
    for j in range(d):  # component loops keep the memory at one array of pairs
        lam[..., j + 1] = sum(Tinv[cell, j, k] * r[..., k] for k in range(d))
    lam[..., 0] = 1.0 - lam[..., 1:].sum(axis=-1)
    return lam


def _locate_grid_nodes(points, cells, x0, Tinv, grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """Cell holding each grid node (-1 if none) and its barycentric coordinates there.

    Every cell is rasterised over the grid nodes of its bounding box; of the cells that
    hold a node (λ ≥ -tol) the one with the largest min λ wins.
    """
    d = points.shape[1]
    shape = np.asarray(grid.shape)
    lo, h = np.asarray(grid.lo), grid.spacing
    xs = points[cells]
    first = np.clip(np.ceil((xs.min(axis=1) - lo) / h - 1e-6).astype(np.int64), 0, shape)
    last = np.clip(np.floor((xs.max(axis=1) - lo) / h + 1e-6).astype(np.int64), -1, shape - 1)
    extent = np.maximum(last - first + 1, 0)
    count = extent.prod(axis=1)
    axes = grid.axes

    best_score = np.full(grid.size, -np.inf)
    best_cell = -np.ones(grid.size, np.int64)
    best_lam = np.zeros((grid.size, d + 1))
    ends = np.cumsum(count)
    splits = np.searchsorted(ends, np.arange(_PAIRS_PER_CHUNK, ends[-1] if len(ends) else 0,
                                             _PAIRS_PER_CHUNK))
    for chunk in np.split(np.arange(len(cells)), np.unique(splits)):
        cnt = count[chunk]
        total = int(cnt.sum())
        if total == 0:
            continue
        pair_cell = np.repeat(chunk, cnt)
        local = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        idx = np.empty((total, d), np.int64)
        for a in reversed(range(d)):  # mixed-radix digits of the node within the cell's box
            e = extent[pair_cell, a]
            idx[:, a] = first[pair_cell, a] + local % e
            local //= e
        x = np.stack([axes[a][idx[:, a]] for a in range(d)], axis=1)
        lam = _barycentric(x, pair_cell, x0, Tinv)
        score = lam.min(axis=1)
        hit = np.flatnonzero(score >= -_BARY_TOL)
        node = np.ravel_multi_index(tuple(idx[hit, a] for a in range(d)), grid.shape)
        order = np.lexsort((-score[hit], node))       # per node, the best score first
        node, pick = node[order], hit[order]
        first_of_node = np.r_[True, node[1:] != node[:-1]]
        node, pick = node[first_of_node], pick[first_of_node]
        better = score[pick] > best_score[node]
        node, pick = node[better], pick[better]
        best_score[node] = score[pick]
        best_cell[node] = pair_cell[pick]
        best_lam[node] = lam[pick]
    return best_cell, best_lam


def _extension(points, cells, x0, Tinv, x: np.ndarray, length: float):
    """Rows (local to ``x``), vertex columns and weights of the outside extension.

    Level 0 anchors every boundary facet; level l keeps one facet per voxel of size
    ``h_b 2^l`` (h_b: mean diameter of the boundary cells). A node at distance r from the
    nearest anchor blends levels floor(t) and floor(t) + 1, t = log2(max(r, h_b) / h_b),
    linearly in t, so each row holds a bounded number of anchors while the blending width
    grows with r.
    """
    facets, facet_cells, _ = _facet_table(cells)
    bnd = np.flatnonzero(facet_cells[:, 1] < 0)
    anchor = points[facets[bnd]].mean(axis=1)
    bcell = facet_cells[bnd, 0]
    d = points.shape[1]
    h_b = 2.0 * float(np.linalg.norm(points[cells[bcell]]
                                     - points[cells[bcell]].mean(axis=1, keepdims=True),
                                     axis=2).max(axis=1).mean())
    K = _SHEPARD_K[d]
    levels = [np.arange(len(bnd))]
    while len(levels[-1]) > K and len(levels) < 40:
        voxel = np.floor((anchor - anchor.min(axis=0))
                         / (h_b * 2.0 ** len(levels))).astype(np.int64)
        _, first = np.unique(voxel, axis=0, return_index=True)
        levels.append(np.sort(first))
    top = len(levels) - 1
    r_near = cKDTree(anchor).query(x)[0]
    t = np.clip(np.log2(np.maximum(r_near, h_b) / h_b), 0.0, top)
    base = np.minimum(np.floor(t).astype(np.int64), top)
    frac = t - base

    rows, cols, vals = [], [], []
    for level, members in enumerate(levels):
        for nodes, share in ((np.flatnonzero(base == level), 1.0 - frac),
                             (np.flatnonzero((base + 1 == level) & (frac > 0)), frac)):
            if len(nodes):
                r, c, v = _shepard_rows(x[nodes], anchor[members], bcell[members], cells, x0, Tinv,
                                        h_b * 2.0 ** level, length)
                rows.append(nodes[r]); cols.append(c); vals.append(v * share[nodes][r])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def _shepard_rows(x, anchor, bcell, cells, x0, Tinv, spacing: float, length: float):
    """One level of the extension: ``Σ_i w_i p_i(a_i + ψ(r_i)(x - a_i)) / Σ_i w_i`` with
    ``w_i = (1 - (r_i - r_1) / W)_+^2``, ``W = min(τ r_1 + spacing, R - r_1)`` (τ = 1/2,
    r_1 the nearest and R the (K+1)-th nearest anchor distance). W grows with r_1, so the
    blend across a medial axis (the L-shape's notch diagonal) is as wide as it is far
    from the boundary; the cap R - r_1 makes an anchor leave the K nearest at weight 0."""
    d = x.shape[1]
    k = min(_SHEPARD_K[d], len(anchor))
    if len(anchor) > k:
        dist, near = cKDTree(anchor).query(x, k=k + 1)
        width = np.minimum(0.5 * dist[:, 0] + spacing, dist[:, k] - dist[:, 0])
        dist, near = dist[:, :k], near[:, :k]
    else:
        dist, near = cKDTree(anchor).query(x, k=list(range(1, k + 1)))
        width = 0.5 * dist[:, 0] + spacing
    gap = dist - dist[:, :1]
    width = width[:, None]
    s = np.where(gap > 0, gap / np.where(width > 0, width, 1.0), 0.0)
    s[(width <= 0) & (gap > 0)] = np.inf
    w = np.clip(1.0 - s, 0.0, None) ** 2            # the nearest anchor has weight 1
    w /= w.sum(axis=1, keepdims=True)
    # the anchor cell's P1 polynomial at the pulled-back point a + ψ(r)(x - a), |ψ(r) r| < ℓ
    a = anchor[near]
    r = np.maximum(dist, 1e-300)
    psi = np.where(dist > 0, length * np.tanh(r / length) / r, 1.0)
    y = a + psi[..., None] * (x[:, None, :] - a)
    cell = bcell[near]
    lam = _barycentric(y, cell, x0, Tinv)            # (n, k, d+1), extrapolated
    rows = np.repeat(np.arange(len(x)), k * (d + 1))
    return rows, cells[cell].ravel(), (w[..., None] * lam).ravel()


# --------------------------------------------------------------------- control volumes -> vertices

def _vertex_values(mesh: MeshData, cv: ControlVolumes) -> sp.csr_matrix:
    """V (n_vertices, N): the P1 nodal values defined by the control-volume values."""
    nv, N = mesh.num_vertices, cv.num_cvs
    if cv.kind == "dual":
        return sp.csr_matrix((np.ones(nv), (np.arange(nv), cv.cv_of_entity)), shape=(nv, N))
    m = mesh.num_cells
    cell_to_cv = sp.csr_matrix((np.ones(m), (np.arange(m), cv.cv_of_entity)), shape=(m, N))
    return (_cells_to_vertices(mesh.points, mesh.cells) @ cell_to_cv).tocsr()


def _cells_to_vertices(points: np.ndarray, cells: np.ndarray) -> sp.csr_matrix:
    """R (n_vertices, n_cells): least-squares linear reconstruction of vertex values from
    cell-centroid values (exact for linear fields; see the module docstring)."""
    nv, d = points.shape
    m = len(cells)
    centroid = points[cells].mean(axis=1)
    star = sp.csr_matrix((np.ones(cells.size), (cells.ravel(), np.repeat(np.arange(m), d + 1))),
                         shape=(nv, m))
    star.sum_duplicates()
    star.data[:] = 1.0
    rows, cols, vals = [], [], []
    pending, patch = np.arange(nv), star
    for ring in range(3):
        # d + 2 cells on the first ring, so that the fit is over-determined; d + 1 beyond
        r, c, v, ok = _linear_fit_rows(points, centroid, pending, patch,
                                       d + 2 if ring == 0 else d + 1)
        rows.append(r); cols.append(c); vals.append(v)
        pending, patch = pending[~ok], patch[~ok]
        if not len(pending):
            break
        # too few or degenerate centroids (mesh corners, 1-D ends): the next ring of cells
        patch = (patch @ star.T @ star).tocsr()
        patch.data[:] = 1.0
    if len(pending):  # cannot happen on a valid simplex mesh; the mean keeps constants exact
        sub = star[pending].tocoo()
        counts = np.diff(star[pending].indptr)
        rows.append(pending[sub.row]); cols.append(sub.col); vals.append(1.0 / counts[sub.row])
    rows, cols, vals = (np.concatenate(z) for z in (rows, cols, vals))
    return sp.csr_matrix((vals, (rows, cols)), shape=(nv, m))


def _linear_fit_rows(points, centroid, vertices, patch: sp.csr_matrix, min_cells: int):
    """Weights of ``a`` in the fit ``u_K ≈ a + b·(c_K - x_v)`` over each vertex's patch
    (row i of ``patch`` lists the cells of ``vertices[i]``). Returns COO triplets of the
    vertices with at least ``min_cells`` cells and a well-conditioned fit, and that mask."""
    sizes = np.diff(patch.indptr)
    n, width = len(vertices), int(sizes.max())
    owner = np.repeat(np.arange(n), sizes)
    slot = np.arange(patch.nnz) - np.repeat(patch.indptr[:-1], sizes)
    cell = np.zeros((n, width), np.int64)
    used = np.zeros((n, width))
    cell[owner, slot] = patch.indices
    used[owner, slot] = 1.0
    offset = (centroid[cell] - points[vertices][:, None, :]) * used[..., None]
    scale = np.abs(offset).max(axis=(1, 2))
    A = np.concatenate([used[..., None], offset / np.where(scale > 0, scale, 1.0)[:, None, None]],
                       axis=2)
    sv = np.linalg.svd(A, compute_uv=False)
    good = (sizes >= min_cells) & (sv[:, -1] > 1e-6 * sv[:, 0])
    weight = np.linalg.pinv(A)[:, 0, :] * used    # row 0 of A⁺: the constant term a
    weight /= weight.sum(axis=1, keepdims=True)
    take = good[owner]
    return vertices[owner[take]], patch.indices[take], weight[owner, slot][take], good


# --------------------------------------------------------------------------- the bundle

class Transfer:
    """The mesh ↔ grid operators of one case.

    Attributes: ``grid`` (:class:`GridSpec`), ``to_grid_matrix`` (n_grid, N),
    ``to_cv_matrix`` (N, n_grid) at the control-volume centres, ``to_face_matrix``
    (F, n_grid) at the face centroids (CSR, float64), and ``inside`` (*shape) bool, True
    at grid nodes inside the mesh.

    Tensor contract: :meth:`to_grid` maps ``(..., N) → (..., *shape)``, :meth:`to_mesh`
    ``(..., *shape) → (..., N)`` and :meth:`to_faces` ``(..., *shape) → (..., F)``, for
    numpy arrays (floating input keeps its dtype) and torch tensors (on their device,
    differentiable in the values).
    """

    def __init__(self, grid: GridSpec, to_grid_matrix: sp.csr_matrix, to_cv_matrix: sp.csr_matrix,
                 to_face_matrix: sp.csr_matrix, inside: np.ndarray) -> None:
        self.grid = grid
        self.to_grid_matrix = to_grid_matrix
        self.to_cv_matrix = to_cv_matrix
        self.to_face_matrix = to_face_matrix
        self.inside = np.asarray(inside, bool).reshape(grid.shape)
        self._torch: dict[tuple, object] = {}

    @classmethod
    def build(cls, mesh: MeshData, cv: ControlVolumes, shape, pad: float = 0.0,
              extension_length: float | None = None) -> "Transfer":
        """Operators for ``mesh`` and its control volumes ``cv`` on the grid of ``shape``
        nodes (an int for every axis, or one per axis) over the mesh's bounding box
        widened by ``pad`` × its extent on each side."""
        grid = GridSpec.covering(mesh.points, shape, pad)
        G, inside = mesh_to_grid(mesh, cv, grid, extension_length)
        return cls(grid, G, grid_to_mesh(grid, cv.centre), grid_to_mesh(grid, cv.face_centroid),
                   inside)

    @property
    def num_cvs(self) -> int:
        """Number of control volumes N."""
        return self.to_grid_matrix.shape[1]

    @property
    def num_faces(self) -> int:
        """Number of faces F."""
        return self.to_face_matrix.shape[0]

    def crowding(self, cells: int = 4) -> tuple[int, int]:
        """(control-volume centres, grid nodes) of the densest block of ``cells``^d grid
        cells. With more centres than nodes somewhere, the grid → mesh interpolation there
        is a map from fewer values onto more, so no grid field reaches every mesh state and a
        grid model's error has a floor however well it trains; a finer grid removes it."""
        m = self.to_cv_matrix.tocsr()
        m.eliminate_zeros()
        rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        lowest = np.full(m.shape[0], m.shape[1], dtype=np.int64)
        np.minimum.at(lowest, rows, m.indices)     # a centre's cell, by its lowest node (C order)
        shape = np.asarray(self.grid.shape)
        cell = np.minimum(np.stack(np.unravel_index(lowest, tuple(shape)), axis=1), shape - 2)
        counts = np.zeros(tuple(shape - 1), dtype=np.int64)
        np.add.at(counts, tuple(cell.T), 1)
        b = min(cells, int(shape.min()) - 1)
        for axis in range(counts.ndim):             # sums over every block of b cells per axis
            c = np.cumsum(np.insert(counts, 0, 0, axis=axis), axis=axis)
            counts = (np.take(c, np.arange(b, c.shape[axis]), axis=axis)
                      - np.take(c, np.arange(c.shape[axis] - b), axis=axis))
        return int(counts.max()), (b + 1) ** counts.ndim

    def fit_floor(self, states: np.ndarray, weights: np.ndarray | None = None) -> float:
        """The least relative L2 (weighted by ``weights``, e.g. the control volumes) by which
        a grid field can miss each of ``states`` (S, N) after the grid → mesh interpolation,
        the largest over the states: 0 where the grid can reach every mesh state, the error
        no grid model can go below otherwise (LSQR on the interpolation matrix)."""
        from scipy.sparse.linalg import lsqr
        w = np.sqrt(np.ones(self.num_cvs) if weights is None
                    else np.asarray(weights, dtype=np.float64))
        A = sp.diags(w) @ self.to_cv_matrix
        worst = 0.0
        for u in np.atleast_2d(states):
            b = w * u
            norm = np.linalg.norm(b)
            if norm == 0:
                continue
            g = lsqr(A, b, atol=1e-12, btol=1e-12, iter_lim=2000)[0]
            worst = max(worst, float(np.linalg.norm(A @ g - b) / norm))
        return worst

    def to_grid(self, values):
        """Control-volume values (..., N) → grid values (..., *shape)."""
        return self._apply("grid", self.to_grid_matrix, values, (self.num_cvs,), self.grid.shape)

    def to_mesh(self, grid_values):
        """Grid values (..., *shape) → values at the control-volume centres (..., N)."""
        return self._apply("cv", self.to_cv_matrix, grid_values, self.grid.shape, (self.num_cvs,))

    def to_faces(self, grid_values):
        """Grid values (..., *shape) → values at the face centroids (..., F)."""
        return self._apply("face", self.to_face_matrix, grid_values, self.grid.shape,
                           (self.num_faces,))

    def _apply(self, name: str, matrix: sp.csr_matrix, x, in_shape: tuple, out_shape: tuple):
        k = len(in_shape)
        if tuple(x.shape[x.ndim - k:]) != tuple(in_shape) or x.ndim < k:
            raise ValueError(f"expected values of shape (..., {', '.join(map(str, in_shape))}), "
                             f"found {tuple(x.shape)}")
        lead = tuple(x.shape[:x.ndim - k])
        n_in = matrix.shape[1]
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(x, torch.Tensor):
            dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
            A = self._torch_matrix(torch, name, matrix, x.device, dtype)
            y = torch.sparse.mm(A, x.to(dtype).reshape(-1, n_in).T)
            return y.T.reshape(*lead, *out_shape).to(x.dtype if x.is_floating_point() else dtype)
        x = np.asarray(x)
        y = matrix @ x.reshape(-1, n_in).T
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        return np.ascontiguousarray(y.T).reshape(*lead, *out_shape).astype(dtype, copy=False)

    def _torch_matrix(self, torch, name, matrix: sp.csr_matrix, device, dtype):
        key = (name, str(device), dtype)
        if key not in self._torch:
            coo = matrix.tocoo()
            index = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
            tensor = torch.sparse_coo_tensor(index, torch.as_tensor(coo.data), coo.shape,
                                             check_invariants=True)
            self._torch[key] = tensor.coalesce().to(device=device, dtype=dtype)
        return self._torch[key]

    def __repr__(self) -> str:
        return (f"Transfer(grid={list(self.grid.shape)}, cvs={self.num_cvs}, "
                f"faces={self.num_faces}, inside={int(self.inside.sum())}/{self.grid.size})")
