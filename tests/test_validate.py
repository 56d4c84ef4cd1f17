"""``hybrid validate`` and ``hybrid run`` end to end on a tiny Stefan case: the report's
tables, stable metric keys, the figures; re-running an unchanged case redoes no stage, and
changing ``[surrogate]`` redoes train onward only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import CASES, edit_toml, run_cli, small_case
from hybrid.problems.scalar import METRIC_KEYS

TINY = dict(train=6, test=2,
            surrogate={"members": "2", "epochs": "3", "grid": "32", "modes": "8", "width": "8",
                       "layers": "2", "batch": "4", "rollout_epochs": "3"},
            time={"t_end": "0.02", "outputs": "4"})


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    case = small_case(CASES / "stefan-1d", tmp_path_factory.mktemp("run"), **TINY)
    first = run_cli(["run", str(case), "--quiet"], ranks=2, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    return case, first


def test_report_tables_metrics_and_figures(ran):
    case, first = ran
    out = case / "results" / "validate"
    metrics = json.loads((out / "metrics.json").read_text())
    variants = metrics["variants"]
    # the shipped case compares every variant; SoftC is its own (second) ensemble
    assert list(variants) == ["raw", "hardc", "softc", "global", "per-cell", "per-cell+boundary",
                              "known-mass"]
    for name, scores in variants.items():
        assert {k for k, _, _ in METRIC_KEYS} <= set(scores), name
        assert len(scores["rel_l2_over_time"]) == 4
    # the constrained variants balance every control volume, raw and SoftC do not
    for name in ("per-cell", "per-cell+boundary"):
        assert variants[name]["max_balance_residual"] < 1e-10
    assert variants["raw"]["max_balance_residual"] > 1e-6
    # exact boundary rows: the Neumann flux at the insulated end is imposed
    assert (variants["per-cell+boundary"]["neumann_flux_error"] < 1e-12
            < variants["raw"]["neumann_flux_error"])
    # the default case's report shows exact boundary values (dual control volumes)
    assert (variants["per-cell+boundary"]["dirichlet_error"] <= 1e-12
            < variants["raw"]["dirichlet_error"])
    # ProbConserv's known-mass setting meets its closed-form mass rows too
    assert variants["known-mass"]["row_residual"]["known-mass"] <= 1e-10
    assert variants["known-mass"]["dirichlet_error"] <= 1e-12
    # the prior's calibration and flux inflation are recorded, fitted on the validation split
    prior = metrics["prior"]
    assert (len(prior["variance_scales"]["state"]) == 4
            and all(v > 0 for v in prior["variance_scales"]["flux"]))
    assert prior["flux_inflation"] in [float(k) for k in prior["validation_mse_ratio"]]
    # the compared SoftC ensemble is calibrated the same way, on the same scenarios
    softc = prior["baseline_calibration"]["softc"]
    assert len(softc["variance_scales"]["state"]) == 4
    assert 0 <= softc["coverage90_uncalibrated"] <= 1
    assert softc["variance_scales"] != prior["variance_scales"]   # its own fit, not the main one's
    # every test scenario's defect statistic, and the widening it gave (never a narrowing)
    defect = variants["per-cell+boundary"]["defect"]
    S = metrics["test_scenarios"]
    assert (len(defect["test"]) == len(defect["variance_scale"])
            == len(prior["defect_variance_scale"]) == S)
    assert all(f >= 1.0 for f in defect["variance_scale"]) and all(q > 0 for q in defect["test"])
    assert (set(defect["validation"]) == {"inside", "outside"}
            and all(q > 0 for q in defect["validation"]["inside"]))
    assert prior["test_outside_training_span"] >= 1   # u* = 0.5 lies below the training range
    # the plan every scenario shares is timed once, apart from the per-scenario phases
    assert (variants["per-cell+boundary"]["plan_seconds"] > 0
            and "plan" not in variants["per-cell+boundary"]["update_phases"])
    assert (variants["per-cell+boundary"]["mean_update_seconds"]
            <= variants["per-cell+boundary"]["update_seconds"])
    assert metrics["front_kind"] == "position" and variants["raw"]["front_error"] >= 0
    for name in ("mass.png", "profiles.png", "front.png", "error.png"):
        assert (out / name).stat().st_size > 10_000, name
        assert name in metrics["figures"]
    report = (out / "report.md").read_text()
    tables_end = report.index("## Figures")
    assert "| variant | rel. L2 |" in report[:tables_end] and "| per-cell+boundary |" in report
    assert "## Prior calibration (validation split)" in report[:tables_end]
    assert "outside the training parameters' span" in report and "Defect widening:" in report
    assert "The softc ensemble, calibrated the same way" in report
    assert "![mass](mass.png)" in report[tables_end:]
    # the summary of hybrid run names the report and the ParaView files
    assert "report.md" in first.stdout and "ParaView" in first.stdout and ".xdmf" in first.stdout


def test_rerun_redoes_nothing_and_surrogate_change_redoes_train_onward(ran):
    case, _ = ran
    results = case / "results"
    stamps = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    again = run_cli(["run", str(case), "--quiet"], ranks=2, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("solve", "train", "train: SoftC", "predict", "validate", "export"):
        assert f"{stage}: up to date" in again.stdout.replace("SoftC up", "SoftC: up"), stage
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps      # not one file rewritten
    toml = case / "case.toml"
    toml.write_text(edit_toml(toml.read_text(), "surrogate", "epochs", "4"))
    changed = run_cli(["run", str(case), "--quiet"], ranks=2, timeout=900)
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert (results / "solve/dataset.h5").stat().st_mtime_ns == stamps[results / "solve/dataset.h5"]
    for redone in ("train/member-0.pt", "predict/variants.h5", "validate/report.md"):
        assert (results / redone).stat().st_mtime_ns > stamps[results / redone], redone
    history = json.loads((results / "train/stage.json").read_text())["members"]
    assert all(m["epochs"] == 4 for m in history.values())
    assert np.isfinite(
        json.loads((results / "validate/metrics.json").read_text())["variants"]["raw"]["rel_l2"])


def test_surrogate_scores_are_also_given_inside_and_outside_the_training_span(tmp_path):
    """Issue 13: in-range and out-of-range test parameters reported apart (metrics and report)."""
    import json

    from helpers import run_cli, small_case

    case = small_case("stefan-1d", tmp_path, train=4, test=4,
                      time={"t_end": "0.01", "outputs": "3"},
                      surrogate={"members": "2", "epochs": "2", "grid": "16", "modes": "4",
                                 "width": "8", "rollout_epochs": "2"},
                      constraints={"compare": '["raw", "per-cell"]'})
    proc = run_cli(["validate", str(case), "--quiet"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    predicted = json.loads((case / "results/predict/metrics.json").read_text())
    train_range = [s["params"]["u_star"] for s in predicted["scenarios"]]
    by_range = json.loads(
        (case / "results/validate/metrics.json").read_text())["surrogate"]["by_range"]
    assert sum(r["scenarios"] for r in by_range.values()) == 4
    import h5py
    with h5py.File(case / "results/solve/dataset.h5") as f:
        names = list(f["train"].attrs["parameter_names"])
        low, high = (f["train/params"][:, names.index("u_star")].min(),
                     f["train/params"][:, names.index("u_star")].max())
    low, high = min(low, 0.55), max(high, 0.7)   # the span includes the training law's bounds
    for scenario, u_star in zip(predicted["scenarios"], train_range):
        assert scenario["in_training_span"] == bool(low - 1e-9 <= u_star <= high + 1e-9)
    report = (case / "results/validate/report.md").read_text()
    assert "| all (4) |" in report
    if len(by_range) == 2:
        assert "parameters outside it (extrapolation)" in report


def test_the_report_says_why_cell_centred_volumes_have_no_dirichlet_column(tmp_path):
    from hybrid.case.config import load_case
    from hybrid.stages.validate import _cell_centred_dirichlet

    dual = load_case(small_case(CASES / "stefan-1d", tmp_path, name="dual"))
    cells = load_case(small_case(CASES / "stefan-1d", tmp_path, name="cells",
                                 mesh={"control_volumes": '"cells"'}))
    assert _cell_centred_dirichlet(dual) == []
    lines = _cell_centred_dirichlet(cells)
    assert "Dirichlet walls (left) have no row here" in lines[0] and "dual" in lines[0]
    # no Dirichlet wall: nothing to explain
    toml = small_case(CASES / "stefan-1d", tmp_path, name="heated",
                      mesh={"control_volumes": '"cells"'}) / "case.toml"
    toml.write_text(toml.read_text().replace('type = "dirichlet"\nvalue = "1"',
                                             'type = "neumann"\nflux = "-1"'))
    assert _cell_centred_dirichlet(load_case(toml.parent)) == []


def test_the_report_names_both_posterior_calibrations_and_the_scenarios_beyond_validation():
    """The prior section gives the posterior factors under each prior, and says how many test
    scenarios lie beyond the validation parameters (where the factors never narrow)."""
    from hybrid.stages.validate import _prior_section

    prior = {"variance_scales": {"state": [1.0, 2.0], "flux": [0.5, 0.7]},
             "coverage90_uncalibrated": 0.8, "flux_inflation": 3.0,
             "posterior_scales": {"variant": "per-cell+boundary", "state": [0.25, 0.75],
                                  "state_outside": [0.5, 0.6], "test_beyond_validation_range": 4}}
    text = "\n".join(_prior_section(prior))
    assert "× 0.25–0.75 under the prior of test scenarios inside the span" in text
    assert "× 0.5–0.6 under the prior of test scenarios outside it" in text
    assert "4 test scenario(s) lie beyond the validation scenarios' parameters" in text
    del prior["posterior_scales"]["state_outside"]
    prior["posterior_scales"]["test_beyond_validation_range"] = 0
    text = "\n".join(_prior_section(prior))
    assert "outside it" not in text and "beyond the validation" not in text
