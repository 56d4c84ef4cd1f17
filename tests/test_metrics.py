"""Metrics on fields with known answers."""

import numpy as np
import pytest

from scipy.integrate import quad
from scipy.special import ndtr

from hybrid.metrics import (Z90, coverage, crps_gaussian, front_error, front_position,
                            gaussian_log_likelihood, mass_error, max_error, mse, relative_l2,
                            total_mass)


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
    assert gaussian_log_likelihood(np.zeros_like(sd), sd ** 2, true) == pytest.approx(expected,
                                                                                      abs=0.01)
    # overconfident (σ/4) covers far less
    assert coverage(np.zeros_like(sd), (sd / 4) ** 2, true) < 0.45


def test_a_constant_shift_has_the_hand_computed_scores():
    rng = np.random.default_rng(2)
    S, T, N, c = 3, 4, 50, 0.3
    true = rng.standard_normal((S, T, N))
    w = rng.uniform(0.5, 2.0, N)
    pred = true + c
    assert mse(pred, true, w) == pytest.approx(c ** 2, rel=1e-12)
    assert max_error(pred, true) == pytest.approx(c, rel=1e-12)
    # ‖c‖_w = c √(T Σ_K |K|) per scenario
    hand = [c * np.sqrt(T * w.sum()) / np.sqrt(sum(w @ true[s, n] ** 2 for n in range(T)))
            for s in range(S)]
    np.testing.assert_allclose(relative_l2(pred, true, w), hand, rtol=1e-12)
    amount = max(w @ np.abs(true[s, n]) for s in range(S) for n in range(T))
    assert mass_error(pred, true, w) == pytest.approx(c * w.sum() / amount, rel=1e-12)


def test_mse_weights_by_volume_and_is_the_plain_mean_without_weights():
    rng = np.random.default_rng(3)
    true = rng.standard_normal((2, 3, 5))
    err = np.array([0.0, 1.0, 2.0, 0.0, 3.0])
    w = np.array([1.0, 2.0, 1.0, 4.0, 0.5])
    assert mse(true + err, true, w) == pytest.approx((2 * 1 + 1 * 4 + 0.5 * 9) / 8.5, rel=1e-12)
    assert mse(true + err, true) == pytest.approx(14 / 5, rel=1e-12)


def test_total_mass_is_the_volume_weighted_sum_per_time():
    rng = np.random.default_rng(4)
    u = rng.standard_normal((3, 4, 6))
    w = rng.uniform(0.5, 2.0, 6)
    m = total_mass(u, w)
    assert m.shape == (3, 4)
    assert m[2, 1] == pytest.approx(sum(w[k] * u[2, 1, k] for k in range(6)), rel=1e-12)
    np.testing.assert_allclose(total_mass(np.ones((4, 6)), w), w.sum(), rtol=1e-12)


def test_mass_error_is_relative_to_the_amount_when_the_signed_total_is_zero():
    true = np.array([[[1.0, -1.0, 2.0, -2.0]]])        # Σ u = 0, Σ |u| = 6
    assert mass_error(true + 0.1, true, np.ones(4)) == pytest.approx(0.4 / 6, rel=1e-12)
    # a redistribution that keeps Σ|K|u conserves mass although the field is wrong
    w = np.array([1.0, 2.0, 1.0, 0.5])
    moved = true + np.array([0.25, -0.125, 0.5, -1.0])  # dyadic, so Σ|K|δ = 0 exactly
    assert mass_error(moved, true, w) == 0.0
    assert mse(moved, true, w) == pytest.approx((0.0625 + 2 * 0.015625 + 0.25 + 0.5) / 4.5,
                                                rel=1e-12)


def test_front_of_a_step_on_a_nonuniform_grid_is_the_midpoint_of_the_jump():
    rng = np.random.default_rng(5)
    x = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(0, 1, 38)]))
    a = np.array([[0.2, 0.5, 0.77], [0.31, 0.6, 0.9]])
    u = (x < a[..., None]).astype(float)                # (2, 3, N), u = 1 left of a
    j = np.searchsorted(x, a)                           # first grid point at or right of a
    np.testing.assert_allclose(front_position(u, x, 0.5), 0.5 * (x[j - 1] + x[j]), rtol=1e-14)
    # unequal neighbours: x_2 + (x_3 − x_2)(0.8 − 0.5)/(0.8 − 0.1)
    xs = np.array([0.0, 0.1, 0.35, 0.4, 1.0])
    assert (front_position(np.array([1, 1, 0.8, 0.1, 0]), xs, 0.5)
            == pytest.approx(0.35 + 0.05 * 3 / 7, rel=1e-14))


def test_front_walks_from_the_chosen_end_and_has_fallbacks_when_nothing_crosses():
    x = np.array([0.0, 0.1, 0.35, 0.4, 1.0])
    mirrored = np.array([0, 0.1, 0.8, 1, 1])            # the front seen from the right end
    assert front_position(mirrored, x, 0.5, from_left=False) == pytest.approx(0.1 + 0.25 * 4 / 7,
                                                                              rel=1e-14)
    profiles = np.array([np.full(5, 0.2), np.full(5, 0.9)])
    np.testing.assert_array_equal(front_position(profiles, x, 0.5), [0.0, 1.0])
    np.testing.assert_array_equal(front_position(profiles, x, 0.5, from_left=False), [1.0, 0.0])
    with pytest.raises(ValueError, match="x has shape"):
        front_position(np.ones((2, 4)), x, 0.5)


def test_a_ramp_shifted_by_d_moves_its_front_by_d():
    rng = np.random.default_rng(6)
    x = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(0, 1, 198)]))
    a = rng.uniform(0.3, 0.6, 8)
    d = np.array([0.05, -0.1, 0.02, 0.0, -0.03, 0.12, 0.07, -0.01])

    def ramp(centre):       # u = 1 → 0 linearly over width 0.1 around the front
        return np.clip(0.5 - (x - centre[:, None]) / 0.1, 0.0, 1.0)

    true_front, pred_front = front_position(ramp(a), x, 0.5), front_position(ramp(a + d), x, 0.5)
    np.testing.assert_allclose(true_front, a, atol=1e-12)  # linear interpolation is exact on a ramp
    assert front_error(pred_front, true_front) == pytest.approx(np.mean(np.abs(d)), abs=1e-12)


def _crps_by_quadrature(mu, sd, t):
    """∫ (F(y) − 1{y ≥ t})² dy, the definition."""
    F = lambda y: ndtr((y - mu) / sd)  # noqa: E731
    return quad(lambda y: F(y) ** 2, -np.inf, t)[0] + quad(lambda y: (1 - F(y)) ** 2, t, np.inf)[0]


def test_crps_matches_its_integral_definition_and_reduces_to_the_absolute_error():
    for mu, sd, t in [(0.0, 1.0, 0.3), (1.0, 2.0, -1.5), (0.2, 0.5, 3.0)]:
        assert crps_gaussian(mu, sd ** 2, t) == pytest.approx(_crps_by_quadrature(mu, sd, t),
                                                              rel=1e-8)
    mean, true = np.array([1.0, 2.0, -3.0]), np.array([0.5, 4.0, -3.0])
    assert crps_gaussian(mean, np.zeros(3), true) == np.mean([0.5, 2.0, 0.0])
    # continuous in σ → 0, and finite where (t − μ)/σ overflows
    assert crps_gaussian(mean, np.full(3, 1e-16), true) == pytest.approx(2.5 / 3, rel=1e-6)
    assert crps_gaussian(mean, np.full(3, 1e-320), true) == pytest.approx(2.5 / 3, rel=1e-12)


def test_a_calibrated_gaussian_has_the_expected_crps_and_scores():
    rng = np.random.default_rng(7)
    sd = 0.7
    mean = rng.uniform(-1, 1, 200_000)
    true = mean + sd * rng.standard_normal(mean.shape)
    var = np.full(mean.shape, sd ** 2)
    # E_z[σ(z(2Φ(z) − 1) + 2φ(z) − 1/√π)] = σ(1/√π + 1/√π − 1/√π) = σ/√π (Stein: E[zΦ(z)] = E[φ(z)]
    # = 1/(2√π))
    expected = sd / np.sqrt(np.pi)
    by_quadrature = quad(lambda z: np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
                         * _crps_by_quadrature(0.0, sd, z * sd),
                         -12, 12, limit=200)[0]
    assert by_quadrature == pytest.approx(expected, rel=1e-7)
    assert crps_gaussian(mean, var, true) == pytest.approx(expected, rel=0.01)
    assert coverage(mean, var, true) == pytest.approx(0.90, abs=0.005)
    assert (gaussian_log_likelihood(mean, var, true)
            == pytest.approx(-0.5 * np.log(2 * np.pi * sd ** 2) - 0.5,
                             abs=0.01))


def test_a_too_narrow_gaussian_undercovers_and_scores_worse():
    rng = np.random.default_rng(8)
    mean = np.zeros(200_000)
    true = rng.standard_normal(mean.shape)
    narrow, calibrated = np.full(mean.shape, 1 / 9), np.ones(mean.shape)
    # P(|z| ≤ 1.645/3) = 2Φ(0.548) − 1 ≈ 0.42
    assert coverage(mean, narrow, true) == pytest.approx(2 * ndtr(Z90 / 3) - 1, abs=0.005)
    assert coverage(mean, narrow, true) < 0.5
    # CRPS and LL are proper: the calibrated forecast scores better on its own samples
    assert crps_gaussian(mean, narrow, true) > 1.1 * crps_gaussian(mean, calibrated, true)
    assert (gaussian_log_likelihood(mean, narrow, true)
            < gaussian_log_likelihood(mean, calibrated, true) - 1)


def test_variance_floor_keeps_exactly_known_entries_from_deciding_the_log_likelihood():
    from hybrid.metrics import gaussian_log_likelihood, variance_floor

    rng = np.random.default_rng(3)
    mean = rng.standard_normal(1000)
    var = np.ones(1000)
    true = mean + rng.standard_normal(1000)
    var[:10], true[:10] = 1e-31, mean[:10] + 1e-15      # ten Dirichlet entries:
                                                        # known up to round-off
    floor = variance_floor(var)
    assert floor == pytest.approx(1e-10 * var.mean())
    unfloored = gaussian_log_likelihood(mean, var, true)
    floored = gaussian_log_likelihood(mean, var, true, floor)
    calibrated = gaussian_log_likelihood(mean[10:], var[10:], true[10:])
    # with the floor the ten exact entries add a bounded bonus (log of 1/√floor each), not round-off
    # noise
    assert abs(floored - calibrated) < 0.2 < abs(unfloored - calibrated)
