"""Faults between stages: a stage's outputs are vouched for by the sha256 that its stage.json
records, so a file that a later failed run, a corruption or a copy replaced is never taken as
current (issue 15, defects 1, 4 and 6)."""

from __future__ import annotations

import shutil

import h5py
import pytest

from helpers import run_cli, small_case

TINY = dict(train=4, test=2, surrogate={"members": "2", "epochs": "3", "grid": "16", "modes": "4",
                                        "width": "8", "layers": "2", "batch": "2"},
            time={"t_end": "0.01", "outputs": "3"}, constraints={"compare": '["raw", "per-cell"]'})


@pytest.fixture()
def predicted(tmp_path):
    case = small_case("stefan-1d", tmp_path, **TINY)
    first = run_cli(["predict", str(case), "--quiet"])
    assert first.returncode == 0, first.stderr[-2000:]
    return case


def _stdout(case, *args):
    proc = run_cli([*args, str(case)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_a_replaced_prediction_is_redone_not_called_up_to_date(predicted):
    out = predicted / "results" / "predict"
    assert "predict: up to date" in _stdout(predicted, "predict")
    # what a predict that failed after writing predictions.h5 leaves: other bytes under the final
    # name
    with h5py.File(out / "predictions.h5", "a") as f:
        f.attrs["members"] = 1
    text = _stdout(predicted, "predict")
    assert "predict: up to date" not in text and "constraint variants" in text
    with h5py.File(out / "predictions.h5", "r") as f:
        assert f.attrs["members"] == 2


def test_a_failed_stage_is_not_current_afterwards(predicted):
    out = predicted / "results" / "predict"
    toml = predicted / "case.toml"
    good = toml.read_text()
    toml.write_text(good.replace('compare = ["raw", "per-cell"]',
                                 'compare = ["raw", "per-cell"]\nsigma = 0.5'))
    before = (out / "predictions.h5").read_bytes()
    (out / "variants.h5").unlink()
    (out / "variants.h5").mkdir()   # the next predict cannot write its variants
    failed = run_cli(["predict", str(predicted), "--quiet"])
    assert failed.returncode == 2 and "variants.h5: cannot be written" in failed.stderr
    # the stage's outputs are committed together or not at all: predictions.h5 was written
    # before the failure, and waited; it is gone, and the old one is as it was
    assert (out / "predictions.h5").read_bytes() == before
    assert not [p.name for p in out.iterdir() if ".pending-" in p.name or ".tmp-" in p.name]
    (out / "variants.h5").rmdir()
    toml.write_text(good)
    assert "predict: up to date" not in _stdout(predicted, "predict")


@pytest.mark.parametrize("fault", ["truncated", "another case's"])
def test_a_damaged_or_foreign_dataset_is_solved_again(predicted, tmp_path, fault):
    dataset = predicted / "results" / "solve" / "dataset.h5"
    if fault == "truncated":
        with open(dataset, "r+b") as f:
            f.truncate(dataset.stat().st_size // 2)
    else:
        other = small_case("pme-1d", tmp_path / "other", train=2, test=1,
                           time={"t_end": "0.1", "outputs": "2"})
        assert run_cli(["solve", str(other), "--quiet"]).returncode == 0
        shutil.copy(other / "results" / "solve" / "dataset.h5", dataset)
    text = _stdout(predicted, "predict")
    assert "solve: up to date" not in text and "solve: wrote" in text
    with h5py.File(dataset, "r") as f:
        assert f["test/u"].shape[0] == 2 and f["times"].shape[0] == 4


def _bad(case, *args, ranks: int = 1):
    proc = run_cli([*args, str(case)], ranks=ranks)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.startswith("hybrid: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def test_k_min_above_k_max_is_refused_across_sections(tmp_path):
    """k_max in [parameters] (as the shipped stefan-1d) and k_min = 2 in [pde] (defect 11)."""
    case = small_case("stefan-1d", tmp_path, pde={"k_min": "2"})
    line = _bad(case, "solve")
    assert "case.toml: pde.k_min:" in line and "k_max" in line
    assert not (case / "results").exists()


def test_no_test_scenarios_is_refused_before_any_work(tmp_path):
    """[data] test = 0 (defect 5): predict refuses at once, naming the key, before solving."""
    case = small_case("stefan-1d", tmp_path, **{**TINY, "test": 0})
    line = _bad(case, "predict")
    assert "data.test" in line
    assert not (case / "results" / "solve" / "dataset.h5").exists()


def test_diverged_training_is_an_error_not_a_success(tmp_path):
    """[surrogate] lr = 1e6 (defect 2): every loss is NaN; train fails naming the key, at 2 ranks
    with one message, and leaves no stage that predict would take as trained."""
    case = small_case("stefan-1d", tmp_path,
                      **{**TINY, "surrogate": {**TINY["surrogate"], "lr": "1e6"}})
    line = _bad(case, "train", ranks=2)
    assert "surrogate.lr" in line and "diverged" in line
    assert not (case / "results" / "train" / "stage.json").exists()


@pytest.mark.parametrize("section,key,value", [
    ("initial", "value", '"sqrt(-1)"'), ("initial", "value", '"1/(x-x)"'),
    ("initial", "value", '"(x+2)**10**10"'), ("pde", "source", '"where(t > 0.005, log(-1), 0)"'),
    ("boundary.left", "value", '"1 + log(t - 1)"')])
def test_non_finite_data_is_refused_naming_the_key(tmp_path, section, key, value):
    """Defect 3: a non-finite initial state, source or boundary value gives one message naming
    its key and exit 2 (no PETSc traceback), at 2 ranks too."""
    case = small_case("stefan-1d", tmp_path, train=2, test=1,
                      time={"t_end": "0.01", "outputs": "2"}, **{section: {key: value}})
    line = _bad(case, "solve", ranks=2)
    assert f"{section}.{key}" in line and "not finite" in line, line


def test_outputs_beyond_memory_are_refused_before_any_work(tmp_path):
    """Defect 8: time.outputs = 10⁹ (or 10⁶) is refused from an estimate of the dataset's size."""
    for outputs in ("1000000000", "1000000"):
        case = small_case("stefan-1d", tmp_path / outputs, time={"outputs": outputs})
        line = _bad(case, "solve")
        assert "time.outputs" in line and "GiB" in line


def test_an_output_dir_that_is_a_file_is_refused_before_any_work(tmp_path):
    """Defect 9: [output] dir names an existing file: one message naming output.dir, at once."""
    case = small_case("stefan-1d", tmp_path, output={"dir": '"taken"'})
    (case / "taken").write_text("not a directory\\n")
    line = _bad(case, "run", ranks=2)
    assert "output.dir" in line and "cannot be written" in line
    assert (case / "taken").read_text() == "not a directory\\n"


def test_a_one_member_ensemble_covariance_is_refused_at_load(tmp_path):
    case = small_case("stefan-1d", tmp_path, surrogate={"members": "1"},
                      constraints={"covariance": '"ensemble"'})
    line = _bad(case, "solve")
    assert "constraints.covariance" in line and "members" in line
    assert not (case / "results").exists()


def test_temporary_files_of_dead_processes_are_removed(tmp_path):
    """kill -9 leaves .NAME.tmp-PID behind; the next write of NAME removes those of dead PIDs."""
    import subprocess

    from hybrid.files import atomic_path

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_path / f".member-0.pt.tmp-{dead.pid}"
    orphan.write_text("partial")
    mine = tmp_path / f".member-0.pt.tmp-{__import__('os').getpid() + 0}"
    with atomic_path(tmp_path / "member-0.pt") as tmp:
        assert tmp == mine
        tmp.write_text("done")
    assert not orphan.exists() and (tmp_path / "member-0.pt").read_text() == "done"


def test_scenarios_that_repeat_training_ones_have_no_lookup_ratio(tmp_path):
    """Every scenario with the same parameters and initial state: the nearest training scenario
    is the test scenario itself, so its 'ratio 0.00x' meant nothing; it is '–' now."""
    import json

    case = small_case("stefan-1d", tmp_path, **{**TINY, "train": 3, "test": 1},
                      parameters={"u_star": "0.6"}, **{"parameters.test": {"u_star": "0.6"}})
    text = _stdout(case, "validate")
    assert "ratio 0.00x" not in text and "none to compare with" in text
    metrics = json.loads((case / "results" / "validate" / "metrics.json").read_text())
    assert metrics["surrogate"]["nearest_over_ensemble"] is None


def test_a_non_finite_prediction_is_named_before_the_update(tmp_path):
    """NaN in the ensemble's prediction was reported as a singular G Σ Gᵀ; now as the
    surrogate's."""
    import numpy as np

    from hybrid.case import load_case
    from hybrid.errors import CaseError
    from hybrid.stages.predict import _check_finite_prediction

    case = load_case(small_case("stefan-1d", tmp_path, **TINY))
    pred = {name: np.ones((2, 3, 4)) for name in ("u_mean", "u_var", "flux_mean", "flux_var")}
    _check_finite_prediction(case, pred, tmp_path)
    pred["flux_var"][1, 2, 0] = np.nan
    with pytest.raises(CaseError, match=r"surrogate: the ensemble's flux_var is not finite .* "
                                        r"test scenario 1"):
        _check_finite_prediction(case, pred, tmp_path)


@pytest.mark.parallel(nprocs=2)
def test_a_stage_returns_on_no_rank_before_its_files_are_in_place(comm, tmp_path_factory):
    """Outputs wait until the stage's end; rank 0 writes them, and a rank that returns from
    the stage and reads them at once must find them (the race that hung the 2-rank cavity:
    rank 1 read dataset.h5 before rank 0 had renamed it into place)."""
    import time

    from hybrid.files import atomic_path, commits_together
    from hybrid.parallel import collective

    folder = comm.bcast(str(tmp_path_factory.mktemp("race")) if comm.rank == 0 else None, root=0)
    target = __import__("pathlib").Path(folder) / "out.txt"

    @commits_together
    def stage(*, comm):
        with collective(comm):
            if comm.rank == 0:
                with atomic_path(target) as tmp:
                    tmp.write_text("done")
        if comm.rank == 0:
            time.sleep(1.0)   # rank 0 is slow to reach the stage's end
        return target

    path = stage(comm=comm)
    assert path.read_text() == "done"   # on every rank, at once


def test_a_stage_redone_upstream_makes_every_later_stage_stale(predicted):
    # the stages after a redone one read its new outputs: retraining (--force) must not leave
    # a predict, a report or ParaView series made from the old members called up to date
    assert "export: " in _stdout(predicted, "run")
    text = _stdout(predicted, "run")
    assert all(f"{stage}: up to date" in text for stage in ("predict", "validate", "export"))
    _stdout(predicted, "train", "--force")
    text = _stdout(predicted, "run")
    assert "train: up to date" in text
    assert not any(f"{stage}: up to date" in text for stage in ("predict", "validate", "export"))
    assert "constraint variants" in text
    # and a re-solve makes the training stale in turn
    _stdout(predicted, "solve", "--force")
    text = _stdout(predicted, "train")
    assert "train: up to date" not in text
