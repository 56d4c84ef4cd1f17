"""Incompressible flow (navier-stokes, the cavity) as a :class:`~hybrid.problems.base.Problem`:
the Scott–Vogelius reference, the dataset's view, scores, vorticity, figures and ParaView fields.

A navier-stokes ensemble predicts the vertex velocity (d components) and the volume flux
of every dual face at each output time t_1..t_T (:func:`hybrid.surrogates.ensemble.state_targets`).
The variants run through the one driver of every family,
:func:`hybrid.constraints.driver.run_variants`, with the rows of
:class:`hybrid.constraints.problems.FlowRows`. Incompressibility is instantaneous, so each
output time's rows hold on their own, and the members' deviations are split by output time
(the update equals one update per time). The variants are

``raw``
    the ensemble as it comes;
``boon``
    the BOON ensemble (2-D boundary-corrected Fourier layers, :mod:`hybrid.surrogates.boon`)
    as it comes: its wall velocities are the data, its fluxes unconstrained;
``hardc``
    the Euclidean projection (Σ = I) of the mean onto every flow row — the divergence, wall
    and boundary-flux rows — with the variance left as it was (the paper's HardC);
``global``
    one row per time: the net volume flux out of the cavity is zero (ProbConserv's global
    row, here the sum of the per-cell rows);
``per-cell``
    zero net volume flux through every control volume;
``per-cell+boundary``
    those, the wall velocities (no-slip and the lid) and the boundary fluxes: every row of
    :func:`hybrid.constraints.flow.flow_rows` (BOON's exact boundary data and discrete
    incompressibility together).

The divergence rows hold face fluxes only, so the update moves the velocities through the
covariance between velocities and fluxes; the cavity case therefore asks for the ensemble
covariance (``covariance = "ensemble+diagonal"``), whose member deviations carry it.

``OUTPUT/predict/variants.h5`` has one group per variant: ``u_mean``, ``u_var`` (S, T+1, d N)
(t = 0 is the given state) and ``flux_mean`` (S, T, F). Scores (``metrics.json``, by
:func:`hybrid.validation.scores.flow_scores`): relative L2 and MSE of the velocity (weighted
by the control volumes), its error over time, the largest net volume flux of a control volume
relative to max|u| × max|f| (``max_divergence``, the measure of the solver's 3.5e-14), the
wall-velocity and boundary-flux errors, calibration, and the update's wall time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from hybrid.constraints.problems import FlowRows
from hybrid.errors import CaseError
from hybrid.export.xdmf import field_prefix
from hybrid.mesh.control_volumes import ControlVolumes
from hybrid.metrics import relative_l2
from hybrid.problems.base import Problem
from hybrid.solvers.boundaries import wall_order
from hybrid.solvers.gpme import SolverError
from hybrid.validation.scores import flow_scores

__all__ = ["FlowProblem", "vertex_vorticity", "flow_figures", "flow_variant_fields", "flow_view",
           "solve_flow", "FLOW_METRIC_KEYS", "FLOW_NOTE", "FLOW_TABLE_COLUMNS"]

FLOW_TABLE_COLUMNS = (("mse", "MSE", 10, ".3e"), ("rel_l2", "rel L2", 8, ".4f"),
                      ("max_divergence", "divergence", 10, ".1e"),
                      ("wall_error", "walls", 9, ".1e"),
                      ("boundary_flux_error", "bnd flux", 9, ".1e"),
                      ("coverage90", "cover90", 7, ".2f"), ("log_likelihood", "loglik", 8, ".2f"),
                      ("update_seconds", "update s", 9, ".4f"))


def solve_flow(case, cv: ControlVolumes, mesh, params: dict, split: str, index: int):
    """One Navier–Stokes scenario: the velocity (T+1, N, d), pressure and vorticity (T+1, N)
    in control-volume order, and the control volumes' net volume flux."""
    from hybrid.case.initial import initial_values
    from hybrid.case.parameters import scenario_rng
    from hybrid.solvers.navier_stokes import NavierStokesSolver, Wall

    where = dict(file=str(case.display_file))
    if cv.kind != "dual" or mesh.cell_type != "triangle":
        raise CaseError("navier-stokes needs a triangle mesh with control_volumes = \"dual\" "
                        "(velocities live at the vertices)", key="mesh.control_volumes", **where)
    walls = []
    # in the case file's order: where walls meet, the one listed later owns the shared nodes
    for name in wall_order(case, mesh):
        bc = case.boundary_condition(name)
        if bc.type != "dirichlet" or not isinstance(bc.value, list):
            raise CaseError(f"navier-stokes: boundary {name!r} needs type = \"dirichlet\" with a "
                            "vector value, e.g. value = [\"1\", \"0\"] (found "
                            + (bc.type if bc.type != "dirichlet" else "a scalar value") + ")",
                            key=f"boundary.{name}", **where)
        walls.append(Wall(name, tuple(bc.value)))
    rng = scenario_rng(case.seed, split, index, "initial")
    initial = lambda points: initial_values(case, points, params, rng)
    solver = NavierStokesSolver(mesh, float(params["nu"]), walls, params,
                                rtol=case.solver["newton_rtol"], atol=case.solver["newton_atol"],
                                max_it=case.solver["newton_max_it"])
    face_flux = []
    try:
        flow = solver.run(case.time["t_end"], case.time["dt"], case.time["outputs"],
                          initial=initial,
                          at_output=lambda t: face_flux.append(solver.dual_face_fluxes(cv, t)))
    except RuntimeError as exc:
        raise SolverError(str(exc)) from None
    order = cv.entity_of_cv          # vertex of each control volume
    flow.u, flow.p, flow.vorticity = flow.u[:, order], flow.p[:, order], flow.vorticity[:, order]
    flow.face_flux = np.array(face_flux)            # (T+1, F) exact volume fluxes of the dual faces
    # (T+1, N): zero up to the solver's tolerance
    flow.net_flux = (cv.incidence() @ flow.face_flux.T).T
    return flow


def flow_view(data):
    """A navier-stokes :class:`~hybrid.dataset.Dataset` as the scalar stages' arrays: each
    split's velocity (S, T+1, N, d) flattened to (S, T+1, d N) under ``u``, component blocks one
    after the other (the layout of :mod:`hybrid.constraints.flow`), the original kept under
    ``velocity``, and its face fluxes at t_1..t_T under ``flux``."""
    views = {}
    for name, s in data.splits.items():
        flat = np.swapaxes(s.u, -1, -2).reshape(*s.u.shape[:2], -1)
        views[name] = s.with_arrays(velocity=s.u, u=flat, flux=s.face_flux[:, 1:])
    return data.with_splits(**views)


def vertex_vorticity(points: np.ndarray, cells: np.ndarray, cv_of_vertex: np.ndarray,
                     velocity: np.ndarray) -> np.ndarray:
    """ω = ∂v/∂x − ∂u/∂y of the P1 interpolant of vertex velocities, lumped to the vertices
    (each triangle's constant curl, averaged with weights |K|/3), in control-volume order.
    ``velocity``: (..., d N) flattened (u block, v block) per control volume; returns (..., N)."""
    N = len(np.unique(cv_of_vertex))
    vel = velocity.reshape(*velocity.shape[:-1], 2, N)[..., cv_of_vertex]          # (..., 2, V)
    x = points[:, :2][cells]                                                         # (K, 3, 2)
    J = np.stack([x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]], axis=1)                # rows: edge vectors
    area = 0.5 * np.abs(np.linalg.det(J))
    ref = np.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])                    # ∇̂ of the hat functions
    grad = np.einsum("kij,jv->kiv", np.linalg.inv(J), ref)                    # (K, 2, 3): ∂φ_v/∂x_i
    uc, vc = vel[..., 0, :][..., cells], vel[..., 1, :][..., cells]                  # (..., K, 3)
    curl = np.einsum("...kv,kv->...k", vc, grad[:, 0]) - np.einsum("...kv,kv->...k", uc, grad[:, 1])
    V, K = len(points), len(cells)
    lump = sp.csr_matrix((np.repeat(area / 3, 3), (cells.ravel(), np.repeat(np.arange(K), 3))),
                         shape=(V, K))
    flat = curl.reshape(-1, K)
    omega = (lump @ flat.T).T / np.asarray(lump.sum(axis=1)).ravel()
    out = np.zeros((flat.shape[0], N))
    out[:, cv_of_vertex] = omega
    return out.reshape(*curl.shape[:-1], N)


# the flow report's columns: (key, header, format)
FLOW_METRIC_KEYS = (("rel_l2", "rel. L2", ".4f"), ("mse", "MSE", ".3e"),
                    ("max_error", "max err", ".3g"), ("flux_rel_l2", "flux rel. L2", ".4f"),
                    ("max_divergence", "divergence", ".1e"),
                    ("wall_error", "walls", ".1e"), ("boundary_flux_error", "bnd flux", ".1e"),
                    ("log_likelihood", "log-lik", ".2f"), ("crps", "CRPS", ".3e"),
                    ("coverage90", "cover90", ".2f"), ("update_seconds", "update s", ".3g"))
FLOW_NOTE = ("Velocity errors are over all output times and test scenarios, weighted by the "
             "control volumes; flux rel. L2 = the dual faces' volume fluxes; divergence = the "
             "largest net volume flux out of a control volume relative to max|u| × max|f| (the "
             "Scott–Vogelius reference: ~1e-14); walls = the largest error of a wall vertex's "
             "velocity (no-slip, lid); bnd flux = the largest error of a boundary face's volume "
             "flux; log-lik with variances floored at 1e-10 of their mean; update s = the updates "
             "of one scenario's output times (mean and exact variance).")


def flow_figures(case, cv, data: dict, variants: dict, scores: dict, out) -> list:
    """The BOON article's cavity figures on this run: vorticity at the first output step and
    at the last (reference, raw, constrained, errors), centreline velocities at the last
    step, and the relative L2 error and the largest divergence over time per variant."""
    from hybrid.report import figures as fig

    test, times, mesh = data["test"], data["times"], data["mesh"]
    N = cv.num_cvs
    w = np.tile(cv.volume, test["u"].shape[-1] // N)
    i = int(np.argmax(relative_l2(variants["raw"]["u_mean"][:, 1:], test["u"][:, 1:], w)))
    varying = np.ptp(np.concatenate([data["train"]["params"], test["params"]]), axis=0) > 0
    label = ", ".join(f"{k} = {v:.3g}"
                      for k, v, keep in zip(test["parameter_names"], test["params"][i], varying)
                      if keep)
    tag = f"{case.name}, test scenario {i}" + (f" ({label})" if label else "")
    main = [k for k in ("per-cell+boundary", "per-cell", "hardc") if k in variants][:1]
    shown = {"solver": test["u"][i], "raw": variants["raw"]["u_mean"][i],
             **{k: variants[k]["u_mean"][i] for k in ["boon"] * ("boon" in variants) + main}}
    pts, cells, expand = mesh.points[:, :2], mesh.cells, cv.cv_of_entity
    omega = {k: vertex_vorticity(pts, cells, expand, v) for k, v in shown.items()}
    # the lid's corners are singular
    bound = float(np.percentile(np.abs(omega["solver"][1:]), 98)) or 1.0
    paths = []
    for n, name in ((1, "vorticity_step1.png"), (len(times) - 1, "vorticity_final.png")):
        fields = {f"{k} ω": omega[k][n][expand] for k in shown}
        for k in shown:
            if k != "solver":
                fields[f"|error| {k}"] = np.abs(omega[k][n] - omega["solver"][n])[expand]
        paths.append(fig.field_on_mesh(out / name, pts, cells, fields,
                                       "Vorticity of the vertex velocities (P1), t = "
                                       f"{times[n]:.3g} (step {n}); {tag}",
                                       scale=(-bound, bound), cmap="RdBu_r"))
    paths.append(_centrelines(out / "centreline.png", pts, cells, expand,
                              {k: v[-1] for k, v in shown.items()}, N,
                              f"Centreline velocities at t = {times[-1]:g}\n{tag}"))
    paths.append(fig.error_over_time(out / "error.png", times[1:],
                                     {k: np.asarray(s["rel_l2_over_time"])
                                      for k, s in scores.items()},
                                     "relative L2 error of the velocity",
                                     f"Error over time, mean over test scenarios\n{case.name}"))
    paths.append(fig.error_over_time(out / "divergence.png", times[1:],
                                     {k: np.maximum(np.asarray(s["divergence_over_time"]), 1e-18)
                                      for k, s in scores.items()},
                                     "largest |net volume flux| of a control volume\n/ (max|u| "
                                     "max|f|), floored at 1e-18",
                                     "Discrete incompressibility over time, all test "
                                     f"scenarios\n{case.name}"))
    return paths


def _centrelines(path, pts, cells, expand, velocities: dict, N: int, title: str):
    """The figure of u along the vertical centreline x = 1/2 and v along the horizontal one
    y = 1/2 of the box, from the P1 interpolant of each field's vertex velocities."""
    import matplotlib.pyplot as plt
    from matplotlib.tri import LinearTriInterpolator, Triangulation

    from hybrid.report.figures import _save, variant_style

    tri = Triangulation(pts[:, 0], pts[:, 1], cells)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    mid = 0.5 * (lo + hi)
    s = np.linspace(0.0, 1.0, 201)
    ys, xs = lo[1] + s * (hi[1] - lo[1]), lo[0] + s * (hi[0] - lo[0])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for k, (name, vel) in enumerate(velocities.items()):
        u, v = vel[:N][expand], vel[N:2 * N][expand]
        style = ({"color": "black", "lw": 2.0} if name == "solver"
                 else dict(variant_style(name), lw=1.3, ms=4, markevery=(k * 7 % 25, 25)))
        axes[0].plot(np.asarray(LinearTriInterpolator(tri, u)(np.full_like(ys, mid[0]), ys)), ys,
                     label=name, **style)
        axes[1].plot(xs, np.asarray(LinearTriInterpolator(tri, v)(xs, np.full_like(xs, mid[1]))),
                     label=name, **style)
    axes[0].set_xlabel(f"u at x = {mid[0]:g}")
    axes[0].set_ylabel("y")
    axes[1].set_xlabel("x")
    axes[1].set_ylabel(f"v at y = {mid[1]:g}")
    for ax in axes:
        ax.grid(True, alpha=0.4)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def flow_variant_fields(mesh, cv, variant: str, u_mean: np.ndarray, u_var: np.ndarray,
                        flux_mean: np.ndarray, velocity: np.ndarray) -> dict[str, np.ndarray]:
    """One scenario's ParaView arrays of one variant, per control volume: ``P_velocity`` and
    ``P_velocity_std`` (3 components, z = 0), ``P_abs_error`` (|u_pred − u|), ``P_vorticity``
    (of the vertex velocities, P1) and ``P_net_volume_flux`` (zero at t = 0, where no flux is
    predicted); ``P`` as :func:`hybrid.stages.export.field_prefix`. ``u_mean``, ``u_var``
    (T+1, d N), ``flux_mean`` (T, F), ``velocity`` the reference (T+1, N, d)."""
    p = field_prefix(variant)
    N = cv.num_cvs
    d = u_mean.shape[-1] // N
    vec = lambda a: np.concatenate([np.swapaxes(a.reshape(a.shape[0], d, N), 1, 2),
                                    np.zeros((a.shape[0], N, 3 - d))], axis=2)
    net = np.vstack([np.zeros((1, N)), (cv.incidence() @ flux_mean.T).T])
    return {f"{p}_velocity": vec(u_mean), f"{p}_velocity_std": vec(np.sqrt(np.maximum(u_var, 0.0))),
            f"{p}_abs_error": np.linalg.norm(vec(u_mean)[..., :d] - velocity, axis=-1),
            f"{p}_vorticity": vertex_vorticity(mesh.points, mesh.cells, cv.cv_of_entity, u_mean),
            f"{p}_net_volume_flux": net}


def vorticity_figure(case, data: dict, out: Path) -> Path:
    """The vorticity of test scenario 0 at the first output time and at the last (the BOON
    article's cavity figure, here from the reference solver), on the mesh."""
    from hybrid.report.figures import field_on_mesh

    test, times, mesh = data["test"], data["times"], data["mesh"]
    expand = data["control_volumes"]["cv_of_entity"]
    w = test["vorticity"][0]
    label = ", ".join(f"{k} = {v:.3g}" for k, v in zip(test["parameter_names"], test["params"][0]))
    fields = {f"vorticity, t = {times[1]:.3g} (step 1)": w[1][expand],
              f"vorticity, t = {times[-1]:.3g} (step {len(times) - 1})": w[-1][expand]}
    # the lid's corners are singular: saturate the colours at the 98th percentile of |ω|
    bound = float(np.percentile(np.abs(w[1:]), 98)) or 1.0
    return field_on_mesh(out / "vorticity.png", mesh.points[:, :2], mesh.cells, fields,
                         f"{case.name}, test scenario 0 ({label}): solver vorticity",
                         location="point", scale=(-bound, bound), cmap="RdBu_r")


class FlowProblem(Problem):
    """navier-stokes."""

    table_columns = FLOW_TABLE_COLUMNS
    metric_keys = FLOW_METRIC_KEYS
    external_predictions = False
    solver_arrays = ("velocity", "pressure", "vorticity", "net_volume_flux")
    variant_suffixes = ("velocity", "velocity_std", "abs_error", "vorticity", "net_volume_flux")

    def check(self, case) -> None:
        """Refuse softc (in ``[constraints] compare``, or ``softc_weight`` > 0): its
        PDE-residual penalty is scalar-only."""
        if "softc" in case.constraints["compare"] or float(case.surrogate["softc_weight"]) > 0:
            raise CaseError("navier-stokes cases compare raw, hardc, boon, global, per-cell and "
                            "per-cell+boundary; softc (a scalar PDE-residual penalty) is "
                            "scalar-only", file=str(case.display_file), key="constraints.compare")

    def solve(self, case, cv, mesh, params: dict, split: str, index: int, box, comm=None):
        """See :func:`solve_flow` (serial: ``box`` and ``comm`` are not used)."""
        return solve_flow(case, cv, mesh, params, split, index)

    def dataset_arrays(self, trajectories: list) -> dict[str, np.ndarray]:
        """``pressure``, ``vorticity``, ``net_volume_flux`` (S, T+1, N) and ``face_flux``
        (S, T+1, F)."""
        return {name: np.stack([getattr(t, attr) for t in trajectories])
                for name, attr in (("pressure", "p"), ("vorticity", "vorticity"),
                                   ("face_flux", "face_flux"), ("net_volume_flux", "net_flux"))}

    def solve_summary(self, cv, trajectories: list) -> tuple[dict, str]:
        """The largest net volume flux out of a control volume, relative to max|u| × max
        face area."""
        # the Taylor–Hood velocity is divergence-free weakly, not per median-dual cell: report by
        # how much
        scale = max((np.abs(t.u).max() * cv.face_area.max() for t in trajectories), default=1.0)
        net = max((float(np.abs(t.net_flux).max()) for t in trajectories), default=0.0) / scale
        return ({"max_relative_net_volume_flux": net},
                f"; largest net volume flux out of a control volume {net:.1e} of max|u| x max face "
                "area")

    def view(self, data: dict) -> dict:
        """See :func:`flow_view`."""
        return flow_view(data)

    def rows(self, case, cv, times: np.ndarray) -> FlowRows:
        """The :class:`~hybrid.constraints.problems.FlowRows` of the case."""
        return FlowRows(case, cv, times)

    def scores(self, cv, data: dict, layout, scored: list, u, var, flux) -> dict:
        """See :func:`~hybrid.validation.scores.flow_scores` (``layout`` is not used)."""
        return flow_scores(cv, data, scored, u, var, flux)

    def note(self, front_kind: str | None) -> str:
        """:data:`FLOW_NOTE` (the cavity has no front)."""
        return FLOW_NOTE

    def figures(self, case, cv, data: dict, variants: dict, extra: dict, scores: dict,
                out: Path) -> list[Path]:
        """See :func:`flow_figures` (``extra`` is not used)."""
        return flow_figures(case, cv, data, variants, scores, out)

    def state_shape(self, u_shape: tuple) -> tuple:
        """(S, T+1, d N) for the velocity's (S, T+1, N, d)."""
        # velocities, flattened to (S, T+1, d N)
        return tuple(u_shape[:2]) + (u_shape[2] * u_shape[3],)

    def solver_fields(self, split: dict, i: int, cvd: dict) -> dict[str, np.ndarray]:
        """Scenario i's ``velocity`` (T+1, N, 3; z = 0 in 2-D), ``pressure``, ``vorticity``
        and ``net_volume_flux`` (T+1, N)."""
        u = split["u"][i]   # velocity (3 components for ParaView), pressure, vorticity
        return {"velocity": np.concatenate([u, np.zeros(u.shape[:-1] + (3 - u.shape[-1],))],
                                           axis=-1),
                "pressure": split["pressure"][i], "vorticity": split["vorticity"][i],
                "net_volume_flux": split["net_volume_flux"][i]}

    def variant_fields(self, mesh, cv, cvd: dict, variant: str, arrays: dict, i: int,
                       split: dict) -> dict[str, np.ndarray]:
        """See :func:`flow_variant_fields`, against the solver's velocity."""
        return flow_variant_fields(mesh, cv, variant, arrays["u_mean"][i], arrays["u_var"][i],
                                   arrays["flux_mean"][i], split["u"][i])

    def export_figures(self, case, data: dict, out: Path) -> list[Path]:
        """The solver's vorticity of test scenario 0 (:func:`vorticity_figure`)."""
        return [vorticity_figure(case, data, out)]
