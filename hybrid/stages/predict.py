"""``hybrid predict CASE``: the ensemble's predictions for every test scenario, on the mesh.

Each rank predicts with its own members; rank 0 combines them into the predictive mean,
the per-entry variance over members and the members' deviations from the mean (the
low-rank factor U of the ensemble covariance U Uᵀ / (M - 1)), for the control-volume
states and the face fluxes, and writes ``OUTPUT/predict/predictions.h5``:

``u_mean`` (S, T+1, N), ``u_var``, ``u_dev`` (S, M, T+1, N); ``flux_mean`` (S, T, F)
(time-integrated face fluxes Φ, like the solver's), ``flux_var``, ``flux_dev``
(S, M, T, F); ``solver_seconds`` and ``surrogate_seconds`` (S,) for the same scenarios.

It also scores the raw ensemble against the solver (``metrics.json``): relative L2 of
the mean, the nearest-training-scenario baseline (the solver trajectory of the training
scenario closest in parameters and initial state), the fraction of values inside the
90% predictive interval, and the relative L2 of the face fluxes.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from mpi4py import MPI

from hybrid.errors import CaseError
from hybrid.files import atomic_path, commits_together, mark_stage_done, stage_is_current
from hybrid.parallel import collective, my_indices, root_print
from hybrid.petsc_options import UPDATE_PREFIX, petsc_options
from hybrid.stages.solve import read_dataset
from hybrid.problems import problem_for
from hybrid.case.sections import TRAIN_SECTIONS
from hybrid.stages.train import run_train
from hybrid.surrogates.members import (baseline_ensembles, chosen_members, ensemble_folders,
                                       load_members, softc_weight, wants_softc)
from hybrid.surrogates.training_set import case_transfer
from hybrid.surrogates.calibration import calibrate_on_validation, calibrated
from hybrid.surrogates.ensemble import predict_ensemble
from hybrid.validation.scores import nearest_training_baseline, score_prediction

__all__ = ["run_predict", "nearest_training_baseline", "PREDICT_SECTIONS", "predict_digest"]

PREDICT_SECTIONS = TRAIN_SECTIONS + ("constraints",)
PREDICT_OUTPUTS = ("predictions.h5", "metrics.json", "variants.h5")   # what predict's stage.json
                                                                      # vouches for
PREDICT_FORMAT = 4   # raise when metrics.json / variants.h5 change shape, so older results are
                     # redone

def predict_digest(case, *extra_sections: str) -> str:
    """The hash of what the predictions depend on: the sections predict reads (and any a later
    stage adds), plus the SoftC ensemble's weight, which is in no section when it is the default."""
    return (case.hash(*PREDICT_SECTIONS, *extra_sections) + f"+format{PREDICT_FORMAT}"
            + (f"+softc{softc_weight(case):g}" if wants_softc(case) else ""))


@commits_together
def run_predict(case, *, force: bool = False, comm: MPI.Comm = MPI.COMM_WORLD,
                progress: bool = True, announce: bool = True) -> Path:
    """Run the predict stage (training the ensemble first where needed); returns the predict
    directory. Collective. The ensemble's predictions of the test scenarios, calibrated on the
    validation scenarios where ``[constraints] calibrate`` asks, and those of the ensembles the
    case compares against go to ``predictions.h5``, the constraint variants to ``variants.h5``,
    the scores of both to ``metrics.json``. A case without test scenarios raises CaseError."""
    if int(case.data["test"]) < 1:   # refused before the solve and the training, not after them
        raise CaseError("predict needs at least 1 test scenario (found 0)",
                        file=str(case.display_file), key="data.test")
    train_dir = run_train(case, comm=comm, progress=progress, announce=False)
    out = Path(case.output_dir) / "predict"
    digest = predict_digest(case)
    inputs = [Path(case.output_dir) / "solve", *ensemble_folders(case, train_dir)]
    if not force and stage_is_current(out, digest, list(PREDICT_OUTPUTS), inputs):
        if announce:
            root_print(f"predict: up to date ({out}); --force redoes it", comm=comm)
        return out
    data = read_dataset(Path(case.output_dir) / "solve" / "dataset.h5")
    cv, transfer = case_transfer(case, data)
    data = problem_for(case).view(data)   # a vector family: velocities flattened to (S, T+1, d N)
    test = data.test
    M = int(case.surrogate["members"])
    chosen = chosen_members(case, train_dir)
    members = load_members(chosen.folder, M, my_indices(M, comm), chosen.digest)
    pred, surrogate_seconds = predict_ensemble(members, M, transfer, cv, data, comm)
    with collective(comm):   # before the calibration and the update, which would blame their
                             # own maths
        if comm.rank == 0:
            _check_finite_prediction(case, pred, train_dir)
    scales, validation = calibrate_on_validation(case, members, M, transfer, cv, data, comm)
    pred, uncalibrated = calibrated(pred, scales, test.u)
    extra = {}   # the ensembles the case compares against, calibrated as the main one
    baseline_calibration = {}
    for b in baseline_ensembles(case):
        members = load_members(train_dir / b.variant, M, my_indices(M, comm),
                               case.hash(*TRAIN_SECTIONS) + b.suffix)
        boon_case = case if b.boon else None
        extra[b.variant] = predict_ensemble(members, M, transfer, cv, data, comm,
                                            boon_case=boon_case)[0]
        b_scales, _ = calibrate_on_validation(case, members, M, transfer, cv, data, comm,
                                              boon_case=boon_case)
        extra[b.variant], before = calibrated(extra[b.variant], b_scales, test.u)
        if b_scales is not None:
            baseline_calibration[b.variant] = {"variance_scales": b_scales.as_dict(),
                                               "coverage90_uncalibrated": before}
    metrics = None
    with collective(comm):   # a write that fails on rank 0 fails on every rank
        if comm.rank == 0:
            with atomic_path(out / "predictions.h5") as tmp:
                with h5py.File(tmp, "w") as f:
                    f.attrs["members"] = M
                    f["times"] = data.times
                    for name, arr in (*pred.items(), ("solver_seconds", test.solve_seconds),
                                      ("surrogate_seconds", surrogate_seconds)):
                        f[name] = arr
                    for flavour, values in extra.items():
                        for name, arr in values.items():
                            f[f"{flavour}/{name}"] = arr
            metrics = score_prediction(data, cv, pred["u_mean"], pred["u_var"], pred["flux_mean"],
                                       surrogate_seconds,
                                       case.declared_span(data.train.parameter_names))
            metrics["surrogate_time"] = chosen.time
            metrics["validation_rel_l2_by_time"] = chosen.validation
            metrics["edge_rel_l2_by_time"] = chosen.edge
            metrics["edge_weight"] = chosen.edge_weight if chosen.edge else None
            metrics["variance_scales"] = None if scales is None else scales.as_dict()
            metrics["coverage90_uncalibrated"] = uncalibrated
            metrics["baseline_calibration"] = baseline_calibration or None
    with collective(comm):
        from hybrid.constraints.driver import run_variants
        with petsc_options(UPDATE_PREFIX, case.constraints.get("petsc_options") or {},
                           key="constraints.petsc_options", file=str(case.display_file)):
            found = run_variants(case, cv, data, pred, out / "variants.h5", comm, extra=extra,
                                 validation=validation)
        variants, selection = found if found is not None else (None, None)
        if comm.rank == 0:
            metrics["variants"] = variants
            metrics.update(selection)
            with atomic_path(out / "metrics.json") as tmp:
                tmp.write_text(json.dumps(metrics, indent=2) + "\n")
            mark_stage_done(out, digest, PREDICT_OUTPUTS, inputs,
                            **{k: v for k, v in metrics.items() if not isinstance(v, (list, dict))})
            root_print(f"predict: {case.name}: ensemble mean relative L2 "
                       f"{metrics['rel_l2_mean']:.4f} vs "
                       f"{_nearest_text(metrics)}; 90% interval coverage "
                       f"{metrics['coverage90']:.2f}; flux relative L2 "
                       f"{metrics['flux_rel_l2']:.4f}; surrogate "
                       f"{metrics['surrogate_seconds']:.3g} s vs solver "
                       f"{metrics['solver_seconds']:.3g} s per scenario",
                       comm=comm)
            root_print(_variants_table(case.name, metrics["variants"],
                                       problem_for(case).table_columns),
                       comm=comm)
    return out


def _variants_table(name: str, variants: dict, columns: tuple) -> str:
    cell = lambda value, width, spec: (f"{'–':>{width}s}" if value is None
                                       else f"{value:{width}{spec}}")
    lines = [f"predict: {name}: constraint variants (test scenarios)",
             f"  {'variant':18s} " + " ".join(f"{head:>{width}s}" for _, head, width, _ in columns)]
    for v, m in variants.items():
        lines.append(f"  {v:18s} " + " ".join(cell(m[key], width, spec)
                                              for key, _, width, spec in columns))
    return "\n".join(lines)


def _check_finite_prediction(case, pred: dict, train_dir: Path) -> None:
    """NaN or inf in the ensemble's prediction (members trained into overflow, or weights damaged)
    is named here, not later as a singular G Σ Gᵀ or a failed calibration."""
    for name in ("u_mean", "u_var", "flux_mean", "flux_var"):
        bad = ~np.isfinite(pred[name])
        if bad.any():
            scenario = int(np.argwhere(bad)[0][0])
            raise CaseError(f"the ensemble's {name} is not finite ({int(bad.sum())} values, first "
                            f"in test scenario {scenario}): the members in {train_dir} give NaN or "
                            "inf; lower [surrogate] lr and run hybrid train --force",
                            file=str(case.display_file), key="surrogate")


def _nearest_text(metrics: dict) -> str:
    if metrics["nearest_over_ensemble"] is None:
        return ("nearest training scenario: none to compare with (every test scenario repeats a "
                "training one's parameters and initial state)")
    return (f"nearest training scenario {metrics['rel_l2_nearest_train']:.4f} "
            f"(ratio {metrics['nearest_over_ensemble']:.2f}x)")
