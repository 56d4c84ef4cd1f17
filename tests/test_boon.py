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

ENDS = [("dirichlet", "dirichlet"), ("neumann", "dirichlet"), ("dirichlet", "none"), ("none", "neumann"),
        ("neumann", "neumann")]


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


TINY = dict(train=6, test=2, surrogate={"members": "2", "epochs": "3", "grid": "32", "modes": "8", "width": "8",
                                        "layers": "2", "batch": "4"},
            time={"t_end": "0.05", "outputs": "4"},
            constraints={"compare": '["raw", "boon", "per-cell"]'})


@pytest.mark.parametrize("name", ["burgers-dirichlet-1d", "heat-boon-1d"])
def test_run_reports_the_boon_variant(tmp_path, name):
    case = small_case(CASES / name, tmp_path, **TINY)
    done = run_cli(["run", str(case), "--quiet"], timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    variants = json.loads((case / "results/validate/metrics.json").read_text())["variants"]
    assert list(variants) == ["raw", "boon", "per-cell", "per-cell+boundary"]
    boon, raw = variants["boon"], variants["raw"]
    assert np.isfinite(boon["rel_l2"])
    if name == "burgers-dirichlet-1d":
        # BOON's strict enforcement: exact end values; the raw FNO misses them
        assert boon["dirichlet_error"] < 1e-12 < raw["dirichlet_error"]
        assert variants["per-cell+boundary"]["dirichlet_error"] < 1e-12
    else:
        # the insulated end and the heater: the states' end derivatives are the data
        assert boon["normal_derivative_error"] < 1e-10 < raw["normal_derivative_error"]
        assert (case / "results/train/boon/member-0.pt").exists()
