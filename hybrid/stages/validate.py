"""``hybrid validate CASE``: every variant against the reference solver, as a report.

Reads what ``hybrid predict`` wrote (running it, and the stages before it, when their
inputs changed) and writes, in ``OUTPUT/validate/``:

``report.md``
    tables first (the ablation table of the variants, wall-clock times, the surrogate
    against the nearest-training-scenario baseline), then the figures
``metrics.json``
    the same numbers, machine-readable, with stable keys (see ``docs/metrics.md`` for
    every definition)
``*.png``
    ProbConserv's three figures on this case — total mass over time, profiles with 90%
    bands at the report time (the front region enlarged), the histogram of posterior front
    positions — plus the relative error over time per variant, and field plots on the
    mesh for 2-D cases

The scores are the ones ``hybrid predict`` computed with the family's
:meth:`~hybrid.problems.base.Problem.scores` (from :mod:`hybrid.metrics`, volume-weighted on
the mesh), read from its ``metrics.json``; the figures are the family's. Rank 0 does the work;
the other ranks wait.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from mpi4py import MPI

from hybrid.constraints.driver import main_variant, read_variants
from hybrid.files import atomic_path, commits_together, mark_stage_done, stage_is_current
from hybrid.parallel import collective, root_print
from hybrid.problems import problem_for
from hybrid.stages.predict import predict_digest, run_predict
from hybrid.stages.solve import read_dataset
from hybrid.surrogates.members import selects_time
from hybrid.surrogates.training_set import case_transfer

__all__ = ["run_validate"]


@commits_together
def run_validate(case, *, force: bool = False, comm: MPI.Comm = MPI.COMM_WORLD,
                 progress: bool = True, announce: bool = True) -> Path:
    """Write the report (collective; rank 0 works); returns the path of report.md."""
    predict_dir = run_predict(case, comm=comm, progress=progress, announce=False)
    out = Path(case.output_dir) / "validate"
    digest = predict_digest(case, "output")
    if not force and stage_is_current(out, digest, ["report.md", "metrics.json"], [predict_dir]):
        if announce:
            root_print(f"validate: up to date ({out / 'report.md'}); --force redoes it", comm=comm)
        return out / "report.md"
    with collective(comm):
        if comm.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            report, figures = _validate(case, predict_dir, out, comm.size)
            mark_stage_done(out, digest, ["report.md", "metrics.json"], [predict_dir],
                            files=sorted(figures))
            root_print(report, comm=comm)
    return out / "report.md"


def _validate(case, predict_dir: Path, out: Path, ranks: int) -> tuple[str, list[str]]:
    data = read_dataset(Path(case.output_dir) / "solve" / "dataset.h5")
    cv, _ = case_transfer(case, data)
    problem = problem_for(case)
    data = problem.view(data)
    variants, extra = read_variants(predict_dir / "variants.h5")
    predicted = json.loads((predict_dir / "metrics.json").read_text())
    scores = {name: predicted["variants"][name] for name in variants}   # scored once, by predict
    train_dir = Path(case.output_dir) / "train"
    train_stage = json.loads((train_dir / "stage.json").read_text())
    if selects_time(case):   # both main ensembles were trained: the report's training time is both
        stepping = json.loads((train_dir / "autoregressive" / "stage.json").read_text())
        train_stage["training_seconds"] = (train_stage.get("training_seconds") or 0.0) + (
            stepping.get("training_seconds") or 0.0)
    timing = {"solver_seconds_per_scenario": predicted["solver_seconds"],
              "surrogate_seconds_per_scenario": predicted["surrogate_seconds"],
              "solver_over_surrogate": (predicted["solver_seconds"]
                                        / max(predicted["surrogate_seconds"], 1e-300)),
              "training_seconds": train_stage.get("training_seconds")}
    surrogate = {k: predicted[k] for k in ("rel_l2_mean", "rel_l2_nearest_train",
                                           "nearest_over_ensemble", "coverage90", "flux_rel_l2")}
    surrogate["by_range"] = predicted.get("by_range", {})
    surrogate["time"] = predicted.get("surrogate_time", "one-shot")
    surrogate["validation_rel_l2_by_time"] = predicted.get("validation_rel_l2_by_time")
    surrogate["edge_rel_l2_by_time"] = predicted.get("edge_rel_l2_by_time")
    surrogate["edge_weight"] = predicted.get("edge_weight")
    prior = {k: predicted.get(k) for k in ("variance_scales", "coverage90_uncalibrated",
                                            "flux_inflation", "validation_mse_ratio",
                                            "flux_inflation_outside_training_span",
                                            "test_outside_training_span",
                                            "prior_inside_training_span",
                                            "baseline_calibration", "prior_shape",
                                            "posterior_scales")}
    main = (predicted.get("variants") or {}).get(main_variant(case)) or {}
    prior["defect_variance_scale"] = (main.get("defect") or {}).get("variance_scale")
    figures = []
    if case.output["figures"]:
        figures = problem.figures(case, cv, data, variants, extra, scores, out)
    metrics = {"case": case.name, "description": case.description, "ranks": ranks,
               "test_scenarios": int(data.test.u.shape[0]), "report_time": extra["report_time"],
               "front_kind": extra["front_kind"] or None,
               "variants": scores, "times": timing, "surrogate": surrogate, "prior": prior,
               "figures": [p.name for p in figures]}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    text = _report(case, metrics, figures, problem.metric_keys, problem.note(metrics["front_kind"]))
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(text)
    return (f"validate: {case.name}: report {out / 'report.md'}\n"
            + _table(scores, problem.metric_keys), metrics["figures"])


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _table(scores: dict, keys: tuple) -> str:
    head = "| variant | " + " | ".join(h for _, h, _ in keys) + " |"
    rule = "|---|" + "|".join("---:" for _ in keys) + "|"
    rows = [f"| {name} | " + " | ".join(_fmt(s.get(k), f) for k, _, f in keys) + " |"
            for name, s in scores.items()]
    return "\n".join([head, rule, *rows])


def _prior_section(prior: dict) -> list[str]:
    """The calibration of the ensemble's variances and the flux-variance inflation (both
    fitted on the validation split), as report lines."""
    scales = prior.get("variance_scales")
    if not scales:
        return []
    span = lambda v: f"{min(v):.3g}–{max(v):.3g}" if len(v) > 1 else f"{v[0]:.3g}"
    lines = ["## Prior calibration (validation split)", "",
             f"Variance scales per output time: states {span(scales['state'])}, "
             f"fluxes {span(scales['flux'])}. "
             f"Raw 90% coverage on the test scenarios: {prior['coverage90_uncalibrated']:.2f} "
             "before, the variants table's after."]
    for variant, b in (prior.get("baseline_calibration") or {}).items():
        bs = b["variance_scales"]
        lines += ["", f"The {variant} ensemble, calibrated the same way on the same scenarios: "
                  f"states {span(bs['state'])}, fluxes {span(bs['flux'])}; its 90% coverage "
                  f"{b['coverage90_uncalibrated']:.2f} before, the variants table's after."]
    if prior.get("flux_inflation") is not None:
        table = ", ".join(f"λ = {k}: {v:.3f}"
                          for k, v in (prior.get("validation_mse_ratio") or {}).items())
        lines += ["", f"Flux-variance inflation of the updates λ = {prior['flux_inflation']:g} "
                  f"(validation MSE of the main variant over the raw mean's: {table or '–'})."]
    shape = prior.get("prior_shape") or {}
    compared = shape.get("validation_mse_ratio")
    if compared:
        lam = shape["flux_inflation"]
        own = (f"with each scenario's own variances {compared['scenario']:.3f} "
               f"(λ = {lam['scenario']:g}), " if "scenario" in compared else
               "(each scenario's own variances not evaluated: the setting asks for the shape), ")
        lines += ["", f"Prior shape: {shape['chosen']} (setting {shape['setting']}). Validation "
                  f"MSE over raw {own}with one case-level shape (the validation "
                  f"scenarios' mean variances, times each scenario's scale) "
                  f"{compared['case']:.3f} (λ = {lam['case']:g})"
                  + ("; the case shape is factored once for every test scenario."
                     if shape["chosen"] == "case" else ".")]
    posterior = prior.get("posterior_scales")
    if posterior:
        factors = [f"× {span(posterior[key])} under the prior of test scenarios {where}"
                   for key, where in (("state", "inside the span"),
                                      ("state_outside", "outside it"))
                   if posterior.get(key)]
        beyond = posterior.get("test_beyond_validation_range")
        lines += ["", f"The {posterior['variant']} posterior's state variances, per output time, "
                  f"{' and '.join(factors)}: the factors at which 90% of the validation "
                  "scenarios' errors after the update fall inside its 90% interval."
                  + (f" {beyond} test scenario(s) lie beyond the validation scenarios' parameters"
                     " and take the factors only where they widen (never below 1)."
                     if beyond else "")]
    outside = prior.get("test_outside_training_span")
    if prior.get("prior_inside_training_span") == "even":
        lines += ["", "The ensemble's variances made the main variant's validation MSE worse at "
                  "every λ, so no test scenario uses them: each takes the even prior (each output "
                  "time's state variance spread evenly over the volume, the fluxes free), whose "
                  "update cannot increase its state MSE."]
    if outside:
        lines += ["", f"{outside} test scenario(s) lie outside the training parameters' span: "
                  "their prior spreads each output time's state variance evenly over the volume "
                  "and leaves the fluxes free, so the update only fixes what the exact rows pin "
                  "down (mass, Dirichlet values) by a projection that cannot increase their "
                  "state MSE."]
    widened = [f for f in prior.get("defect_variance_scale") or [] if f > 1.0]
    if prior.get("defect_variance_scale") is not None:
        lines += ["", f"Defect widening: {len(widened)} of {len(prior['defect_variance_scale'])} "
                  "test scenarios break "
                  "the main variant's rows by more than every validation scenario did (statistic "
                  "rᵀ (G Σ Gᵀ)⁻¹ r / rows); their posterior variances are widened by that factor"
                  + (f" (largest ×{max(widened):.2f})." if widened else ".")]
    return lines + [""]


def _cell_centred_dirichlet(case) -> list[str]:
    """Why the Dirichlet column is empty on cell-centred control volumes, as report lines."""
    walls = [name for name, bc in case.boundaries.items() if bc.type == "dirichlet"]
    if case.mesh.get("control_volumes") != "cells" or not walls:
        return []
    return [f"Dirichlet walls ({', '.join(walls)}) have no row here: cell-centred control "
            "volumes hold cell averages, and a Dirichlet face's recorded flux is integrated "
            "over each output interval, so it ties the boundary value to the cell averages only "
            "in between the output times: no linear row of the prediction equals the boundary "
            "value. With `[mesh] control_volumes = \"dual\"` (the default) the "
            "boundary vertices are unknowns and per-cell + boundary meets their values "
            "exactly.", ""]


def _time_line(s: dict) -> str:
    """How the ensemble's members treat time, and under ``time = "select"`` what chose it."""
    kind = {"one-shot": "one-shot (every output time from the initial state at once)",
            "autoregressive": "autoregressive (one step t_n → t_(n+1), rolled out from the initial "
                              "state)"}
    line = f"Members: {kind.get(s.get('time', 'one-shot'), s.get('time'))}"
    scores = s.get("validation_rel_l2_by_time")
    if scores:
        line += (", chosen by the validation scenarios (mean relative L2 "
                 + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()) + ")")
    edge = s.get("edge_rel_l2_by_time")
    if edge:
        line += (" and by edge probes, members fitted inside a cut of the training span and "
                 "scored beyond it, as far as the test leaves the span (relative L2 "
                 + ", ".join(f"{k} {v:.4f}" for k, v in edge.items())
                 + f", weight {s.get('edge_weight') or 0:.2f}, the test scenarios outside)")
    return line + "."


def _report(case, m: dict, figures: list[Path], keys: tuple, note: str) -> str:
    """The report; ``keys`` and ``note``: the variants table's columns and what they mean
    (default: the scalar cases')."""
    t, s = m["times"], m["surrogate"]
    lines = [f"# {case.name}: surrogate variants against the reference solver", "",
             f"{m['description']}  ",
             f"{m['test_scenarios']} test scenarios, report time t = {m['report_time']:g}, "
             f"{m['ranks']} MPI rank(s), written "
             f"{datetime.datetime.now().isoformat(timespec='seconds')}.", "",
             "## Variants", "", _table(m["variants"], keys), "", note, "",
             *_cell_centred_dirichlet(case),
             "## Wall-clock time per test scenario", "",
             "| solver s | surrogate s | solver / surrogate | training s (all members) |",
             "|---:|---:|---:|---:|",
             f"| {t['solver_seconds_per_scenario']:.3g} | "
             f"{t['surrogate_seconds_per_scenario']:.3g} | "
             f"{t['solver_over_surrogate']:.0f} | {_fmt(t['training_seconds'], '.0f')} |", "",
             "The constraint update's time per scenario is the variants table's last column.", "",
             "## Surrogate against the nearest training scenario", "",
             "| test scenarios | ensemble rel. L2 | nearest-training rel. L2 | ratio "
             "| 90% coverage | flux rel. L2 |",
             "|---|---:|---:|---:|---:|---:|",
             f"| all ({m['test_scenarios']}) | {s['rel_l2_mean']:.4f} | "
             f"{s['rel_l2_nearest_train']:.4f} | "
             f"{_fmt(s['nearest_over_ensemble'], '.2f')} | "
             f"{s['coverage90']:.2f} | {s['flux_rel_l2']:.4f} |"]
    for label, title in (("in_range", "parameters inside the training span"),
                         ("out_of_range", "parameters outside it (extrapolation)")):
        r = (s.get("by_range") or {}).get(label)
        if r and len(s["by_range"]) > 1:
            lines.append(f"| {title} ({r['scenarios']}) | {r['rel_l2_mean']:.4f} | "
                         f"{r['rel_l2_nearest_train']:.4f} | "
                         f"{_fmt(r['nearest_over_ensemble'], '.2f')} | {r['coverage90']:.2f} | – |")
    lines += ["", _time_line(s), ""]
    lines += _prior_section(m.get("prior") or {})
    if figures:
        lines += ["## Figures", ""]
        for p in figures:
            lines += [f"![{p.stem}]({p.name})", ""]
    return "\n".join(lines)
