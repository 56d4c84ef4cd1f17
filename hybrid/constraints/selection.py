"""Choosing the prior's flux-to-state trust on the validation split.

The update μ̃ = μ − Σ Gᵀ A⁻¹ (G μ − b) leaves an error (I − Σ Gᵀ A⁻¹ G) e: it is the
Σ⁻¹-orthogonal projection of the prediction's error e, so it never grows in the Σ⁻¹ norm,
but it can move error from the fluxes into the states when Σ does not describe how the
surrogate's errors are correlated (a diagonal Σ treats smooth, correlated state errors as
independent). Scaling the fluxes' variances by λ sets how much of a balance defect the
fluxes absorb: a large λ leaves the states nearly as predicted except where the rows fix
them directly (Dirichlet values, and a domain's total mass where every boundary flux is
known, which then moves the states by the mass defect). λ is chosen from a small grid by the
states' mean squared error on validation scenarios (no member trained on them; never the
test scenarios), with the one-standard-error rule towards large λ. Test scenarios outside
the training parameters' span take the prior of :func:`outside_prior` instead, and every test
scenario's posterior variance widens by :func:`defect_scale` when its prediction breaks the
rows by more than the validation scenarios' did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybrid.case.schema import SECTIONS
from hybrid.constraints.update import ConstraintError, GaussianUpdate
from hybrid.metrics import mse

__all__ = ["FLUX_INFLATIONS", "OUTSIDE_INFLATION", "ValidationScenario", "choose_flux_inflation",
           "defect_scale", "outside_prior", "prefers_case_shape", "shape_scale",
           "shaped_scenarios", "within_training_span"]

# the candidates of λ unless the case lists its own ([constraints] flux_inflations); beyond 1e4
# G Σ Gᵀ loses digits (periodic domains)
FLUX_INFLATIONS = tuple(SECTIONS["constraints"]["flux_inflations"].default)


@dataclass
class ValidationScenario:
    """One validation scenario's rows and prediction.

    Attributes:
        rows: the main variant's :class:`~hybrid.constraints.rows.ConstraintRows`.
        mean: the ensemble's mean of x = [u^1..u^T, Φ^1..Φ^T].
        var: the diagonal of the prior covariance (after the variance floor), length of x.
        U: the low-rank factor of the prior covariance, or None.
        flux: boolean mask of x's flux entries.
        truth: the solver's states u^1..u^T, (T, N).
    """

    rows: object
    mean: np.ndarray
    var: np.ndarray
    U: np.ndarray | None
    flux: np.ndarray
    truth: np.ndarray


def choose_flux_inflation(scenarios: list[ValidationScenario], volume: np.ndarray,
                          sigma: float = 0.0, candidates=FLUX_INFLATIONS, layout=None,
                          make=None, per_scenario: dict | None = None) -> tuple[float, dict]:
    """The λ of ``candidates`` chosen by the validation state MSE of the constrained mean, with
    the one-standard-error rule (Breiman et al.): the largest λ, the one that leaves the states
    most as predicted, whose mean MSE ratio is within one standard error of the best's. The
    validation scenarios are few and lie inside the training range, so among near-ties the
    choice that changes the states least is the one that carries to other scenarios.

    ``make(G, b, var, U, sigma, plan)`` builds each update (a serial :class:`GaussianUpdate`
    sharing one plan by default; the driver passes a distributed one under ``parallel =
    partition``, whose ``mean`` returns the whole state on every rank).

    ``per_scenario``, when given, receives {λ: the validation scenarios' MSE ratios}.

    Returns:
        (λ, {λ: mean over validation scenarios of the MSE ratio to the unconstrained mean},
        the largest λ under which no validation scenario got worse: a diagnostic, since test
        scenarios outside the training range take :func:`outside_prior`); λ = 1 when there is
        no validation scenario.
    """
    if not scenarios:
        return 1.0, {}, 1.0
    T, N = scenarios[0].truth.shape
    raw = np.array([mse(s.mean[:T * N].reshape(T, N), s.truth, volume) for s in scenarios])
    ratios, plan = {}, None
    for lam in candidates:
        per = []
        try:
            for s, raw_s in zip(scenarios, raw):
                scale = np.where(s.flux, lam, 1.0)
                U = None if s.U is None else s.U * np.sqrt(scale)[:, None]
                update = (make(s.rows.G, s.rows.b, s.var * scale, U, sigma, plan)
                          if make is not None else
                          GaussianUpdate(s.rows.G, s.rows.b, s.var * scale, U, sigma, plan=plan,
                                         layout=layout))
                plan = update.plan
                per.append(mse(update.mean(s.mean)[:T * N].reshape(T, N), s.truth, volume)
                           / max(raw_s, 1e-300))
                update.destroy()
        except ConstraintError:
            continue
        ratios[lam] = np.array(per)
    if plan is not None:
        plan.destroy()
    if per_scenario is not None:
        per_scenario.update(ratios)
    if not ratios:
        return 1.0, {}, 1.0
    best = min(ratios, key=lambda lam: ratios[lam].mean())
    diff = lambda lam: ratios[lam] - ratios[best]
    se = lambda lam: diff(lam).std(ddof=1) / np.sqrt(len(scenarios)) if len(scenarios) > 1 else 0.0
    chosen = max(lam for lam in ratios if diff(lam).mean() <= se(lam))
    table = {f"{lam:g}": float(r.mean()) for lam, r in ratios.items()}
    # the largest λ that made no validation scenario worse
    safe = [lam for lam in ratios if ratios[lam].max() <= 1.0]
    return float(chosen), table, float(max(safe) if safe else chosen)


def shape_scale(var: np.ndarray, shape: np.ndarray, layout, volume: np.ndarray) -> float:
    """The scalar s of a scenario's prior s · diag(shape) on a case-level shape: the ratio of the
    scenario's volume-weighted state variances (``var``, the ensemble's) to the shape's, so that
    the prior keeps the scenario's overall confidence and the case's pattern over entries."""
    T, N = layout.T, layout.N
    weigh = lambda v: float((v[:T * N].reshape(T, N) * volume).sum())
    total = weigh(shape)
    return weigh(var) / total if total > 0 else 1.0


def shaped_scenarios(scenarios: list[ValidationScenario], layout,
                     volume: np.ndarray) -> list[ValidationScenario]:
    """The validation scenarios under a case-level prior shape, left out of their own: each one's
    variances become s · (the mean of the other scenarios' variances), s of :func:`shape_scale`
    (what a test scenario gets from the mean of all of them). Empty with fewer than two."""
    if len(scenarios) < 2 or any(s.U is not None for s in scenarios):
        return []
    total = np.sum([s.var for s in scenarios], axis=0)
    out = []
    for s in scenarios:
        shape = (total - s.var) / (len(scenarios) - 1)
        out.append(ValidationScenario(s.rows, s.mean, shape_scale(s.var, shape, layout, volume)
                                      * shape, None, s.flux, s.truth))
    return out


def prefers_case_shape(scenario_ratios: np.ndarray, case_ratios: np.ndarray) -> bool:
    """Whether the case-level shape's validation MSE ratios (at its own λ) are within one
    standard error of the per-scenario variances' (at theirs), paired by scenario: the
    one-standard-error rule towards the shape, which factors G Σ Gᵀ once per case instead of once
    per scenario."""
    diff = np.asarray(case_ratios) - np.asarray(scenario_ratios)
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
    return bool(diff.mean() <= se)


OUTSIDE_INFLATION = 1e3   # flux inflation of test scenarios outside the
                          # training span (1e4 loses digits of the balance)


def outside_prior(diag: np.ndarray, layout, volume: np.ndarray, U: np.ndarray | None = None):
    """(diagonal, U = None) of the prior of a test scenario outside the training parameters' span
    (``layout``: x's StateLayout). At each output time the states' variances are spread evenly
    over the domain's volume (var_K = c_n / |K|, with the same Σ_K |K| var_K as the prior's
    marginal variances: diag plus U's row sums of squares), the fluxes' are multiplied by
    OUTSIDE_INFLATION, and there is no ensemble part.

    With the fluxes this free, the rows move the states only to fix what the exact rows pin down
    (each time's total mass where every boundary flux is known, Dirichlet values), by the
    projection that is orthogonal in the volume-weighted norm of the MSE. The driver takes that
    limit exactly (:mod:`hybrid.constraints.freeflux`; the inflation stays where it cannot: soft
    rows, and flux columns in three rows). It cannot increase a scenario's state error, since the
    solver's states
    satisfy those rows (normal-derivative rows on values, which they satisfy only to the P1
    gradient's accuracy, are the exception). Measured on heat-boon-1d's ω = 4.5 (outside
    [2.01, 3.99]): the ensemble's own variances put the mass correction where the error already
    had the other sign (MSE ×1.12 of raw)."""
    T, N = layout.T, layout.N
    marginal = diag if U is None else diag + (U ** 2).sum(axis=1)
    states = marginal[:T * N].reshape(T, N)
    density = (states * volume).sum(axis=1, keepdims=True) / volume.sum()
    out = marginal.copy()
    out[:T * N] = (density * volume.sum() / (N * volume)).ravel()
    out[T * N:] *= OUTSIDE_INFLATION
    return out, None


def defect_scale(defect: float | None, reference: list | None) -> float:
    """The factor that widens a test scenario's constrained variance when its prediction breaks
    the rows by more than the validation scenarios' did.

    The defect statistic q = rᵀ (G Σ Gᵀ)⁻¹ r / rows of the rows' residual r = G μ − b is the
    maximum-likelihood scale of Σ that the residual alone implies (r ~ N(0, s G Σ Gᵀ) when
    x ~ N(μ, s Σ) and the rows hold). It needs no solution, only the physics, so a test
    scenario has it too. The variances were calibrated on validation scenarios (inside the
    training span); a scenario whose q exceeds the largest validation q by a factor f is
    predicted worse than any of them, and its posterior covariance is scaled by f (never
    narrowed: 1 otherwise). The mean does not change (it is invariant to Σ's scale)."""
    if defect is None or not reference:
        return 1.0
    ref = max(reference)
    return float(max(1.0, defect / ref)) if ref > 0 and np.isfinite(defect) else 1.0


def within_training_span(train_params: np.ndarray, params: np.ndarray,
                         declared: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """For each scenario, whether every parameter lies within the training scenarios' range.

    The range of a parameter is the training samples' [min, max], widened to the training law's
    declared bounds where ``declared`` (low, high per column; NaN where the law is unbounded or
    unknown, see :meth:`hybrid.case.config.Case.declared_span`) gives them: a test value at the
    bound of ``uniform = [1, 5]`` is inside what training was asked to cover, even when no
    training draw happened to land within 1e-9 of it."""
    if train_params.size == 0 or params.size == 0:
        return np.ones(len(params), bool)
    low, high = training_span(train_params, declared)
    pad = 1e-9 * np.maximum(np.abs(high - low), 1e-300)
    return np.all((params >= low - pad) & (params <= high + pad), axis=1)


def training_span(train_params: np.ndarray,
                  declared: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per parameter column: the training samples' range widened to the declared
    bounds (see :func:`within_training_span`)."""
    low, high = train_params.min(axis=0), train_params.max(axis=0)
    if declared is not None:
        d_low, d_high = (np.asarray(a, float) for a in declared)
        low = np.where(np.isfinite(d_low), np.fmin(low, d_low), low)
        high = np.where(np.isfinite(d_high), np.fmax(high, d_high), high)
    return low, high
