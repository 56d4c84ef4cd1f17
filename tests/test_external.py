"""``hybrid constrain``: another model's prediction made exact (issue 16).

The predictions here are noisy copies of the solver's own test trajectories: the noise is
known, so the tests can say what the update must do to it."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from helpers import run_cli, small_case
from hybrid.constraints.eliminate import states_only
from hybrid.constraints.rows import (StateLayout, boundary_flux_rows, conservation_rows,
                                     dirichlet_rows, stack_rows)

TINY = dict(train=2, test=3, time={"t_end": "0.01", "outputs": "3"},
            constraints={"compare": '["raw", "hardc", "global", "per-cell", "per-cell+boundary"]'})


def noisy_copy(dataset, path, fluxes: bool, level: float = 0.05, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    with h5py.File(dataset) as f:
        u, flux = f["test/u"][()], f["test/flux"][()]
    noise = level * np.abs(u).max()
    arrays = {"u_mean": u + noise * rng.standard_normal(u.shape),
              "u_var": np.full(u.shape, noise ** 2)}
    arrays["u_mean"][:, 0], arrays["u_var"][:, 0] = u[:, 0], 0.0
    if fluxes:
        flux_noise = level * np.abs(flux).max()
        arrays.update(flux_mean=flux + flux_noise * rng.standard_normal(flux.shape),
                      flux_var=np.full(flux.shape, flux_noise ** 2))
    with h5py.File(path, "w") as f:
        for name, values in arrays.items():
            f[name] = values
    return arrays


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    case = small_case("stefan-1d", tmp_path_factory.mktemp("ext"), **TINY)
    proc = run_cli(["solve", str(case), "--quiet"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return case


def test_noisy_trajectories_become_exact_and_closer_to_the_solver(solved, tmp_path):
    """With fluxes: per-cell balance ≤ 1e-10, the Dirichlet value ≤ 1e-12, and the MSE below
    the noisy input's; metrics.json has validate's keys; ParaView series are written."""
    noisy_copy(solved / "results/solve/dataset.h5", tmp_path / "noisy.h5", fluxes=True)
    proc = run_cli(["constrain", str(solved), "--prediction", str(tmp_path / "noisy.h5"),
                    "--name", "noisy"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = solved / "results/external/noisy"
    m = json.loads((out / "metrics.json").read_text())["variants"]
    assert list(m) == ["raw", "hardc", "global", "per-cell", "per-cell+boundary"]
    best = m["per-cell+boundary"]
    assert best["max_balance_residual"] <= 1e-10 and best["dirichlet_error"] <= 1e-12
    assert best["neumann_flux_error"] <= 1e-12
    assert m["raw"]["max_balance_residual"] > 1e-3 and m["raw"]["dirichlet_error"] > 1e-3
    assert best["mse"] < m["raw"]["mse"] and m["per-cell"]["mse"] < m["raw"]["mse"]
    validate_keys = set(json.loads((out / "metrics.json").read_text())["variants"]["raw"])
    assert {"rel_l2", "mse", "coverage90", "log_likelihood", "crps",
            "update_seconds"} <= validate_keys
    top = json.loads((out / "metrics.json").read_text())
    assert {"case", "description", "ranks", "test_scenarios", "report_time", "front_kind",
            "variants", "times", "surrogate", "prior", "figures"} <= set(top)
    assert top["surrogate"]["rel_l2_mean"] == pytest.approx(m["raw"]["rel_l2"])
    assert (out / "report.md").read_text().count("| per-cell+boundary |") == 1
    assert (sorted(p.name for p in (out / "export").glob("*.xdmf"))
            == ["test-000.xdmf", "test-001.xdmf", "test-002.xdmf"])
    again = run_cli(["constrain", str(solved), "--prediction", str(tmp_path / "noisy.h5"),
                     "--name", "noisy"])
    assert "constrain: up to date" in again.stdout


def test_without_fluxes_the_boundary_values_are_still_exact(solved, tmp_path):
    """States only: the Dirichlet value is imposed exactly; the Stefan case's left wall is
    Dirichlet, so its inflow is unknown and conservation gives no row on the states."""
    noisy = noisy_copy(solved / "results/solve/dataset.h5", tmp_path / "states.h5", fluxes=False)
    proc = run_cli(["constrain", str(solved), "--prediction", str(tmp_path / "states.h5"),
                    "--name", "states"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = solved / "results/external/states"
    metrics = json.loads((out / "metrics.json").read_text())
    m = metrics["variants"]
    assert (list(m) == ["raw", "global", "per-cell", "per-cell+boundary"]
            and metrics["prediction"]["skipped_variants"] == ["hardc"])
    assert m["per-cell+boundary"]["dirichlet_error"] <= 1e-12 < m["raw"]["dirichlet_error"]
    assert m["raw"]["max_balance_residual"] is None
    with h5py.File(out / "variants.h5") as f:
        np.testing.assert_array_equal(f["raw/u_mean"][()], noisy["u_mean"])
        # nothing to impose
        np.testing.assert_array_equal(f["per-cell/u_mean"][()], noisy["u_mean"])


def test_states_only_rows_are_the_global_balance_where_every_boundary_flux_is_data():
    """Per-cell rows + known fluxes at both ends reduce to one balance per interval on the
    states, holding exactly for the states some fluxes balance; a Dirichlet end (unknown
    inflow) leaves no conservation row, only its values."""
    from hybrid.mesh import generate
    from hybrid.mesh.control_volumes import build_control_volumes

    cv = build_control_volumes(generate({"shape": "interval", "cells": 6}, 0), "cells")
    T = 3
    layout = StateLayout(cv.num_cvs, cv.num_faces, T)
    N = layout.N
    rng = np.random.default_rng(1)
    per_cell = conservation_rows(cv, layout, rng.random(N), None)
    ends = cv.boundary_faces
    rows = stack_rows([per_cell, boundary_flux_rows(layout, ends, rng.random((T, len(ends))))])
    reduced = states_only(rows, layout)
    assert reduced.count == T and set(reduced.kind) == {"conservation-sum"}
    Gu, Gf = rows.G[:, :T * N].toarray(), rows.G[:, T * N:].toarray()
    for trial in range(4):
        u = rng.random(T * N)
        if trial % 2:   # states that satisfy the reduced rows: some fluxes must then balance them
            u += np.linalg.lstsq(reduced.G.toarray(), reduced.b - reduced.G @ u, rcond=None)[0]
        fluxes = np.linalg.lstsq(Gf, rows.b - Gu @ u, rcond=None)[0]
        balanced = np.abs(Gu @ u + Gf @ fluxes - rows.b).max() < 1e-10
        assert balanced == (np.abs(reduced.G @ u - reduced.b).max() < 1e-10) == bool(trial % 2)
    left = np.unique(cv.face_cv[ends[:1], 0])
    open_end = states_only(stack_rows([per_cell,
                                       boundary_flux_rows(layout, ends[1:], np.zeros((T, 1))),
                                       dirichlet_rows(layout, left, np.ones((T, 1)))]), layout)
    assert open_end.count == T and set(open_end.kind) == {"dirichlet"}
    assert sp.issparse(open_end.G) and open_end.G.shape[1] == T * N
