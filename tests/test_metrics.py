"""Metrics on fields with known answers."""

import numpy as np
import pytest

from hybrid.metrics import coverage, gaussian_log_likelihood, relative_l2


def test_relative_l2_of_a_scaled_field():
    rng = np.random.default_rng(0)
    true = rng.standard_normal((3, 4, 50))
    w = rng.uniform(0.5, 2.0, 50)
    np.testing.assert_allclose(relative_l2(1.1 * true, true, w), 0.1, rtol=1e-12)
    assert relative_l2(true, true, w).max() == 0.0


def test_a_calibrated_gaussian_covers_ninety_percent_and_has_the_known_likelihood():
    rng = np.random.default_rng(1)
    sd = rng.uniform(0.5, 2.0, 200_000)
    true = sd * rng.standard_normal(sd.shape)
    assert coverage(np.zeros_like(sd), sd ** 2, true) == pytest.approx(0.90, abs=0.003)
    # E[log N(x; 0, σ²)] = −½ − log σ − ½ log 2π
    expected = np.mean(-0.5 - np.log(sd) - 0.5 * np.log(2 * np.pi))
    assert gaussian_log_likelihood(np.zeros_like(sd), sd ** 2, true) == pytest.approx(expected, abs=0.01)
    # overconfident (σ/4) covers far less
    assert coverage(np.zeros_like(sd), (sd / 4) ** 2, true) < 0.45
