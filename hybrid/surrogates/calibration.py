"""Calibration of the ensemble's variances on the validation split, before the update.

The Gaussian update trusts whichever block of the state, values u or face fluxes Φ, claims
the smaller variance, so the two blocks' variances must be right relative to each other as
well as in size. The ensemble's raw spread is not: members trained from one data set agree
more than their errors warrant, and by different factors for states and fluxes.

For each block and output time n the prior covariance Σ is scaled by the factor s_n at which
90% of the validation scenarios' errors (scenarios no member trained on; never the test
scenarios) fall inside the central 90% interval:

    s_n = (q_0.9(|truth − mean| / √var) / 1.645)²

For Gaussian errors this is the likelihood's maximiser, mean((truth − mean)² / var), in
expectation; the surrogates' errors are heavy-tailed (a front a cell off), where the
likelihood's scale is set by the tail and over-covers the rest (measured on stefan-1d: 0.99
of the test values inside the 90% interval). The ensemble's deviations are scaled by √s_n,
so the variance, the low-rank ensemble covariance and the samples stay consistent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybrid.metrics import coverage, coverage_scale
from hybrid.surrogates.data import split_indices
from hybrid.surrogates.ensemble import predict_ensemble

__all__ = ["VarianceScales", "fit_scales", "apply_scales", "calibrate_on_validation",
           "calibrated"]

RELATIVE_FLOOR = 1e-8   # variances below this × their block's mean are floored before the fit


@dataclass(frozen=True)
class VarianceScales:
    """Scale of the states' and of the fluxes' variances at each output time t_1..t_T."""

    state: np.ndarray
    flux: np.ndarray

    def as_dict(self) -> dict:
        """The scales as lists of floats by block (``state``, ``flux``), for ``metrics.json``."""
        return {"state": [float(v) for v in self.state], "flux": [float(v) for v in self.flux]}


def fit_scales(truth_u: np.ndarray, pred_u: dict, truth_flux: np.ndarray,
               pred_flux: dict) -> VarianceScales:
    """Fit the scales on validation scenarios.

    Args:
        truth_u: solver states (S, T+1, N); t = 0 (the given state) is not fitted.
        pred_u: the ensemble's ``mean`` and ``var`` of the states, each (S, T+1, N).
        truth_flux: solver face fluxes (S, T, F).
        pred_flux: the ensemble's ``mean`` and ``var`` of the fluxes, each (S, T, F).

    Returns:
        The scales, T values per block.
    """
    states = coverage_scale(truth_u[:, 1:], pred_u["mean"][:, 1:], pred_u["var"][:, 1:],
                            RELATIVE_FLOOR)
    return VarianceScales(states,
                          coverage_scale(truth_flux, pred_flux["mean"], pred_flux["var"],
                                         RELATIVE_FLOOR))


def apply_scales(pred: dict, scales: VarianceScales) -> dict:
    """A prediction (an :class:`~hybrid.surrogates.ensemble.EnsemblePrediction`, or its arrays
    ``u_mean u_var u_dev flux_mean flux_var flux_dev`` by name) with its variances scaled and
    its deviations scaled by the square roots; the same kind as given."""
    su = np.concatenate([[1.0], scales.state])[None, :, None]   # t = 0 is given: variance 0 stays 0
    sf = scales.flux[None, :, None]
    scaled = {"u_var": pred["u_var"] * su, "flux_var": pred["flux_var"] * sf,
              "u_dev": pred["u_dev"] * np.sqrt(su)[:, None],
              "flux_dev": pred["flux_dev"] * np.sqrt(sf)[:, None]}
    return pred.replace(**scaled) if hasattr(pred, "replace") else {**pred, **scaled}


def calibrate_on_validation(case, members: dict, M: int, transfer, cv, data, comm,
                            boon_case=None):
    """The ensemble's variance scales fitted on the case's validation split (the training
    scenarios no member fitted: :func:`hybrid.surrogates.data.split_indices`), and those
    scenarios with their calibrated prediction (``{"split", "pred"}``, what the constraint
    driver chooses λ on). Collective (every rank infers its members); the result is on rank 0,
    (None, None) elsewhere, and everywhere when ``[constraints] calibrate`` is off or there is
    no validation scenario. ``boon_case``: the members are BOON networks
    (:func:`~hybrid.surrogates.ensemble.predict_ensemble`)."""
    if not case.constraints["calibrate"]:
        return None, None
    _, val_idx = split_indices(case, data.train.u.shape[0])
    if not len(val_idx):
        return None, None
    view = data.train.take(val_idx)
    val_pred, _ = predict_ensemble(members, M, transfer, cv, data.with_splits(test=view), comm,
                                   boon_case=boon_case, warm=False)
    if comm.rank != 0:
        return None, None
    scales = fit_scales(view.u, {"mean": val_pred["u_mean"], "var": val_pred["u_var"]},
                        view.flux, {"mean": val_pred["flux_mean"], "var": val_pred["flux_var"]})
    return scales, {"split": view, "pred": apply_scales(val_pred, scales)}


def calibrated(pred, scales: VarianceScales | None, truth_u: np.ndarray):
    """(the prediction with ``scales`` applied, the 90% coverage of ``truth_u`` (S, T+1, N) by
    its uncalibrated variances; t = 0 is not scored); (pred, None) when ``scales`` is None."""
    if scales is None:
        return pred, None
    before = coverage(pred["u_mean"][:, 1:], np.maximum(pred["u_var"][:, 1:], 1e-300),
                      truth_u[:, 1:])
    return apply_scales(pred, scales), before
