"""The typed dataset (:mod:`hybrid.dataset`): a split's scenarios cut together, its arrays
by attribute and by name alike, and its parameters by name."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.dataset import Split


def _split(S=5, T=3, N=4, F=6):
    rng = np.random.default_rng(0)
    return Split(rng.standard_normal((S, T + 1, N)), rng.uniform(size=(S, 2)), ["k", "m"],
                 {"flux": rng.standard_normal((S, T, F)), "solve_seconds": rng.uniform(size=S)},
                 dt=0.1)


def test_a_split_cuts_every_per_scenario_array_alike():
    split = _split()
    part = split.take([3, 1])
    assert part.count == 2 and part.dt == split.dt and part.parameter_names == split.parameter_names
    for name in ("u", "params", "flux", "solve_seconds"):
        np.testing.assert_array_equal(part[name], split[name][[3, 1]])
    mask = np.array([True, False, False, True, True])
    np.testing.assert_array_equal(split.take(mask).flux, split.flux[mask])


def test_a_split_reads_by_attribute_and_by_name():
    split = _split()
    assert split.flux is split["flux"] and split.u is split["u"]
    assert "flux" in split and "source" not in split and split.get("source") is None
    assert set(split.keys()) == {"u", "params", "parameter_names", "flux", "solve_seconds"}
    assert split.parameters(2) == {"k": float(split.params[2, 0]), "m": float(split.params[2, 1])}
    with pytest.raises(AttributeError, match="no 'source'"):
        _ = split.source
    flat = split.with_arrays(u=split.u[..., :2], velocity=split.u)
    # the original unchanged
    assert flat.u.shape[-1] == 2 and flat.velocity is split.u and split.u.shape[-1] == 4


def test_an_ensemble_prediction_reads_by_name_and_stays_typed_when_calibrated():
    from hybrid.surrogates.calibration import VarianceScales, apply_scales
    from hybrid.surrogates.ensemble import EnsemblePrediction

    rng = np.random.default_rng(1)
    S, M, T, N, F = 2, 3, 4, 5, 7
    pred = EnsemblePrediction(rng.standard_normal((S, T + 1, N)), rng.uniform(size=(S, T + 1, N)),
                              rng.standard_normal((S, M, T + 1, N)), rng.standard_normal((S, T, F)),
                              rng.uniform(size=(S, T, F)), rng.standard_normal((S, M, T, F)))
    assert (pred["u_mean"] is pred.u_mean and "flux_dev" in pred
            and dict(pred.items()).keys() == set(pred.keys()))
    scales = VarianceScales(np.full(T, 4.0), np.full(T, 4.0))
    out = apply_scales(pred, scales)
    assert isinstance(out, EnsemblePrediction) and out.u_mean is pred.u_mean
    np.testing.assert_allclose(out.flux_var, 4.0 * pred.flux_var)
    np.testing.assert_allclose(out.u_dev[:, :, 1:], 2.0 * pred.u_dev[:, :, 1:])
    np.testing.assert_array_equal(out.u_var[:, 0], pred.u_var[:, 0])   # t = 0 is given
