"""Mesh ↔ grid transfer operators of the surrogates (hybrid.surrogates.transfer).

Constants pass exactly both ways (outside grid nodes included), linear fields exactly
mesh → grid inside the domain and grid → points everywhere, a smooth field's round trip
converges at second order, the extension outside the L-shape is continuous, and the
numpy and torch paths agree.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import pytest
import torch

from hybrid.mesh.control_volumes import build_control_volumes
from hybrid.mesh.shapes import generate
from hybrid.surrogates.transfer import GridSpec, Transfer, grid_to_mesh, mesh_to_grid

SHAPES = ["interval", "rectangle", "lshape", "disk", "box"]
KINDS = ["dual", "cells"]
GRID_NODES = {1: 41, 2: 33, 3: 13}


@lru_cache(maxsize=None)
def mesh_of(shape: str, h: float | None = None):
    if shape == "interval":
        return generate({"shape": "interval", "h": h or 0.04, "jitter": 0.3}, seed=3)
    return generate({"shape": shape, "h": h or {"box": 0.25, "disk": 0.2}.get(shape, 0.1)})


@lru_cache(maxsize=None)
def case(shape: str, kind: str, h: float | None = None, nodes: int | None = None,
         pad: float = 0.15):
    mesh = mesh_of(shape, h)
    cv = build_control_volumes(mesh, kind)
    return mesh, cv, Transfer.build(mesh, cv, nodes or GRID_NODES[mesh.gdim], pad=pad)


def smooth(x: np.ndarray) -> np.ndarray:
    y = x[:, 1] if x.shape[1] > 1 else 0.7 * x[:, 0]
    return np.sin(2 * x[:, 0]) * np.cos(3 * y)


def linear(x: np.ndarray) -> np.ndarray:
    return 0.5 + x @ np.array([1.5, -2.0, 0.75][:x.shape[1]])


# --------------------------------------------------------------------------- the grid

def test_grid_spec_nodes_in_c_order_with_both_ends_and_padding():
    points = np.array([[0.0, -1.0], [2.0, 3.0]])
    grid = GridSpec.covering(points, (5, 3), pad=0.25)
    assert grid.lo == (-0.5, -2.0) and grid.hi == (2.5, 4.0)
    assert grid.points.shape == (15, 2)
    assert (np.array_equal(grid.points[0], [-0.5, -2.0])
            and np.array_equal(grid.points[-1], [2.5, 4.0]))
    assert np.array_equal(grid.points[1], [-0.5, 1.0])  # last axis fastest (C order)
    np.testing.assert_allclose(grid.spacing, [0.75, 3.0])
    assert GridSpec((0, 0, 0), (1, 1, 1), 4).shape == (4, 4, 4)
    with pytest.raises(ValueError, match="at least 2 nodes"):
        GridSpec((0.0,), (1.0,), (1,))
    with pytest.raises(ValueError, match="lo < hi"):
        GridSpec((0.0, 1.0), (1.0, 1.0), 3)


def test_grid_to_points_rows_sum_to_one_and_reproduce_linear_fields():
    grid = GridSpec((-1.0, 0.0, 2.0), (1.0, 0.5, 3.0), (7, 4, 5))
    rng = np.random.default_rng(0)
    pts = np.asarray(grid.lo) + rng.random((500, 3)) * (np.asarray(grid.hi) - np.asarray(grid.lo))
    pts[:3] = [grid.lo, grid.hi, [1.0, 0.0, 2.5]]  # corners and a face of the box
    I = grid_to_mesh(grid, pts)
    assert I.shape == (500, grid.size) and np.all(np.diff(I.indptr) == 8)
    assert np.abs(I.sum(axis=1) - 1).max() < 1e-14
    assert np.abs(I @ linear(grid.points) - linear(pts)).max() < 1e-13
    # outside the box: clamped onto it
    out = grid_to_mesh(grid, np.array([[5.0, 0.25, 2.5]]))
    assert abs(out @ linear(grid.points) - linear(np.array([[1.0, 0.25, 2.5]])))[0] < 1e-13


# --------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_constants_pass_exactly_both_ways_outside_nodes_included(shape, kind):
    mesh, cv, tr = case(shape, kind)
    outside = ~tr.inside
    assert outside.any() and tr.inside.any()  # the padding leaves nodes outside the mesh
    u = tr.to_grid(np.full(cv.num_cvs, 1.0))
    assert u.shape == tr.grid.shape
    assert np.abs(u[tr.inside] - 1).max() < 1e-13
    assert np.abs(u[outside] - 1).max() < 1e-13
    ones = np.ones(tr.grid.shape)
    assert np.abs(tr.to_mesh(ones) - 1).max() < 1e-13
    assert np.abs(tr.to_faces(ones) - 1).max() < 1e-13
    assert tr.to_grid_matrix.shape == (tr.grid.size, cv.num_cvs)
    assert tr.to_face_matrix.shape == (cv.num_faces, tr.grid.size)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_linear_fields_exact_mesh_to_grid_inside_and_grid_to_mesh(shape, kind):
    mesh, cv, tr = case(shape, kind)
    # dual: P1 interpolation; cells: the least-squares vertex reconstruction is exact too
    err = np.abs(tr.to_grid(linear(cv.centre)).ravel() - linear(tr.grid.points))
    assert err[tr.inside.ravel()].max() < 1e-12
    grid_values = linear(tr.grid.points).reshape(tr.grid.shape)
    assert np.abs(tr.to_mesh(grid_values) - linear(cv.centre)).max() < 1e-12
    assert np.abs(tr.to_faces(grid_values) - linear(cv.face_centroid)).max() < 1e-12
    # outside, the tanh pull-back flattens the Taylor extension: bounded by |∇u| ℓ beyond the data
    outside = tr.to_grid(linear(cv.centre))[~tr.inside]
    ell = 0.1 * np.linalg.norm(np.ptp(mesh.points, axis=0))
    slope = np.linalg.norm([1.5, -2.0, 0.75][:mesh.gdim])
    assert outside.min() > linear(mesh.points).min() - slope * ell - 1e-12
    assert outside.max() < linear(mesh.points).max() + slope * ell + 1e-12


def test_dual_with_periodic_partners_merged():
    mesh = mesh_of("rectangle")
    cv = build_control_volumes(mesh, "dual", periodic=[("left", "right")])
    assert cv.num_cvs < mesh.num_vertices
    tr = Transfer.build(mesh, cv, 21, pad=0.1)
    assert np.abs(tr.to_grid(np.ones(cv.num_cvs)) - 1).max() < 1e-13
    f = lambda x: 1.0 - 2.0 * x[:, 1]  # periodic in x and linear
    err = np.abs(tr.to_grid(f(cv.centre)).ravel() - f(tr.grid.points))
    assert err[tr.inside.ravel()].max() < 1e-12


# --------------------------------------------------------------------------- convergence

ROUND_TRIP = {"interval": [0.1, 0.05, 0.025, 0.0125], "lshape": [0.1, 0.05, 0.025, 0.0125],
              "disk": [0.2, 0.1, 0.05, 0.025]}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", list(ROUND_TRIP))
def test_smooth_round_trip_converges_at_second_order(shape, kind):
    """mesh → grid → mesh of sin(2x) cos(3y) with the grid spacing h/2: max error over all
    control volumes, the boundary ones (which read extended outside nodes) included."""
    hs = ROUND_TRIP[shape]
    errors = []
    for h in hs:
        mesh = mesh_of(shape, h)
        cv = build_control_volumes(mesh, kind)
        nodes = 2 * int(round(np.ptp(mesh.points[:, 0]) / h)) + 1
        tr = Transfer.build(mesh, cv, nodes, pad=0.05)
        u = smooth(cv.centre)
        errors.append(np.abs(tr.to_mesh(tr.to_grid(u)) - u).max())
    rate = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    print(f"\n{shape} {kind}: round-trip max errors {np.array(errors)}, rate {rate:.2f}")
    assert rate >= 1.7, f"round-trip errors {errors}, fitted rate {rate:.2f}"
    assert errors[-1] < 0.01


# --------------------------------------------------------------------------- the extension

@pytest.mark.parametrize("kind", KINDS)
def test_lshape_notch_is_outside_and_its_extension_continuous(kind):
    """The discrete gradient of the extended field stays of the size of the field's
    Lipschitz constant L = |∇(sin 2x cos 3y)| ≤ √13 — across the inside/outside edge and
    across the notch's diagonal, where two boundary arms are equally far — and does not
    grow as the grid is refined (a jump would grow like 1/dx)."""
    L = np.sqrt(13.0)
    for nodes in (33, 129):
        mesh, cv, tr = case("lshape", kind, 0.05, nodes, 0.1)
        x, y = tr.grid.points[:, 0], tr.grid.points[:, 1]
        inside = tr.inside.ravel()
        notch = (x > 0.5 + 1e-9) & (y > 0.5 + 1e-9)
        in_square = (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)
        assert not inside[notch].any()
        assert inside[in_square & ~notch].all()
        assert not inside[~in_square].any()
        u = tr.to_grid(smooth(cv.centre))
        for axis in range(2):
            jump = np.abs(np.diff(u, axis=axis)) / (L * tr.grid.spacing[axis])
            a = np.take(tr.inside, range(nodes - 1), axis=axis)
            b = np.take(tr.inside, range(1, nodes), axis=axis)
            assert (a != b).any()
            assert jump[a != b].max() < 1.25, "jump across the inside/outside edge"
            assert jump[~a & ~b].max() < 1.25, "jump between outside nodes"


# --------------------------------------------------------------------------- torch

def test_torch_and_numpy_agree_with_batch_dims_and_gradients():
    mesh, cv, tr = case("disk", "cells")
    rng = np.random.default_rng(1)
    u = rng.normal(size=(2, 3, cv.num_cvs))
    g = tr.to_grid(u)
    assert g.shape == (2, 3, *tr.grid.shape)
    g_torch = tr.to_grid(torch.from_numpy(u))
    assert g_torch.dtype == torch.float64
    assert np.abs(g_torch.numpy() - g).max() < 1e-13
    assert np.abs(tr.to_mesh(torch.from_numpy(g)).numpy() - tr.to_mesh(g)).max() < 1e-13
    faces = tr.to_faces(torch.from_numpy(g[0]))
    assert faces.shape == (3, cv.num_faces)
    assert np.abs(faces.numpy() - tr.to_faces(g[0])).max() < 1e-13
    # float32 stays float32; the gradient is the transpose applied to the output's seed
    x = torch.tensor(u[0, 0], dtype=torch.float32, requires_grad=True)
    y = tr.to_grid(x)
    assert y.dtype == torch.float32
    assert np.abs(y.detach().numpy() - g[0, 0]).max() < 1e-4
    y.sum().backward()
    expected = np.asarray(tr.to_grid_matrix.sum(axis=0)).ravel()
    assert np.abs(x.grad.numpy() - expected).max() < 1e-4
    assert tr.to_grid(u[0, 0].astype(np.float32)).dtype == np.float32


def test_wrong_value_shape_is_refused():
    _, cv, tr = case("rectangle", "dual")
    with pytest.raises(ValueError, match=r"expected values of shape \(\.\.\., 33, 33\)"):
        tr.to_mesh(np.zeros((33, 32)))
    with pytest.raises(ValueError, match=f"expected values of shape \\(\\.\\.\\., {cv.num_cvs}\\)"):
        tr.to_grid(np.zeros(cv.num_cvs + 1))


def test_mesh_to_grid_returns_the_flat_inside_mask_and_csr():
    mesh, cv, tr = case("lshape", "dual")
    G, inside = mesh_to_grid(mesh, cv, tr.grid)
    assert G.format == "csr" and G.dtype == np.float64
    assert inside.shape == (tr.grid.size,) and np.array_equal(inside, tr.inside.ravel())
    assert (G != tr.to_grid_matrix).nnz == 0


# --------------------------------------------------------------------------- build time

@pytest.mark.parametrize("kind", KINDS)
def test_build_256x256_grid_on_h002_mesh(kind):
    mesh = mesh_of("lshape", 0.02)
    cv = build_control_volumes(mesh, kind)
    start = time.perf_counter()
    tr = Transfer.build(mesh, cv, 256)
    elapsed = time.perf_counter() - start
    print(f"\n{kind}: {mesh.num_cells} cells, 256x256 grid, built in {elapsed:.2f} s, "
          f"nnz {tr.to_grid_matrix.nnz}")
    assert elapsed < 30.0  # a generous bound, not a benchmark (about 0.3 s here)
    assert tr.inside.sum() == pytest.approx(0.75 * 256 ** 2, rel=0.02)


@pytest.mark.parametrize("shape,coarse,fine",
                         [("interval", (128,), (256,)), ("rectangle", (8, 8), (32, 32))])
def test_crowding_flags_exactly_the_grids_that_cannot_fit_every_mesh_state(shape, coarse, fine):
    """Transfer.crowding: a grid with more control-volume centres than nodes in some block is
    flagged, and there the best grid field (least squares) misses a random mesh state; on the
    finer grid, not flagged, it fits every one to round-off; Transfer.fit_floor measures that
    miss."""
    mesh = generate({"shape": "interval", "cells": 200, "jitter": 0.3} if shape == "interval"
                    else {"shape": "rectangle", "h": 0.08}, seed=1)
    cv = build_control_volumes(mesh, "dual")
    u = np.random.default_rng(0).normal(size=cv.num_cvs)
    for grid, flagged in ((coarse, True), (fine, False)):
        t = Transfer.build(mesh, cv, grid)
        centres, nodes = t.crowding()
        assert (centres > nodes) == flagged, (grid, centres, nodes)
        g = np.linalg.lstsq(t.to_cv_matrix.toarray(), u, rcond=None)[0]
        miss = np.linalg.norm(t.to_cv_matrix @ g - u) / np.linalg.norm(u)
        assert (miss > 1e-2) if flagged else (miss < 1e-10), (grid, miss)
        # LSQR finds the same floor
        assert t.fit_floor(u[None]) == pytest.approx(miss, rel=1e-4, abs=1e-8)
