"""PETSc options from the case (issue 14): ``[solver] petsc_options`` and ``[constraints]
petsc_options`` reach PETSc under stable prefixes, only while their stage runs."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from helpers import run_cli, small_case
from hybrid.petsc_options import SOLVER_PREFIX, UPDATE_PREFIX, petsc_options

SMALL = dict(train=2, test=2, time={"t_end": "0.01", "outputs": "3"})


def test_options_are_in_force_only_inside_the_block():
    from petsc4py import PETSc

    database = PETSc.Options()
    database[f"{SOLVER_PREFIX}ksp_rtol"] = "1e-3"   # given by the user, e.g. in PETSC_OPTIONS
    with petsc_options(SOLVER_PREFIX, {"ksp_type": "gmres", "ksp_rtol": "1e-9"}):
        assert database.getString(f"{SOLVER_PREFIX}ksp_type") == "gmres"
        assert database.getString(f"{SOLVER_PREFIX}ksp_rtol") == "1e-9"
    assert not database.hasName(f"{SOLVER_PREFIX}ksp_type")
    assert database.getString(f"{SOLVER_PREFIX}ksp_rtol") == "1e-3"
    database.delValue(f"{SOLVER_PREFIX}ksp_rtol")


def test_the_solvers_options_change_the_linear_solver_not_the_answer(tmp_path):
    """GMRES + Jacobi instead of LU: the dataset agrees to 1e-12, and is not bit-identical
    (the options were used)."""
    default = small_case("stefan-1d", tmp_path / "lu", **SMALL)
    krylov = small_case("stefan-1d", tmp_path / "gmres", **SMALL, solver={
        "petsc_options": '{ ksp_type = "gmres", pc_type = "jacobi", ksp_rtol = 1e-13, '
                         'ksp_max_it = 2000 }'})
    for case in (default, krylov):
        proc = run_cli(["solve", str(case), "--quiet"])
        assert proc.returncode == 0, proc.stderr[-2000:]
    with h5py.File(default / "results/solve/dataset.h5") as a, \
            h5py.File(krylov / "results/solve/dataset.h5") as b:
        difference = np.abs(a["test/u"][()] - b["test/u"][()]).max()
    assert 0.0 < difference <= 1e-12


def test_the_updates_options_reach_its_cholesky():
    import scipy.sparse as sp

    from hybrid.constraints.update import _CholeskySolver

    pattern = sp.identity(4, format="csr")
    with petsc_options(UPDATE_PREFIX, {"pc_factor_mat_solver_type": "mumps"}):
        solver = _CholeskySolver(pattern, solver="petsc")
    assert solver.ksp.getPC().getFactorSolverType() == "mumps"
    solver.destroy()


@pytest.mark.parametrize("options,says",
                         [('{ "-ksp_type" = "gmres" }', "solver.petsc_options.-ksp_type"),
                          ('{ ksp_type = ["gmres"] }', "solver.petsc_options.ksp_type"),
                          ('"gmres"', "solver.petsc_options")])
def test_bad_option_tables_are_refused_at_load(tmp_path, options, says):
    case = small_case("stefan-1d", tmp_path, **SMALL, solver={"petsc_options": options})
    proc = run_cli(["solve", str(case)])
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr[-2000:]


def test_an_option_petsc_refuses_is_one_message_naming_the_key(tmp_path):
    case = small_case("stefan-1d", tmp_path, **SMALL,
                      solver={"petsc_options": '{ pc_type = "nonexistent" }'})
    proc = run_cli(["solve", str(case), "--quiet"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert ("solver.petsc_options: PETSc failed with these options: Unable to find requested PC "
            "type") in proc.stderr
