"""BOON's boundary-corrected FNO (hybrid/surrogates/boon.py): the kernel correction
decouples the end nodes from the interior, the output meets the boundary data, and a
tiny ``hybrid run`` reports the ``boon`` variant with exact boundary values on the mesh."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import CASES, run_cli, small_case
from hybrid.surrogates.boon import BoonFNO

ENDS = [("dirichlet", "dirichlet"), ("neumann", "dirichlet"), ("dirichlet", "none"),
        ("none", "neumann"), ("neumann", "neumann")]


def model(ends, T=3, seed=0):
    torch.manual_seed(seed)
    return BoonFNO(4 + 2 * T, 2 * T, 1, ends=ends, outputs=T, modes=6, width=6, layers=3)


@pytest.mark.parametrize("ends", ENDS)
def test_corrected_layer_ends_do_not_see_the_interior(ends):
    m = model(ends)
    h = torch.randn(3, 6, 24)
    moved = h.clone()
    moved[..., 1:-1] += torch.randn_like(moved[..., 1:-1])
    with torch.no_grad():
        a = m._corrected(m.spectral[0], m.skip[0], h)
        b = m._corrected(m.spectral[0], m.skip[0], moved)
    interior = float((a[..., 1:-1] - b[..., 1:-1]).abs().max())
    assert interior > 0.1                                   # the interior does respond
    for side, kind in zip((0, -1), ends):
        change = float((a[..., side] - b[..., side]).abs().max())
        if kind == "none":
            assert change > 1e-3                            # an uncorrected end keeps the coupling
        else:
            assert change < 1e-4 * interior, (ends, side, change)


@pytest.mark.parametrize("ends", ENDS)
def test_output_meets_the_boundary_data(ends):
    T = 3
    m = model(ends, T)
    x = torch.randn(5, 4 + 2 * T, 32)
    beta = torch.randn(5, 2, T)
    x[:, -2 * T:] = beta.reshape(5, 2 * T, 1)
    with torch.no_grad():
        z = m(x)[:, :T]
    for side, kind in zip((0, 1), ends):
        end = z[..., 0] if side == 0 else z[..., -1]
        if kind == "dirichlet":
            assert torch.equal(end, beta[:, side])
        elif kind == "neumann":
            one, two = (z[..., 1], z[..., 2]) if side == 0 else (z[..., -2], z[..., -3])
            assert torch.allclose(end - (4 * one - two) / 3, beta[:, side], atol=1e-5)


def test_periodic_ends_agree_and_training_gradients_flow():
    T = 2
    m = model(("periodic", "periodic"), T)
    x = torch.randn(4, 4 + 2 * T, 16)
    out = m(x)
    assert torch.equal(out[:, :T, 0], out[:, :T, -1])
    loss = (out ** 2).mean()
    loss.backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_boon_needs_matching_periodic_ends():
    with pytest.raises(ValueError, match="pairs"):
        model(("periodic", "dirichlet"))


def model2d(ends, T=2, C=2, seed=0):
    torch.manual_seed(seed)
    return BoonFNO(5 + T * C, 2 * T * C, 2, ends=ends, outputs=T, components=C, modes=5, width=5,
                   layers=3)


@pytest.mark.parametrize("axis", [0, 1])
def test_2d_face_blocks_are_the_full_grid_responses_to_a_face(axis):
    """The blocks come from a grid reduced to one node across the face; on the full grid a
    unit input on a whole face gives the same response, constant along every face."""
    m = model2d(("dirichlet",) * 4)
    spectral, skip = m.spectral[1], m.skip[1]
    layer = lambda v: spectral(v) + skip(v)
    C, shape = 5, (20, 16)
    with torch.no_grad():
        blocks = m._face_blocks(layer, C, shape, axis, torch.float32, "cpu")
        for c in range(C):
            for side, (on_low, on_high) in ((0, (blocks[0], blocks[1])),
                                            (-1, (blocks[2], blocks[3]))):
                unit = torch.zeros((1, C, *shape))
                unit[0, c].select(axis, side).fill_(1.0)
                response = layer(unit) - layer(torch.zeros_like(unit))
                low, high = response[0].select(1 + axis, 0), response[0].select(1 + axis, -1)
                scale = float(response.abs().max())
                assert scale > 1e-3 and (float((low - low[:, :1]).abs().max())
                                         < 1e-5 * scale)  # constant along the face
                np.testing.assert_allclose(low[:, 0].numpy(), on_low[:, c].numpy(),
                                           atol=1e-5 * scale)
                np.testing.assert_allclose(high[:, 0].numpy(), on_high[:, c].numpy(),
                                           atol=1e-5 * scale)


def test_2d_corrected_layer_faces_see_less_of_the_interior():
    """In 2-D the face blocks hold the face-uniform part of the kernel and the inverses are
    damped, so the decoupling is partial: measured 5.6× less response of the face nodes to
    a change of the interior than the plain layer's."""
    m = model2d(("dirichlet",) * 4)
    h = torch.randn(3, 5, 20, 16)
    moved = h.clone()
    moved[..., 1:-1, 1:-1] += torch.randn_like(moved[..., 1:-1, 1:-1])
    faces = lambda d: torch.cat([d[..., 0, :], d[..., -1, :], d[..., :, 0], d[..., :, -1]],
                                dim=-1).abs().mean()
    with torch.no_grad():
        plain = lambda v: m.spectral[0](v) + m.skip[0](v)
        corrected = lambda v: m._corrected(m.spectral[0], m.skip[0], v)
        ratio = float(faces(corrected(h) - corrected(moved)) / faces(plain(h) - plain(moved)))
        interior = (corrected(h) - corrected(moved))[..., 1:-1, 1:-1].abs().mean()
    assert ratio < 0.35 and float(interior) > 0.05


def test_2d_output_meets_the_boundary_fields_and_periodic_faces_agree():
    T, C = 2, 2
    m = model2d(("dirichlet", "none", "dirichlet", "dirichlet"), T, C)
    x = torch.randn(3, 5 + T * C, 18, 14)
    with torch.no_grad():
        z = m(x)[:, :T * C]
    beta = x[:, -T * C:]
    for face in (z[..., 0, :] - beta[..., 0, :], z[..., :, 0] - beta[..., :, 0],
                 z[..., :, -1] - beta[..., :, -1]):
        assert float(face.abs().max()) == 0.0
    assert float((z[..., -1, 1:-1] - beta[..., -1, 1:-1]).abs().max()) > 1e-3    # the uncorrected
                                                                                 # face is free
    p = model2d(("periodic", "periodic", "dirichlet", "dirichlet"), T, C)
    out = p(x)
    assert torch.equal(out[:, :T * C, 0], out[:, :T * C, -1])
    out.pow(2).mean().backward()
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in p.parameters())
    with pytest.raises(ValueError, match="Neumann"):
        model2d(("neumann", "dirichlet", "dirichlet", "dirichlet"))


def test_2d_box_faces_of_the_cavity():
    """Every face of the cavity's grid is Dirichlet; where walls meet, the one listed later in
    the case owns the node, as in the solver: the lid's corners are the side walls'."""
    from hybrid.case import load_case
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.shapes import generate
    from hybrid.surrogates.boon import box_faces
    from hybrid.surrogates.transfer import Transfer

    case = load_case(CASES / "cavity-2d" / "case.toml")
    mesh = generate({"shape": "rectangle", "h": 0.2}, seed=0)
    cv = build_control_volumes(mesh, "dual")
    transfer = Transfer.build(mesh, cv, (12, 10))
    kinds, owned = box_faces(case, cv, transfer)
    assert kinds == ("dirichlet",) * 4
    index = np.arange(120).reshape(12, 10)
    assert sorted(owned["top"]) == sorted(index[1:-1, -1])
    # the walls in the case's order top, left, right, bottom: the bottom, listed last, owns its
    # corners
    assert sorted(owned["bottom"]) == sorted(index[:, 0])
    assert (sorted(owned["left"]) == sorted(index[0, 1:])
            and sorted(owned["right"]) == sorted(index[-1, 1:]))
    assert (sum(len(v) for v in owned.values())
            == len(np.unique(np.concatenate(list(owned.values())))))


TINY = dict(train=6, test=2, surrogate={"members": "2", "epochs": "3", "grid": "32", "modes": "8",
                                        "width": "8", "layers": "2", "batch": "4"},
            time={"t_end": "0.05", "outputs": "4"},
            constraints={"compare": '["raw", "boon", "unpadded", "per-cell"]'})


@pytest.mark.parametrize("name", ["burgers-dirichlet-1d", "heat-boon-1d", "wave-2d"])
def test_run_reports_the_boon_variant(tmp_path, name):
    case = small_case(CASES / name, tmp_path, **TINY)
    done = run_cli(["run", str(case), "--quiet"], timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    variants = json.loads((case / "results/validate/metrics.json").read_text())["variants"]
    assert list(variants) == ["raw", "boon", "unpadded", "per-cell", "per-cell+boundary"]
    boon, raw = variants["boon"], variants["raw"]
    assert np.isfinite(boon["rel_l2"]) and np.isfinite(variants["unpadded"]["rel_l2"])
    # the unpadded baseline is the main ensemble's FNO less its zero padding (BOON's published
    # FNO1d)
    padding = {kind: torch.load(case / "results/train" / kind / "member-0.pt",
                                weights_only=True)["config"]["padding"]
               for kind in ("", "unpadded")}
    assert padding["unpadded"] == 0 < padding[""]
    if name in ("burgers-dirichlet-1d", "wave-2d"):
        # BOON's strict enforcement: exact end (1-D) or wall (2-D) values; the raw FNO misses them
        assert boon["dirichlet_error"] < 1e-12 < raw["dirichlet_error"]
        assert variants["per-cell+boundary"]["dirichlet_error"] < 1e-12
    else:
        # the insulated end and the heater: the states' end derivatives are the data
        assert boon["normal_derivative_error"] < 1e-10 < raw["normal_derivative_error"]
        assert (case / "results/train/boon/member-0.pt").exists()
