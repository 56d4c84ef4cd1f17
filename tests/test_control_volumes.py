"""Control volumes: geometry identities, the P1 equivalence of the dual scheme, periodic
identification and the MPI partition."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from hybrid.errors import CaseError
from hybrid.mesh.control_volumes import build_control_volumes, cell_measures
from hybrid.mesh.shapes import generate

SHAPES = {
    "interval": ({"shape": "interval", "cells": 40, "jitter": 0.4}, 1.0),
    "rectangle": ({"shape": "rectangle", "h": 0.15}, 1.0),
    "lshape": ({"shape": "lshape", "h": 0.12}, 0.75),
    "disk": ({"shape": "disk", "h": 0.25}, None),
    "box": ({"shape": "box", "h": 0.35}, 1.0),
}


def flux_operator(cv) -> sp.csr_matrix:
    """Matrix A with (A u)_K = net outflow of K for k = 1 (interior faces only)."""
    P = cv.pieces
    a, b = cv.face_cv[P.face, 0], cv.face_cv[P.face, 1]
    ns = P.stencil.shape[1]
    rows = np.concatenate([np.repeat(a, ns), np.repeat(b, ns)])
    cols = np.concatenate([P.stencil.ravel(), P.stencil.ravel()])
    vals = np.concatenate([P.weight.ravel(), -P.weight.ravel()])
    return sp.csr_matrix((vals, (rows, cols)), shape=(cv.num_cvs, cv.num_cvs))


@pytest.mark.parametrize("kind", ["cells", "dual"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_volumes_and_closed_surfaces(shape, kind):
    spec, measure = SHAPES[shape]
    mesh = generate(spec, seed=1)
    cv = build_control_volumes(mesh, kind)
    total = cell_measures(mesh.points, mesh.cells).sum()
    assert cv.volume.min() > 0
    assert cv.volume.sum() == pytest.approx(total, rel=1e-13)
    if measure is not None:
        assert total == pytest.approx(measure, rel=1e-12)
    # Σ_f s_{K,f} n_f |f| = 0: every control volume is a closed surface
    D = cv.incidence()
    closure = D @ (cv.face_normal * cv.face_area[:, None])
    assert np.abs(closure).max() <= 1e-13 * max(1.0, cv.face_area.max())
    assert np.allclose(np.linalg.norm(cv.face_normal, axis=1), 1.0)
    # every boundary face carries the tag of a named boundary
    bf = cv.boundary_faces
    assert set(np.unique(cv.face_tag[bf])) <= set(mesh.boundary_names.values())
    assert np.all(cv.face_tag[cv.face_cv[:, 1] >= 0] == 0)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_dual_fluxes_exact_for_linear_fields(shape):
    """The dual flux stencil reproduces -∇u·n|f| exactly when u is linear."""
    mesh = generate(SHAPES[shape][0], seed=2)
    cv = build_control_volumes(mesh, "dual")
    grad = np.array([0.7, -1.3, 0.4])[: mesh.gdim]
    u = mesh.points @ grad
    P = cv.pieces
    flux = np.bincount(P.face, weights=np.einsum("pj,pj->p", P.weight, u[P.stencil]),
                       minlength=cv.num_faces)
    inner = cv.face_cv[:, 1] >= 0
    exact = -(cv.face_normal @ grad) * cv.face_area
    assert np.abs(flux[inner] - exact[inner]).max() <= 1e-12 * np.abs(exact).max()
    # boundary pieces (the Dirichlet reaction estimate) too
    B = cv.boundary_pieces
    bflux = np.einsum("pj,pj->p", B.weight, u[B.stencil])
    assert np.abs(bflux - exact[B.face]).max() <= 1e-12 * np.abs(exact).max()


def test_cells_fluxes_exact_for_linear_fields_in_1d():
    mesh = generate({"shape": "interval", "cells": 30, "jitter": 0.5}, seed=3)
    cv = build_control_volumes(mesh, "cells")
    u = 2.5 * cv.centre[:, 0]
    P = cv.pieces
    flux = np.bincount(P.face, weights=np.einsum("pj,pj->p", P.weight, u[P.stencil]),
                       minlength=cv.num_faces)
    inner = cv.face_cv[:, 1] >= 0
    assert np.allclose(flux[inner], -2.5 * cv.face_normal[inner, 0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", ["interval", "lshape", "box"])
def test_dual_scheme_is_p1_finite_elements(shape):
    """The dual control volumes' flux operator is DOLFINx's assembled P1 stiffness matrix,
    and their volumes are its vertex-lumped mass matrix."""
    import ufl
    from dolfinx import fem
    from mpi4py import MPI
    from scipy.spatial import cKDTree

    from hybrid.compat import function_space
    from hybrid.mesh.distribute import to_dolfinx

    mesh = generate(SHAPES[shape][0], seed=4)
    cv = build_control_volumes(mesh, "dual")
    dmesh, _ = to_dolfinx(mesh, MPI.COMM_SELF)
    V = function_space(dmesh, ("Lagrange", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    A = fem.petsc.assemble_matrix(fem.form(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx))
    A.assemble()
    M = fem.petsc.assemble_matrix(fem.form(u * v * ufl.dx))
    M.assemble()
    row_sum = M.createVecLeft()
    M.getRowSum(row_sum)  # row-sum lumping (= vertex quadrature for P1 simplices)
    indptr, indices, data = A.getValuesCSR()
    A_fe = sp.csr_matrix((data, indices, indptr), shape=A.getSize())
    # dof -> original vertex
    dof_x = V.tabulate_dof_coordinates()[:, : mesh.gdim]
    dist, vertex_of_dof = cKDTree(mesh.points).query(dof_x)
    assert dist.max() < 1e-12
    perm = sp.csr_matrix((np.ones(len(vertex_of_dof)),
                          (vertex_of_dof, np.arange(len(vertex_of_dof)))))
    A_fe_orig = (perm @ A_fe @ perm.T).tocsr()
    A_fv = flux_operator(cv)
    assert abs(A_fv - A_fe_orig).max() <= 1e-12 * abs(A_fe_orig).max()
    assert np.allclose(perm @ row_sum.array, cv.volume, rtol=1e-12, atol=0)
    for obj in (A, M, row_sum):
        obj.destroy()


@pytest.mark.parametrize("kind", ["cells", "dual"])
def test_periodic_interval(kind):
    mesh = generate({"shape": "interval", "cells": 16, "jitter": 0.3}, seed=5)
    plain = build_control_volumes(mesh, kind)
    cv = build_control_volumes(mesh, kind, periodic=[("left", "right")])
    assert len(cv.boundary_faces) == 0
    assert cv.volume.sum() == pytest.approx(plain.volume.sum(), rel=1e-14)
    if kind == "dual":
        assert cv.num_cvs == mesh.num_vertices - 1
        assert cv.cv_of_entity[0] == cv.cv_of_entity[-1]
    else:
        assert cv.num_faces == plain.num_faces - 1  # two boundary faces became one interior face
    # constant fields carry no flux, a linear field's flux is uniform on interior faces
    P = cv.pieces
    u = np.ones(cv.num_cvs)
    flux = np.bincount(P.face, weights=np.einsum("pj,pj->p", P.weight, u[P.stencil]),
                       minlength=cv.num_faces)
    assert np.abs(flux).max() < 1e-12


def test_periodic_rectangle_pairs_vertices():
    mesh = generate({"shape": "rectangle", "h": 0.2}, seed=0)
    # a gmsh rectangle's left and right sides carry matching vertices
    cv = build_control_volumes(mesh, "dual", periodic=[("left", "right")])
    n_left = len(np.unique(mesh.facets[mesh.facet_tags == mesh.boundary_names["left"]]))
    assert cv.num_cvs == mesh.num_vertices - n_left
    assert not np.isin(cv.face_tag[cv.boundary_faces], [1, 2]).any()


def test_periodic_mismatch_is_an_error():
    mesh = generate({"shape": "lshape", "h": 0.2}, seed=0)
    with pytest.raises(CaseError, match="periodic"):
        build_control_volumes(mesh, "dual", periodic=[("left", "inner")])
    with pytest.raises(CaseError, match="not in the mesh"):
        build_control_volumes(mesh, "dual", periodic=[("left", "nowhere")])


@pytest.mark.parallel(nprocs=2)
@pytest.mark.parametrize("kind", ["cells", "dual"])
def test_owners_and_local_views(comm, kind):
    from hybrid.mesh.distribute import partition_owners

    mesh = generate({"shape": "rectangle", "h": 0.1}, seed=0)
    cv = build_control_volumes(mesh, kind)
    cell_owner, vertex_owner = partition_owners(mesh, comm)
    cv.assign_owners(cell_owner, vertex_owner)
    assert set(np.unique(cv.cv_owner)) == set(range(comm.size))
    view = cv.local_view(comm.rank)
    counts = comm.allgather(len(view["owned_cvs"]))
    assert sum(counts) == cv.num_cvs
    if comm.size > 1:
        assert len(view["ghost_cvs"]) > 0
        assert np.all(cv.cv_owner[view["ghost_cvs"]] != comm.rank)
    # every face touching an owned control volume is in the local view
    a, b = cv.face_cv[:, 0], cv.face_cv[:, 1]
    owned = np.isin(a, view["owned_cvs"]) | np.isin(b, view["owned_cvs"])
    assert set(np.flatnonzero(owned)) == set(view["faces"])
