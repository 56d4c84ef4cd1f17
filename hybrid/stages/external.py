"""``hybrid constrain CASE --prediction FILE --name NAME``: the coupling layer for any model.

FILE (HDF5) holds another model's prediction of the case's test scenarios, in the dataset's
order: ``u_mean`` and ``u_var`` (S, T+1, N) on the control volumes, t = 0 the given initial
state (variance 0); optionally ``flux_mean`` and ``flux_var`` (S, T, F), the face fluxes
integrated over each output interval, and members' deviations ``u_dev`` (S, M, T+1, N) and
``flux_dev`` (S, M, T, F) for the ensemble covariances.

With fluxes, every variant of ``[constraints] compare`` runs through the same driver as
``hybrid predict``'s. Without them, each variant imposes what its rows say about the states
alone (:mod:`hybrid.constraints.eliminate`): boundary values and derivatives exactly, and
conservation only as the balance of each connected piece of the mesh whose boundary fluxes
are all data; per-cell balance needs fluxes, so without them ``per-cell`` keeps only that sum.
HardC (a projection of the fluxes too) and the ensembles that ``hybrid`` trains (SoftC,
BOON) do not apply. The raw variant is the file's prediction as it is; the model's variances
are used as given (there is no validation prediction to calibrate them on).

Writes ``results/external/NAME/``: ``variants.h5``, ``metrics.json`` (validate's keys),
``report.md`` with figures, and the ParaView series in ``export/``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import h5py
import numpy as np
from mpi4py import MPI

from hybrid.constraints.eliminate import states_only
from hybrid.constraints.rows import ConstraintRows, StateLayout
from hybrid.constraints.update import GaussianUpdate
from hybrid.constraints.variants import (boundary_rows, prediction_covariance, variant_rhs,
                                         variant_rows)
from hybrid.errors import CaseError
from hybrid.files import (atomic_path, commit_pending, commits_together, file_digest,
                          mark_stage_done, stage_is_current)
from hybrid.dataset import scenario_parameters
from hybrid.parallel import collective, root_print
from hybrid.petsc_options import UPDATE_PREFIX, petsc_options
from hybrid.problems import problem_for
from hybrid.case.sections import SOLVE_SECTIONS
from hybrid.stages.solve import read_dataset, run_solve

__all__ = ["run_constrain", "read_prediction", "check_prediction", "constrain_arrays"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
OUTPUTS = ("variants.h5", "metrics.json", "report.md")
STATE_VARIANTS = ("raw", "global", "per-cell", "per-cell+boundary")   # those that apply
                                                                      # without fluxes
FLUX_VARIANTS = ("raw", "hardc", "global", "per-cell", "per-cell+boundary")
PREDICTION_ARRAYS = ("u_mean", "u_var", "flux_mean", "flux_var", "u_dev", "flux_dev")


def read_prediction(path: Path, S: int, T1: int, N: int, F: int) -> dict:
    """The arrays of FILE, checked by :func:`check_prediction`."""
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise CaseError(f"cannot read the prediction: {error}", file=str(path),
                        key="--prediction") from None
    with f:
        arrays = {name: f[name][()] for name in PREDICTION_ARRAYS if name in f}
        found = sorted(f)
    return check_prediction(arrays, str(path), S, T1, N, F, found)


def check_prediction(arrays: dict, where: str, S: int, T1: int, N: int, F: int,
                     found: list | None = None) -> dict:
    """The prediction's arrays as float64, checked: u_mean and u_var present, fluxes both or
    neither, every shape the case's (S test scenarios, T+1 times, N control volumes, F faces),
    finite values, variances ≥ 0. Raises :class:`CaseError` naming ``where`` and the array."""
    shapes = {"u_mean": (S, T1, N), "u_var": (S, T1, N), "flux_mean": (S, T1 - 1, F),
              "flux_var": (S, T1 - 1, F)}
    for name in ("u_mean", "u_var"):
        if name not in arrays:
            listed = ", ".join(found if found is not None else sorted(arrays)) or "nothing"
            raise CaseError(f"has no dataset {name!r} (found: {listed}); expected u_mean and "
                            f"u_var of shape (S, T+1, N) = {shapes[name]}", file=where, key=name)
    fluxes = "flux_mean" in arrays or "flux_var" in arrays
    if fluxes and not ("flux_mean" in arrays and "flux_var" in arrays):
        raise CaseError("has one of flux_mean and flux_var but not both", file=where,
                        key="flux_mean" if "flux_mean" not in arrays else "flux_var")
    pred = {}
    for name in PREDICTION_ARRAYS:
        if name not in arrays:
            continue
        values = np.asarray(arrays[name])
        expected = shapes.get(name)
        if name in ("u_dev", "flux_dev"):
            members = values.shape[1] if values.ndim == 4 else -1
            expected = (S, members, T1, N) if name == "u_dev" else (S, members, T1 - 1, F)
        if values.shape != expected:
            count = (f"{values.shape[0]} scenarios, the case has {S} test scenarios"
                     if values.ndim and values.shape[0] != S else f"the case needs {expected}")
            raise CaseError(f"has shape {values.shape}: {count} (S test scenarios, T+1 = {T1} "
                            f"output times with t = 0, N = {N} control volumes, F = {F} faces)",
                            file=where, key=name)
        if not np.all(np.isfinite(values)):
            raise CaseError(f"has {int(np.count_nonzero(~np.isfinite(values)))} values that are "
                            "not finite", file=where, key=name)
        if name.endswith("_var") and values.min() < 0:
            raise CaseError(f"has negative variances (smallest {values.min():.3g})", file=where,
                            key=name)
        pred[name] = values.astype(np.float64)
    if (("flux_dev" in pred and "u_dev" not in pred)
            or ("u_dev" in pred and fluxes and "flux_dev" not in pred)):
        raise CaseError("member deviations need both u_dev and flux_dev", file=where, key="u_dev")
    return pred


def constrain_arrays(case, arrays: dict, variant: str = "per-cell+boundary") -> dict:
    """In memory: one variant of a prediction of the case's test scenarios (the arrays of
    FILE, as for ``hybrid constrain``), after ``hybrid solve``. Returns ``u_mean``, ``u_var``
    (S, T+1, N) and ``flux_mean`` (S, T, F), and ``residual``, the rows' largest relative
    residual. Serial; every rank that calls it computes the same."""
    data = read_dataset(Path(case.output_dir) / "solve" / "dataset.h5")
    cv = data.cv
    test, times = data.test, data.times
    S, T1, N = test.u.shape
    pred = check_prediction(arrays, "the prediction", S, T1, N, cv.num_faces)
    fluxes = "flux_mean" in pred
    allowed = FLUX_VARIANTS if fluxes else STATE_VARIANTS
    if variant not in allowed:
        raise CaseError(f"variant {variant!r} does not apply to a prediction "
                        f"{'with' if fluxes else 'without'} fluxes; allowed: {', '.join(allowed)}",
                        key="variant")
    layout = StateLayout(N, cv.num_faces, T1 - 1)
    boundary = [boundary_rows(case, cv, layout, times, scenario_parameters(test, i))
                for i in range(S)]
    rs = _variant(case, cv, layout, test, pred, variant, fluxes, boundary)
    out = _as_arrays(rs)
    out.pop("u_samples")
    out["residual"] = max((r[3] for r in rs if r[3] is not None), default=0.0)
    return out


@commits_together
def run_constrain(case, prediction: str | Path, name: str, *, force: bool = False,
                  comm: MPI.Comm = MPI.COMM_WORLD, progress: bool = True) -> Path:
    """Constrain FILE's prediction (collective; rank 0 does the work); returns the folder."""
    if not NAME.match(name or ""):
        raise CaseError(f"{name!r} is not a folder name (letters, digits, '_', '.', '-')",
                        key="--name")
    prediction = Path(prediction).resolve()
    if not prediction.is_file():
        raise CaseError("does not exist", file=str(prediction), key="--prediction")
    dataset = run_solve(case, comm=comm, progress=progress, announce=False)
    out = Path(case.output_dir) / "external" / name
    digest = f"{case.hash(*SOLVE_SECTIONS, 'constraints')}+{file_digest(prediction)}"
    if not force and stage_is_current(out, digest, list(OUTPUTS), [Path(dataset).parent]):
        root_print(f"constrain: up to date ({out}); --force redoes it", comm=comm)
        return out
    with collective(comm):
        if comm.rank == 0:
            with petsc_options(UPDATE_PREFIX, case.constraints.get("petsc_options") or {},
                               key="constraints.petsc_options", file=str(case.display_file)):
                _constrain_on_root(case, dataset, prediction, out, digest)
    with collective(comm):   # the series are made from variants.h5: in place first
        commit_pending()
    from hybrid.stages.export import run_export
    run_export(case, force=True, comm=comm, progress=progress, variants_file=out / "variants.h5",
               out=out / "export", digest=digest)
    return out


def _constrain_on_root(case, dataset: Path, prediction: Path, out: Path, digest: str) -> None:
    data = read_dataset(dataset)
    if not problem_for(case).external_predictions:
        raise CaseError("hybrid constrain takes scalar cases (a velocity's prediction is not "
                        "supported yet)", file=str(case.display_file), key="pde.family")
    cv = data.cv
    test, times = data.test, data.times
    S, T1, N = test.u.shape
    layout = StateLayout(N, cv.num_faces, T1 - 1)
    pred = read_prediction(prediction, S, T1, N, cv.num_faces)
    if not np.allclose(pred["u_mean"][:, 0], test.u[:, 0], rtol=1e-12,
                       atol=1e-12 * np.abs(test.u).max()):
        raise CaseError("u_mean at t = 0 is not the test scenarios' initial states (are the "
                        "scenarios in the dataset's order?)", file=str(prediction), key="u_mean")
    fluxes = "flux_mean" in pred
    wanted = [v for v in ["raw", *case.constraints["compare"]]
              if v in (FLUX_VARIANTS if fluxes else STATE_VARIANTS)]
    wanted = list(dict.fromkeys(wanted))
    skipped = [v for v in case.constraints["compare"] if v not in wanted]
    params = [scenario_parameters(test, i) for i in range(S)]
    boundary = [boundary_rows(case, cv, layout, times, params[i]) for i in range(S)]
    results, seconds = {}, {}
    for variant in wanted:
        start = time.perf_counter()
        results[variant] = _variant(case, cv, layout, test, pred, variant, fluxes, boundary)
        seconds[variant] = (time.perf_counter() - start) / S
    scored = [boundary_rows(case, cv, layout, times, params[i], derivative_rows=True)
              for i in range(S)]
    scores = {v: _scores(cv, test, layout, scored, rs, fluxes, seconds[v])
              for v, rs in results.items()}
    with atomic_path(out / "variants.h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["report_time"] = float(times[-1])
            f.attrs["prediction"] = str(prediction)
            for variant, rs in results.items():
                f[f"{variant}/u_mean"] = np.stack([r[0] for r in rs])
                f[f"{variant}/u_var"] = np.stack([r[1] for r in rs])
                f[f"{variant}/flux_mean"] = np.stack([r[2] for r in rs])
                f[f"{variant}/u_samples"] = np.zeros((S, 0, N))
    metrics = {"case": case.name, "description": case.description, "ranks": 1, "test_scenarios": S,
               "report_time": float(times[-1]), "front_kind": None, "variants": scores,
               "prediction": {"file": str(prediction), "sha256": file_digest(prediction),
                              "fluxes": fluxes,
                              "members": int(pred["u_dev"].shape[1]) if "u_dev" in pred else None,
                              "skipped_variants": skipped},
               "times": {"solver_seconds_per_scenario": float(np.mean(test.solve_seconds)),
                         "surrogate_seconds_per_scenario": None, "solver_over_surrogate": None,
                         "training_seconds": None}}
    from hybrid.validation.scores import score_prediction   # validate's surrogate keys, for
                                                            # this prediction
    given = score_prediction(data, cv, pred["u_mean"], pred["u_var"],
                             pred["flux_mean"] if fluxes else np.zeros_like(test.flux), np.zeros(S),
                             case.declared_span(data.train.parameter_names))
    metrics["surrogate"] = {k: given[k] for k in ("rel_l2_mean", "rel_l2_nearest_train",
                                                  "nearest_over_ensemble", "coverage90",
                                                  "flux_rel_l2", "by_range")}
    if not fluxes:
        metrics["surrogate"]["flux_rel_l2"] = None
    # the model's variances, as given
    metrics["prior"] = {k: None for k in ("variance_scales", "coverage90_uncalibrated",
                                          "flux_inflation", "validation_mse_ratio")}
    figures = []
    if case.output["figures"]:
        extra = {"front_true": None, "front_kind": "", "report_time": float(times[-1])}
        figures = problem_for(case).figures(case, cv, data,
                                            {v: _as_arrays(rs) for v, rs in results.items()},
                                            extra, scores, out)
    metrics["figures"] = [p.name for p in figures]
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(_report(case, metrics, figures))
    mark_stage_done(out, digest, OUTPUTS, [Path(dataset).parent], prediction=str(prediction),
                    fluxes=fluxes)
    from hybrid.stages.validate import _table
    print(f"constrain: {case.name}: {prediction.name} -> {out / 'report.md'}"
          + ("" if fluxes else " (no fluxes in the file: states-only rows)") + "\n"
          + _table(scores, problem_for(case).metric_keys),
          flush=True)


def _as_arrays(rs) -> dict:
    return {"u_mean": np.stack([r[0] for r in rs]), "u_var": np.stack([r[1] for r in rs]),
            "flux_mean": np.stack([r[2] for r in rs]),
            "u_samples": np.zeros((len(rs), 0, rs[0][0].shape[1]))}


def _variant(case, cv, layout, test, pred, variant: str, fluxes: bool, boundary: list) -> list:
    """:func:`_one` for every test scenario: the variant's G built once (only b changes between
    scenarios, :func:`~hybrid.constraints.variants.variant_rhs`) and one update plan shared."""
    plans, built, out = {}, None, []
    for i in range(test.u.shape[0]):
        rows = None
        if variant != "raw":
            u0, source = test.u[i, 0], test.source[i]
            rows = (variant_rows(variant, cv, layout, u0, source, boundary[i]) if built is None else
                    ConstraintRows(built.G,
                                   variant_rhs(variant, cv, layout, u0, source, boundary[i]),
                                   built.kind))
            built = built or rows
        out.append(_one(case, cv, layout, pred, i, variant, fluxes, rows, plans))
    for plan in plans.values():
        plan.destroy()
    return out


def _one(case, cv, layout, pred, i, variant, fluxes, rows, plans: dict):
    """(u (T+1, N), var (T+1, N), flux (T, F), rows' largest residual) of scenario i under the
    variant's ``rows`` (None: raw); ``plans`` holds the variant's update plan across scenarios."""
    T, N = layout.T, layout.N
    u, var = pred["u_mean"][i].copy(), pred["u_var"][i].copy()
    flux = pred["flux_mean"][i].copy() if fluxes else np.zeros((T, cv.num_faces))
    if rows is None:
        return u, var, flux, None
    covariance = case.constraints["covariance"]
    if fluxes:
        mean = layout.pack(u[1:], flux)
        var_x = layout.pack(var[1:], pred["flux_var"][i])
        dev = None
        if "u_dev" in pred:
            dev = np.stack([layout.pack(pred["u_dev"][i, m, 1:], pred["flux_dev"][i, m])
                            for m in range(pred["u_dev"].shape[1])])
        sigma_layout = layout
    else:
        rows = states_only(rows, layout)
        mean, var_x = u[1:].reshape(-1), var[1:].reshape(-1)
        dev = (pred["u_dev"][i][:, 1:].reshape(pred["u_dev"].shape[1], -1) if "u_dev" in pred
               else None)
        sigma_layout = StateLayout(N, 0, T)
    if not rows.count:
        return u, var, flux, 0.0
    if variant == "hardc":
        diag, U = np.ones_like(var_x), None
    else:
        diag, U = prediction_covariance(var_x, dev, covariance if dev is not None else "diagonal")
    update = GaussianUpdate(rows.G, rows.b, diag, U, float(case.constraints["sigma"]),
                            plan=plans.get(variant), layout=sigma_layout)
    plans[variant] = update.plan
    m, v, _ = update.posterior(mean, 0, int(case.seed) * 1000 + i, entries=slice(0, T * N))
    update.destroy()
    residual = float(np.abs(rows.G @ m - rows.b).max()
                     / max(np.abs(rows.b).max(), np.abs(m).max(), 1e-300))
    u[1:] = m[:T * N].reshape(T, N)
    var[1:] = var[1:] if variant == "hardc" else np.maximum(v.reshape(T, N), 0.0)
    if fluxes:
        flux = m[T * N:].reshape(T, cv.num_faces)
    return u, var, flux, residual


def _scores(cv, test, layout, scored: list, rs, fluxes: bool, seconds: float) -> dict:
    """The metrics validate gives one variant (the balance residual only where there are fluxes)."""
    from hybrid.validation.scores import variant_scores

    u, var, flux = (np.stack([r[k] for r in rs]) for k in range(3))
    out = variant_scores(cv, {"test": test}, layout, scored, u, var, flux)
    if not fluxes:
        out["max_balance_residual"] = None   # no fluxes: a control volume's balance cannot
        out["neumann_flux_error"] = None     # be measured, nor a boundary face's flux
    residuals = [r[3] for r in rs if r[3] is not None]
    out.update(update_seconds=seconds, mean_update_seconds=None, update_phases={},
               row_residual={"rows": max(residuals)} if residuals else {}, front_error=None,
               front_std=None)
    return out


def _report(case, metrics: dict, figures: list[Path]) -> str:
    from hybrid.stages.validate import _table

    p = metrics["prediction"]
    what = ("face fluxes given: every variant as in hybrid predict" if p["fluxes"] else
            "no face fluxes in the file: each variant imposes what its rows say about the states "
            "alone (boundary values and derivatives exactly; conservation as the balance of each "
            "connected piece of the mesh whose boundary fluxes are all data; per-cell balance "
            "itself needs fluxes)")
    lines = [f"# {case.name}: an external prediction against the reference solver", "",
             f"Prediction: `{p['file']}` (sha256 {p['sha256'][:16]}…); {what}.", "",
             f"{metrics['test_scenarios']} test scenarios, report time "
             f"t = {metrics['report_time']:g}."
             + (f" Not applicable here: {', '.join(p['skipped_variants'])}."
                if p["skipped_variants"] else ""), "",
             "## Variants", "", _table(metrics["variants"], problem_for(case).metric_keys), ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{f.stem}]({f.name})\n" for f in figures]
    return "\n".join(lines)

