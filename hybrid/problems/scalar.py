"""The scalar families (gpme, burgers, wave) as a :class:`~hybrid.problems.base.Problem`: one
value per control volume, face fluxes integrated over each output interval.

The reference solvers are :mod:`hybrid.solvers.gpme` (the porous medium family, Stefan,
Burgers) and :mod:`hybrid.solvers.wave`; their rows are
:class:`hybrid.constraints.problems.ScalarRows`, their scores
:func:`hybrid.validation.scores.variant_scores`, their report figures ProbConserv's (total
mass, profiles with bands, the posterior front histogram) plus the error over time and, in
2-D, fields on the mesh.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybrid.constraints.problems import ScalarRows
from hybrid.dataset import scenario_parameters
from hybrid.errors import CaseError
from hybrid.export.xdmf import field_prefix
from hybrid.mesh.control_volumes import ControlVolumes, balance_residual
from hybrid.metrics import relative_l2, total_mass
from hybrid.problems.base import Problem
from hybrid.solvers.boundaries import boundary_data
from hybrid.solvers.gpme import Conductivity, GPMESolver
from hybrid.validation.scores import variant_scores

__all__ = ["ScalarProblem", "METRIC_KEYS", "TABLE_COLUMNS", "VARIANT_FIELDS", "check_finite_data",
           "solve_scalar", "figures", "variant_fields", "front_threshold", "front_measure"]

# the per-variant keys of metrics.json, in the report's column order: (key, header, format)
METRIC_KEYS = (("rel_l2", "rel. L2", ".4f"), ("mse", "MSE", ".3e"), ("max_error", "max err", ".3g"),
               ("mass_error", "mass err", ".1e"), ("max_balance_residual", "balance", ".1e"),
               ("dirichlet_error", "Dirichlet", ".1e"), ("neumann_flux_error", "Neumann", ".1e"),
               ("normal_derivative_error", "du/dn", ".1e"),
               ("log_likelihood", "log-lik", ".2f"), ("crps", "CRPS", ".3e"),
               ("coverage90", "cover90", ".2f"), ("front_error", "front err", ".3g"),
               ("update_seconds", "update s", ".3g"))
# the columns of the variants table printed by predict: (metrics key, header, width, format)
TABLE_COLUMNS = (("mse", "MSE", 10, ".3e"), ("rel_l2", "rel L2", 8, ".4f"),
                 ("max_balance_residual", "balance", 9, ".1e"),
                 ("mass_error", "mass err", 9, ".1e"), ("dirichlet_error", "Dirichlet", 9, ".1e"),
                 ("coverage90", "cover90", 7, ".2f"), ("log_likelihood", "loglik", 8, ".2f"),
                 ("update_seconds", "update s", 9, ".4f"))
# suffixes of each variant's arrays
VARIANT_FIELDS = ("mean", "std", "abs_error", "balance_residual")
MAIN_PROFILES = ("raw", "softc", "boon", "global", "per-cell", "per-cell+boundary")
BOUNDARY_PROFILES = ("raw", "boon", "per-cell+boundary")


def check_finite_data(case, cv: ControlVolumes, params: dict, u0: np.ndarray) -> None:
    """The initial state, and the source and boundary data at every solver step, are finite:
    refused here, naming the key, before PETSc sees a NaN (its tolerances would become NaN)."""
    where = dict(file=str(case.display_file))
    bad = np.flatnonzero(~np.isfinite(u0))
    if len(bad):
        raise CaseError(f"the initial state is not finite at {len(bad)} control volume(s), e.g. "
                        f"x = {np.round(cv.centre[bad[0]], 6).tolist()}", key="initial.value",
                        **where)
    steps = np.append(np.arange(0.0, case.time["t_end"], case.time["dt"]), case.time["t_end"])
    checks = []
    if case.pde.get("source") is not None:
        checks.append(("pde.source", case.pde["source"], cv.centre))
    keys = {"dirichlet": "value", "flux": "flux", "normal_derivative": "normal_derivative"}
    for bc in boundary_data(case):
        if bc.kind in keys and bc.name in cv.boundary_names:
            checks.append((f"boundary.{bc.name}.{keys[bc.kind]}", bc.expr,
                           cv.face_centroid[cv.faces_of(bc.name)]))
    for key, expr, points in checks:
        for t in (steps[:1] if expr.is_constant else steps):
            values = np.asarray(expr(points, t=float(t), params=params), float)
            if not np.all(np.isfinite(values)):
                raise CaseError(f"is not finite at t = {t:.6g}", key=key, **where)


def _solve_wave(case, cv: ControlVolumes, params: dict, split: str, index: int, box, comm=None):
    """One wave-equation scenario (released from rest); see :mod:`hybrid.solvers.wave`; over the
    ranks of ``comm`` when it has more than one
    (:class:`~hybrid.solvers.partition.PartitionWaveSolver`)."""
    from hybrid.case.initial import initial_values
    from hybrid.case.parameters import scenario_rng
    from hybrid.solvers.wave import WaveSolver

    source = case.pde.get("source")
    if source is not None and not (source.is_constant and source.constant_value() == 0.0):
        raise CaseError('the wave solver supports source = "0" only', file=str(case.display_file),
                        key="pde.source")
    rng = scenario_rng(case.seed, split, index, "initial")
    u0 = initial_values(case, cv.centre, params, rng, box=box)
    check_finite_data(case, cv, params, u0)
    distributed = comm is not None and comm.size > 1
    if distributed:
        from hybrid.solvers.partition import PartitionWaveSolver
    try:
        solver = (PartitionWaveSolver if distributed else WaveSolver)(
            cv, float(params["c"]), boundary_data(case), params, theta=case.time["theta"],
            **({"comm": comm} if distributed else {}))
    except ValueError as exc:
        raise CaseError(f"wave: {exc}", file=str(case.display_file),
                        key="mesh.control_volumes") from None
    try:
        return solver.run(u0, case.time["t_end"], case.time["dt"], case.time["outputs"])
    finally:
        solver.close()


def solve_scalar(case, cv: ControlVolumes, params: dict, split: str, index: int, box, comm=None):
    """One gpme, burgers or wave scenario: the :class:`~hybrid.solvers.gpme.Trajectory`, over the
    ranks of ``comm`` when it has more than one (:mod:`hybrid.solvers.partition`, ``cv`` with its
    owners)."""
    from hybrid.case.initial import initial_values
    from hybrid.case.parameters import scenario_rng

    family = case.pde["family"]
    if family == "wave":
        return _solve_wave(case, cv, params, split, index, box, comm)
    kind = case.pde["k"] if family == "gpme" else "constant"
    convection = None
    if family == "burgers":   # u_t + Σ_i (u²/2)_{x_i} = ν Δu: the GPME
                              # solver with k = ν and b = (1, ..., 1)
        params = dict(params, k=params["nu"])
        convection = np.ones(cv.dim)
    if kind == "stefan" and params.get("smoothing", 0.0) <= 0:
        raise CaseError("the Stefan step needs smoothing > 0 (Newton needs a derivative); "
                        "use e.g. smoothing = 0.005", file=str(case.display_file),
                        key="pde.smoothing")
    rng = scenario_rng(case.seed, split, index, "initial")
    # the random field lives on the mesh's bounding box, so it is the same field on any mesh of the
    # domain
    u0 = initial_values(case, cv.centre, params, rng, box=box)
    check_finite_data(case, cv, params, u0)
    distributed = comm is not None and comm.size > 1
    if distributed:
        from hybrid.solvers.partition import PartitionGPMESolver
    solver = (PartitionGPMESolver if distributed else GPMESolver)(
        cv, Conductivity.from_params(kind, params), boundary_data(case), params,
        source=case.pde.get("source"), theta=case.time["theta"],
        rtol=case.solver["newton_rtol"], atol=case.solver["newton_atol"],
        max_it=case.solver["newton_max_it"], convection=convection,
        scheme=case.pde.get("convection", "central"), **({"comm": comm} if distributed else {}))
    try:
        return solver.run(u0, case.time["t_end"], case.time["dt"], case.time["outputs"])
    finally:
        solver.close()


def note(front_kind: str | None) -> str:
    """The report's note under a scalar case's ablation table."""
    return ("Errors are over all output times and test scenarios, volume-weighted on the mesh; "
            "balance = the largest per-control-volume balance residual relative to |K| max|u|; "
            "mass err = the largest global mass error relative to the total amount; Dirichlet / "
            "Neumann / du/dn = the largest boundary-value / boundary-flux / normal-derivative "
            "error ('–': the case has no such rows); log-lik with variances floored at 1e-10 of "
            "their mean; update s = the constraint update per scenario (mean, variance and "
            "posterior samples); front err = |mean posterior front − solver front| "
            f"({front_kind or 'no front in this case'}). Definitions: docs/metrics.md.")


def _end_series(case, cv, times, params: dict, fields: dict) -> list:
    """For each non-periodic end of a 1-D dual mesh with data: (label, quantity, data (T,),
    {name: values (T,)}) — the end value (Dirichlet) or the outward derivative du/dn from
    the end cell's gradient (Neumann), at t_1..t_T."""
    from hybrid.surrogates.boon import boundary_ends, mesh_ends

    x = cv.centre[:, 0]
    series = []
    for name, kind, end, nxt, data in mesh_ends(boundary_ends(case, cv), cv, times, params):
        if kind == "dirichlet":
            values = {k: u[1:, end] for k, u in fields.items()}
            series.append((f"{name} end (x = {x[end]:.3g}): Dirichlet", "u", data, values))
        else:
            gap = abs(x[end] - x[nxt])
            values = {k: (u[1:, end] - u[1:, nxt]) / gap for k, u in fields.items()}
            series.append((f"{name} end (x = {x[end]:.3g}): Neumann", "du/dn", data, values))
    return series


def _slice_figure(path: Path, cv, mesh, truth: np.ndarray, means: dict, title: str) -> Path:
    """A 3-D case's solver, raw and main-variant fields (``means``: {variant: (N,)}) at the
    report time, and their errors, on the mesh's mid-plane z = const (P1 on the cut tetrahedra
    for dual control volumes, per cell otherwise)."""
    from hybrid.report import figures as fig

    main = [k for k in ("per-cell+boundary", "per-cell", "global") if k in means][:1]
    fields = {"solver": truth, "raw mean": means["raw"]}
    for k in main:
        fields[f"{k} mean"] = means[k]
        fields[f"|error| {k}"] = np.abs(means[k] - truth)
    fields["|error| raw"] = np.abs(means["raw"] - truth)
    xy, tris, weights, owner = fig.tetrahedra_slice(mesh.points, mesh.cells)
    if cv.kind == "dual":   # vertex values, interpolated onto the slice
        on_slice = {k: weights @ v[cv.cv_of_entity] for k, v in fields.items()}
        return fig.field_on_mesh(path, xy, tris, on_slice, title, location="point")
    return fig.field_on_mesh(path, xy, tris,
                             {k: v[cv.cv_of_entity][owner] for k, v in fields.items()}, title,
                             location="cell")


def figures(case, cv, data, variants, extra, scores, out: Path) -> list[Path]:
    """The report's figures of a scalar case's variants (``hybrid constrain`` draws them too)."""
    from hybrid.report import figures as fig

    test, times = data["test"], data["times"]
    w = cv.volume
    raw_err = relative_l2(variants["raw"]["u_mean"][:, 1:], test["u"][:, 1:], w)
    i = int(np.argmax(raw_err))      # the hardest test scenario for the raw surrogate
    # name the parameters that vary between scenarios, not the constants
    varying = np.ptp(np.concatenate([data["train"]["params"], test["params"]]), axis=0) > 0
    label = ", ".join(f"{k} = {v:.3g}" for k, v, keep
                      in zip(test["parameter_names"], test["params"][i], varying) if keep)
    tag = f"{case.name}, test scenario {i}" + (f" ({label})" if label else "")
    paths = [fig.mass_over_time(out / "mass.png", times, total_mass(test["u"][i], w),
                                {k: total_mass(v["u_mean"][i], w) for k, v in variants.items()},
                                f"Total mass Σ|K|u_K\n{tag}")]
    shown = {k: v for k, v in variants.items() if k in MAIN_PROFILES}
    if cv.dim == 1:
        front = None
        if extra["front_true"] is not None and extra["front_kind"] == "position":
            front = float(extra["front_true"][i])
        paths.append(fig.profiles_with_bands(
            out / "profiles.png", cv.centre[:, 0], test["u"][i, -1],
            {k: (v["u_mean"][i, -1], np.sqrt(np.maximum(v["u_var"][i, -1], 0.0)))
             for k, v in shown.items()},
            f"u at t = {times[-1]:g} with 90% intervals\n{tag}", front=front))
    elif cv.dim == 2:
        main = [k for k in ("per-cell+boundary", "per-cell", "global") if k in variants][:1]
        location = "point" if cv.kind == "dual" else "cell"
        fields = {"solver": test["u"][i, -1], "raw mean": variants["raw"]["u_mean"][i, -1]}
        for k in main:
            fields[f"{k} mean"] = variants[k]["u_mean"][i, -1]
            fields[f"|error| {k}"] = np.abs(variants[k]["u_mean"][i, -1] - test["u"][i, -1])
        fields["|error| raw"] = np.abs(variants["raw"]["u_mean"][i, -1] - test["u"][i, -1])
        mesh = data["mesh"]
        paths.append(fig.field_on_mesh(out / "fields.png", mesh.points[:, :2], mesh.cells,
                                       {k: v[cv.cv_of_entity] for k, v in fields.items()},
                                       f"u at t = {times[-1]:g}, {tag}", location=location))
    elif cv.dim == 3 and data["mesh"].cells.shape[1] == 4:
        # tetrahedra: the fields on the mid-plane z = const
        paths.append(_slice_figure(out / "slice.png", cv, data["mesh"], test["u"][i, -1],
                                   {k: v["u_mean"][i, -1] for k, v in variants.items()},
                                   f"u at t = {times[-1]:g} on the mid-plane, {tag}"))
    if cv.dim == 1:
        near = {k: v["u_mean"][i] for k, v in variants.items() if k in BOUNDARY_PROFILES}
        paths.append(fig.profiles_over_time(out / "profiles_over_time.png", cv.centre[:, 0], times,
                                            test["u"][i], near,
                                            f"Profiles and absolute errors over time\n{tag}"))
        ends = _end_series(case, cv, times, scenario_parameters(test, i),
                           {"solver": test["u"][i], **near})
        if ends:
            paths.append(fig.boundary_over_time(out / "boundary.png", times[1:], ends,
                                                f"The boundary conditions over time\n{tag}"))
    if extra["front_true"] is not None and all("front" in v for v in variants.values()):
        what = ("front position x" if extra["front_kind"] == "position"
                else "volume behind the front")
        paths.append(fig.front_histogram(out / "front.png",
                                         {k: v["front"][i] for k, v in shown.items()},
                                         float(extra["front_true"][i]),
                                         f"Posterior {what} at t = {times[-1]:g}\n{tag}",
                                         xlabel=what))
    paths.append(fig.error_over_time(out / "error.png", times[1:],
                                     {k: np.asarray(s["rel_l2_over_time"])
                                      for k, s in scores.items()},
                                     "relative L2 error",
                                     f"Error over time, mean over test scenarios\n{case.name}"))
    return paths


def _balance(cvd: dict, u: np.ndarray, flux: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Per-control-volume balance residual with a zero first row (no interval ends at t = 0)."""
    res = balance_residual(cvd["volume"], cvd["face_cv"], u, flux, source)
    return np.vstack([np.zeros_like(u[:1]), res])


def variant_fields(cvd: dict, variant: str, u_mean: np.ndarray, u_var: np.ndarray,
                   flux_mean: np.ndarray, u: np.ndarray,
                   source: np.ndarray) -> dict[str, np.ndarray]:
    """One scenario's arrays of one variant, per control volume, shape (T+1, N) each."""
    p = field_prefix(variant)
    return {f"{p}_mean": u_mean, f"{p}_std": np.sqrt(np.maximum(u_var, 0.0)),
            f"{p}_abs_error": np.abs(u_mean - u),
            f"{p}_balance_residual": _balance(cvd, u_mean, flux_mean, source)}


def front_threshold(case, params: dict, truth_final: np.ndarray) -> float | None:
    """The level whose crossing is the case's front, or None when the case has no front."""
    if case.pde.get("family") != "gpme":
        return None
    if case.pde.get("k") == "stefan":
        return float(params.get("u_star", case.pde.get("u_star", 0.5)))
    if case.pde.get("k") == "power":
        return 0.01 * float(np.max(truth_final))
    return None


def front_measure(cv, u: np.ndarray, threshold: float) -> np.ndarray:
    """Front of each profile u (..., N): the volume where u ≥ threshold (2-D, 3-D), and in
    1-D the left end plus that length — the front's position for a profile that falls
    through the level once. Integrating, rather than taking the first crossing, keeps the
    front of a sample with uncorrelated noise where the profile is, not at the first noisy dip."""
    behind = (u >= threshold) @ cv.volume
    if cv.dim == 1:
        return (cv.centre[:, 0].min()
                - 0.5 * cv.volume[np.argmin(cv.centre[:, 0])] * (cv.kind == "cells") + behind)
    return behind


class ScalarProblem(Problem):
    """gpme, burgers and wave."""

    table_columns = TABLE_COLUMNS
    metric_keys = METRIC_KEYS
    solver_arrays = ("u", "balance_residual")
    variant_suffixes = VARIANT_FIELDS

    def can_partition(self, case) -> bool:
        """True: gpme, burgers and wave scenarios are solved over the partition."""
        return True

    def solve(self, case, cv, mesh, params: dict, split: str, index: int, box, comm=None):
        """See :func:`solve_scalar` (``mesh`` is not used)."""
        return solve_scalar(case, cv, params, split, index, box, comm)

    def front_threshold(self, case, params: dict, truth_final: np.ndarray) -> float | None:
        """See :func:`front_threshold`."""
        return front_threshold(case, params, truth_final)

    def front_measure(self, cv, u: np.ndarray, threshold: float) -> np.ndarray:
        """See :func:`front_measure`."""
        return front_measure(cv, u, threshold)

    def dataset_arrays(self, trajectories: list) -> dict[str, np.ndarray]:
        """``flux`` (S, T, F), ``source`` (S, T, N) and the solver's ``max_correction`` (S,)."""
        return {"flux": np.stack([t.flux for t in trajectories]),
                "source": np.stack([t.source for t in trajectories]),
                "max_correction": np.array([t.stats["max_correction"] for t in trajectories])}

    def solve_summary(self, cv, trajectories: list) -> tuple[dict, str]:
        """The largest balance residual of any control volume, relative to |K| max|u|."""
        balance = max((float(np.abs(cv.balance_residual(t.u, t.flux, t.source)).max()
                             / max(np.abs(t.u).max() * cv.volume.max(), 1e-300))
                       for t in trajectories), default=0.0)
        return {"max_relative_balance": balance}, f", max relative balance residual {balance:.1e}"

    def rows(self, case, cv, times: np.ndarray) -> ScalarRows:
        """The :class:`~hybrid.constraints.problems.ScalarRows` of the case."""
        return ScalarRows(case, cv, times)

    def scores(self, cv, data: dict, layout, scored: list, u, var, flux) -> dict:
        """See :func:`~hybrid.validation.scores.variant_scores`."""
        return variant_scores(cv, data, layout, scored, u, var, flux)

    def note(self, front_kind: str | None) -> str:
        """See :func:`note`."""
        return note(front_kind)

    def figures(self, case, cv, data: dict, variants: dict, extra: dict, scores: dict,
                out: Path) -> list[Path]:
        """See :func:`figures`."""
        return figures(case, cv, data, variants, extra, scores, out)

    def solver_fields(self, split: dict, i: int, cvd: dict) -> dict[str, np.ndarray]:
        """Scenario i's ``u`` and ``balance_residual`` (T+1, N), the residual 0 at t = 0."""
        return {"u": split["u"][i],
                "balance_residual": _balance(cvd, split["u"][i], split["flux"][i],
                                             split["source"][i])}

    def variant_fields(self, mesh, cv, cvd: dict, variant: str, arrays: dict, i: int,
                       split: dict) -> dict[str, np.ndarray]:
        """See :func:`variant_fields`, against the solver's states and sources."""
        return variant_fields(cvd, variant, arrays["u_mean"][i], arrays["u_var"][i],
                              arrays["flux_mean"][i], split["u"][i], split["source"][i])

