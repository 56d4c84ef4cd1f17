"""The prior of the update as the validation split chooses it: when the ensemble's variances make
the main variant's validation MSE worse at every flux inflation λ, no test scenario uses them."""

from __future__ import annotations

import json

import numpy as np
from helpers import small_case
from mpi4py import MPI

from hybrid.case import load_case
from hybrid.constraints import driver

TINY = dict(train=10, test=3, surrogate={"members": "2", "epochs": "4", "grid": "32", "modes": "8",
                                         "width": "8", "layers": "2", "batch": "4"},
            time={"t_end": "0.4", "outputs": "4"},
            constraints={"compare": '["raw", "per-cell"]'})


def _predict(case_dir):
    from hybrid.stages.predict import run_predict

    run_predict(load_case(case_dir), force=True, comm=MPI.COMM_SELF, progress=False, announce=False)
    return json.loads((case_dir / "results/predict/metrics.json").read_text())


def test_a_harmful_ensemble_prior_gives_way_to_the_even_one(tmp_path, monkeypatch):
    # stokes-1d: Dirichlet ends only, where the even prior's update is a volume-orthogonal
    # projection onto rows the solver's states satisfy
    case = small_case("stokes-1d", tmp_path, **TINY)
    before = _predict(case)
    assert before["prior_inside_training_span"] == "ensemble"
    assert min(before["validation_mse_ratio"].values()) < 1.0   # the rule did not fire by itself

    real = driver.choose_flux_inflation

    def harmful(*args, **kwargs):   # the same choice, with every λ's validation ratio above 1
        lam, table, safe = real(*args, **kwargs)
        return lam, {k: v + 1.0 for k, v in table.items()}, safe

    monkeypatch.setattr(driver, "choose_flux_inflation", harmful)
    after = _predict(case)
    assert after["prior_inside_training_span"] == "even"
    v, w = after["variants"], before["variants"]
    main = "per-cell+boundary"
    assert v[main]["mse"] <= v["raw"]["mse"] * (1 + 1e-9)
    assert v["raw"]["mse"] == w["raw"]["mse"]              # the ensemble itself is untouched
    assert v[main]["mse"] != w[main]["mse"]               # and the in-range scenarios changed prior
    assert v[main]["max_balance_residual"] <= 1e-10 and v[main]["dirichlet_error"] <= 1e-12
    assert np.isfinite(v[main]["coverage90"])


def test_a_case_level_prior_shape_scales_one_variance_and_keeps_the_rows_exact(tmp_path):
    """prior_shape = "case": every test scenario's prior is s · diag(d₀), one factorisation for the
    case, so two scenarios' posterior variances differ by a constant factor over every entry (s and
    the defect widening; the exact rows intact); "scenario" keeps each scenario's own variances,
    whose ratios vary; "auto" follows the validation comparison recorded in metrics.json."""
    import h5py

    from hybrid.constraints.selection import prefers_case_shape

    results = {}
    for setting in ("case", "scenario", "auto"):
        case = small_case("burgers-1d", tmp_path / setting, **{
            **TINY, "surrogate": {**TINY["surrogate"], "validation": "0.3"},   # 3 scenarios
            "constraints": {"compare": '["raw", "per-cell"]', "prior_shape": f'"{setting}"'}})
        metrics = _predict(case)
        record = metrics["prior_shape"]
        assert record["setting"] == setting
        results[setting] = metrics
        with h5py.File(case / "results/predict/variants.h5") as f:
            var = f["per-cell/u_var"][:, 1:]
        ratio = var[0] / var[1]
        spread = ratio.max() / ratio.min() - 1
        main = metrics["variants"]["per-cell"]
        assert main["max_balance_residual"] <= 1e-10
        posterior = metrics["posterior_scales"]   # the same factors for both scenarios
        assert posterior["variant"] == "per-cell+boundary"
        assert len(posterior["state"]) == var.shape[1]
        assert all(x > 0 for x in posterior["state"])
        if setting == "case":
            assert record["chosen"] == "case" and spread < 1e-9
            # λ chosen under the shape alone: the per-scenario sweep was not run
            assert set(record["validation_mse_ratio"]) == {"case"}
            from hybrid.stages.validate import run_validate

            report = run_validate(load_case(case), comm=MPI.COMM_SELF, progress=False,
                                  announce=False).read_text()
            assert "Prior shape: case (setting case)" in report and "not evaluated" in report
        elif setting == "scenario":
            assert record["chosen"] == "scenario" and spread > 1e-3
        else:
            ratios = record["validation_mse_ratio"]
            assert record["chosen"] == ("case" if ratios["case"] <= ratios["scenario"]
                                        else record["chosen"])
            assert main["mse"] == results[record["chosen"]]["variants"]["per-cell"]["mse"]
    assert prefers_case_shape(np.array([0.9, 0.8, 0.7]), np.array([0.91, 0.79, 0.72]))
    assert not prefers_case_shape(np.array([0.9, 0.8, 0.7]), np.array([0.95, 0.86, 0.74]))


def test_the_case_shape_leaves_the_free_flux_limit_of_out_of_range_scenarios_as_it_was(tmp_path):
    """Out-of-range test scenarios keep the even prior's free-flux limit under either prior shape:
    their states are updated on the state rows alone, and the flux stage, which takes the case
    shape's variances (one factorisation) instead of the scenario's own, leaves the states as they
    are. So their state means agree to round-off, and every row still holds."""
    import h5py

    means, fluxes = {}, {}
    for setting in ("case", "scenario"):
        case = small_case("stokes-1d", tmp_path / setting, **{
            **TINY, "surrogate": {**TINY["surrogate"], "validation": "0.3"},
            "constraints": {"compare": '["raw", "per-cell"]', "prior_shape": f'"{setting}"'}})
        metrics = _predict(case)
        assert metrics["prior_shape"]["chosen"] == setting
        inside = np.array([s["in_training_span"] for s in metrics["scenarios"]])
        assert inside.any() and not inside.all()
        main = metrics["variants"]["per-cell+boundary"]
        assert main["max_balance_residual"] <= 1e-10 and main["dirichlet_error"] <= 1e-12
        with h5py.File(case / "results/predict/variants.h5") as f:
            means[setting] = f["per-cell+boundary/u_mean"][~inside]
            fluxes[setting] = f["per-cell+boundary/flux_mean"][~inside]
    scale = np.abs(means["case"]).max()
    assert np.abs(means["case"] - means["scenario"]).max() <= 1e-12 * scale
    assert not np.array_equal(fluxes["case"], fluxes["scenario"])


def test_the_training_span_reaches_the_declared_bounds_of_the_training_laws(tmp_path):
    """A test value at the bound of the training law (k = 5 of uniform [1, 5]) lies inside what the
    training was asked to cover, even when no training draw came within 1e-9 of it; a value past
    the bound, or past the samples of an unbounded (normal) law, stays outside."""
    from hybrid.case.parameters import Choice, Fixed, Normal, Uniform
    from hybrid.constraints.selection import within_training_span

    case = load_case(small_case("diffusion-1d", tmp_path))
    case.parameters.clear()
    case.parameters.update({"k": Uniform(1.0, 5.0), "c": Choice((0.2, 0.4, 0.3)),
                            "s": Normal(0.0, 1.0), "f": Fixed(2.0)})
    low, high = case.declared_span(["k", "c", "s", "f", "nu"])
    assert np.array_equal(low[:4], [1.0, 0.2, np.nan, 2.0], equal_nan=True)
    assert np.array_equal(high[:4], [5.0, 0.4, np.nan, 2.0], equal_nan=True)
    assert np.isnan(low[4]) and np.isnan(high[4])     # not a declared law: samples only
    train = np.array([[1.7, 0.3, -0.5, 2.0, 1.0], [4.2, 0.2, 0.5, 2.0, 3.0]])
    test = np.array([[5.0, 0.4, 0.0, 2.0, 2.0],      # at the declared bounds: inside
                     [1.0, 0.2, 0.5, 2.0, 1.0],      # at the lower bounds: inside
                     [5.2, 0.3, 0.0, 2.0, 2.0],      # past uniform's high: outside
                     [3.0, 0.3, 0.6, 2.0, 2.0],      # past the normal law's samples: outside
                     [3.0, 0.3, 0.0, 2.0, 3.5]])     # past an undeclared column's samples
    assert within_training_span(train, test, (low, high)).tolist() == [True, True, False, False,
                                                                        False]
    assert within_training_span(train, test).tolist() == [False, False, False, False, False]


def test_the_posterior_calibration_narrows_only_within_the_validation_range(tmp_path, monkeypatch):
    """The posterior scales are fitted on the validation scenarios, drawn inside the training law:
    a test scenario inside the training span but beyond the validation scenarios' parameters (at
    the law's bound, k = 0.2 of uniform [0.05, 0.2]) takes only their widening (factors ≥ 1),
    one within it the factors themselves, and one outside the span (fitted under the prior of
    outside_prior) again only their widening."""
    import h5py

    case = small_case("stokes-1d", tmp_path, **{
        **TINY, "surrogate": {**TINY["surrogate"], "validation": "0.3"},
        "parameters.test": {"k": "{ choice = [0.125, 0.2, 0.25] }"}, "data": {"test": "6"},
        "constraints": {"compare": '["raw", "per-cell"]', "defect_scale": "false"}})
    runs, found = {}, {}
    real_prepare, real_scales = driver._prepare, driver._posterior_scales

    def prepare(*args, **kwargs):
        run = real_prepare(*args, **kwargs)
        found["run"] = run
        return run

    monkeypatch.setattr(driver, "_prepare", prepare)
    for factor in (1.0, 0.5):
        def scales(*args, factor=factor):
            fitted = real_scales(*args)
            return None if fitted is None else np.full_like(fitted, factor)
        monkeypatch.setattr(driver, "_posterior_scales", scales)
        metrics = _predict(case)
        with h5py.File(case / "results/predict/variants.h5") as f:
            runs[factor] = f["per-cell+boundary/u_var"][:, 1:]
    run = found["run"]
    inside, supported = run.inside, run.calibrated_range
    assert (inside & supported).any() and (inside & ~supported).any() and (~inside).any()
    assert metrics["posterior_scales"]["test_beyond_validation_range"] == int(
        np.count_nonzero(~supported))
    fitted = metrics["posterior_scales"]
    assert len(fitted["state"]) == len(fitted["state_outside"]) == runs[1.0].shape[1]
    with np.errstate(invalid="ignore"):   # 0 / 0 at Dirichlet values, whose variance is 0
        ratio = runs[0.5] / runs[1.0]
    for i in range(len(inside)):
        expected = 0.5 if inside[i] and supported[i] else 1.0
        assert np.allclose(ratio[i][np.isfinite(ratio[i])], expected, rtol=1e-9), i


def test_the_case_lists_the_candidate_flux_inflations(tmp_path):
    """[constraints] flux_inflations: only the listed λ are updated on the validation scenarios
    (each a factorisation per scenario at scale), and the chosen one is among them."""
    case = small_case("burgers-1d", tmp_path, **{
        **TINY, "constraints": {**TINY["constraints"], "flux_inflations": "[3, 30]"}})
    metrics = _predict(case)
    assert set(metrics["validation_mse_ratio"]) == {"3", "30"}
    assert metrics["flux_inflation"] in (3.0, 30.0)
