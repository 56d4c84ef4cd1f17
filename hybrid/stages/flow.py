"""The cavity's surrogate after training (navier-stokes): constraint variants, scores, figures.

A navier-stokes ensemble predicts the vertex velocity (d components) and the volume flux
of every dual face at each output time t_1..t_T (:func:`hybrid.stages.train.state_targets`).
Incompressibility is instantaneous, so each output time is conditioned on its own: its
unknowns are those of :mod:`hybrid.constraints.flow`, x = (u_1 … u_N, v_1 … v_N, Φ_1 … Φ_F),
and the variants are

``raw``
    the ensemble as it comes;
``boon``
    the BOON ensemble (2-D boundary-corrected Fourier layers, :mod:`hybrid.surrogates.boon`)
    as it comes: its wall velocities are the data, its fluxes unconstrained;
``hardc``
    the Euclidean projection (Σ = I) of the mean onto every flow row — the divergence, wall
    and boundary-flux rows — with the variance left as it was (the paper's HardC);
``global``
    one row: the net volume flux out of the cavity is zero (ProbConserv's global row, here
    the sum of the per-cell rows);
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
:func:`flow_scores`): relative L2 and MSE of the velocity (weighted by the control volumes),
its error over time, the largest net volume flux of a control volume relative to
max|u| × max|f| (``max_divergence``, the measure of the solver's 3.5e-14), the wall-velocity
and boundary-flux errors, calibration, and the update's wall time.

Scenarios are spread over ranks (each update is small: about d N + F unknowns and N + wall rows).
"""

from __future__ import annotations

import time

import h5py
import numpy as np
import scipy.sparse as sp
from mpi4py import MPI

from hybrid.constraints.flow import flow_rows, flux_divergence_rows, wall_rows
from hybrid.constraints.rows import ConstraintRows
from hybrid.constraints.update import GaussianUpdate
from hybrid.constraints.variants import VARIANTS, prediction_covariance
from hybrid.errors import CaseError
from hybrid.files import atomic_path
from hybrid.metrics import coverage, crps_gaussian, gaussian_log_likelihood, max_error, mse, relative_l2, variance_floor
from hybrid.parallel import my_indices
from hybrid.stages.constrain import main_variant, residual_by_kind
from hybrid.solvers.boundaries import dirichlet_walls

__all__ = ["FLOW_VARIANTS", "wall_data", "flow_variant_rows", "run_flow_variants", "flow_scores",
           "vertex_vorticity", "flow_variants_requested"]

FLOW_VARIANTS = ("raw", "hardc", "boon", "global", "per-cell", "per-cell+boundary")


def wall_data(case, cv, mesh, times: np.ndarray, params: dict) -> tuple[list, np.ndarray]:
    """The walls' data at t_1..t_T: for each time the list of (wall, velocities of its control
    volumes) in the case's order (later walls own shared vertices, as in the solver), and the
    boundary faces' volume fluxes (T, F): the wall velocity at the face centroid · n |f|, the
    solver's own boundary fluxes."""
    bfaces = cv.boundary_faces
    walls_t, bflux = [], np.zeros((len(times) - 1, cv.num_faces))
    for n, t in enumerate(times[1:]):
        walls = dirichlet_walls(case, cv, t, params)
        for name, _, _ in walls:
            faces = bfaces[cv.face_tag[bfaces] == cv.boundary_names[name]]
            S = cv.face_normal[faces] * cv.face_area[faces, None]
            g = case.boundary_condition(name).dirichlet_values(cv.face_centroid[faces], t, params).T
            bflux[n, faces] = np.einsum("fd,fd->f", g, S)
        walls_t.append([(name, values) for name, _, values in walls])
    return walls_t, bflux


def flow_variant_rows(variant: str, cv, walls: list, bflux: np.ndarray) -> ConstraintRows | None:
    """The rows of one output time for a variant (None: raw, and BOON's own ensemble)."""
    if variant in ("raw", "boon"):
        return None
    if variant == "global":
        div = flux_divergence_rows(cv)
        G = div.G.sum(axis=0)
        return ConstraintRows(sp.csr_matrix(G), np.zeros(1), np.array(["global"], dtype="U24"))
    if variant == "per-cell":
        return flux_divergence_rows(cv)
    if variant in ("hardc", "per-cell+boundary"):
        return flow_rows(cv, walls, bflux)
    raise CaseError(f"variant {variant!r} is not available for navier-stokes (choose from {', '.join(FLOW_VARIANTS)})",
                    key="constraints.compare")


def flow_variants_requested(case, extra: dict | None = None) -> list[str]:
    """raw, the case's main variant and those it compares with (``boon`` when its ensemble
    is in ``extra``), in the table's order."""
    wanted = {"raw", main_variant(case), *case.constraints["compare"]}
    if "boon" not in (extra or {}):
        wanted.discard("boon")
    bad = sorted(wanted - set(FLOW_VARIANTS))
    if bad:
        raise CaseError(f"navier-stokes cases compare {', '.join(FLOW_VARIANTS)}; {', '.join(bad)} "
                        "(a separately trained scalar ensemble) is not available", file=str(case.display_file),
                        key="constraints.compare")
    return [v for v in VARIANTS if v in wanted]


def _update_time(variant, rows, mean, var, dev, covariance: str, sigma: float, plans: dict):
    """(mean, variance of the velocities, seconds of the mean) of one output time's unknowns;
    ``plans`` caches the :class:`UpdatePlan` of each variant's rows (the same G at every output
    time and in every scenario)."""
    t0 = time.perf_counter()
    if rows is None:
        return mean, var, 0.0
    if variant == "hardc":
        update = GaussianUpdate(rows.G, rows.b, np.ones_like(mean), plan=plans.get(variant))
        plans[variant] = update.plan
        return update.mean(mean), var, time.perf_counter() - t0
    diag, U = prediction_covariance(var, dev, covariance)
    update = GaussianUpdate(rows.G, rows.b, diag, U, sigma, plan=plans.get(variant))
    plans[variant] = update.plan
    m = update.mean(mean)
    seconds = time.perf_counter() - t0
    v = update.variance()   # exact where the rows are fewer than the probes, else the probe estimate
    update.destroy()
    return m, np.maximum(v, 0.0), seconds


def run_flow_variants(case, cv, data: dict, pred: dict | None, out_path, comm: MPI.Comm = MPI.COMM_SELF,
                      extra: dict | None = None) -> dict | None:
    """Every requested variant of every test scenario (collective; ``data`` is the
    :func:`~hybrid.stages.train.flow_view`, ``pred`` the ensemble's ``u_* flux_*`` arrays and ``extra`` other
    ensembles (``boon``), needed on rank 0). Writes ``variants.h5``; returns the scores on
    rank 0, None elsewhere."""
    pred, extra = comm.bcast((pred, extra or {}) if comm.rank == 0 else None, root=0)
    test, times, mesh = data["test"], data["times"], data["mesh"]
    S, T1, NC = test["u"].shape
    T, N = T1 - 1, cv.num_cvs
    c = case.constraints
    params = [dict(zip(test["parameter_names"], map(float, test["params"][i]))) for i in range(S)]
    boundary = [wall_data(case, cv, mesh, times, params[i]) for i in range(S)]
    variants = flow_variants_requested(case, extra)
    results, seconds, residuals = {}, {}, {}
    for variant in variants:
        done, spent, spent_mean, worst, plans = {}, 0.0, 0.0, {}, {}
        pred_v = extra.get(variant, pred)
        for i in my_indices(S, comm):
            t0 = time.perf_counter()
            um, uv, fm = [pred_v["u_mean"][i, 0]], [np.zeros(NC)], []
            walls_t, bflux = boundary[i]
            for n in range(1, T + 1):
                mean = np.concatenate([pred_v["u_mean"][i, n], pred_v["flux_mean"][i, n - 1]])
                var = np.concatenate([pred_v["u_var"][i, n], pred_v["flux_var"][i, n - 1]])
                dev = np.concatenate([pred_v["u_dev"][i, :, n], pred_v["flux_dev"][i, :, n - 1]], axis=1)
                rows = flow_variant_rows(variant, cv, walls_t[n - 1], bflux[n - 1])
                m, v, mean_seconds = _update_time(variant, rows, mean, var, dev, c["covariance"], float(c["sigma"]),
                                                  plans)
                spent_mean += mean_seconds
                if rows is not None:
                    residual_by_kind(rows, m, worst)
                um.append(m[:NC])
                uv.append(v[:NC])
                fm.append(m[NC:])
            spent += time.perf_counter() - t0
            done[i] = (np.array(um), np.array(uv), np.array(fm))
        for plan in plans.values():
            plan.destroy()
        parts = comm.gather((done, worst), root=0)
        seconds[variant] = (comm.allreduce(spent, op=MPI.SUM) / max(S, 1),
                            comm.allreduce(spent_mean, op=MPI.SUM) / max(S, 1))
        if comm.rank == 0:
            merged = {i: r for part, _ in parts for i, r in part.items()}
            results[variant] = tuple(np.array([merged[i][k] for i in range(S)]) for k in range(3))
            residuals[variant] = {}
            for _, w in parts:
                for kind, value in w.items():
                    residuals[variant][kind] = max(residuals[variant].get(kind, 0.0), value)
    if comm.rank != 0:
        return None
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["report_time"] = float(times[-1])
            f.attrs["components"] = NC // N
            for variant, (m, v, fl) in results.items():
                f[f"{variant}/u_mean"] = m
                f[f"{variant}/u_var"] = v
                f[f"{variant}/flux_mean"] = fl
    scores = {}
    for variant, (m, v, fl) in results.items():
        scores[variant] = flow_scores(cv, data, boundary, m, v, fl)
        scores[variant].update(update_seconds=seconds[variant][0], mean_update_seconds=seconds[variant][1],
                               row_residual=residuals[variant])
    return scores


def flow_scores(cv, data: dict, boundary: list, u: np.ndarray, var: np.ndarray, flux: np.ndarray) -> dict:
    """Scores of one variant: u, var (S, T+1, d N) and flux (S, T, F); t = 0 is not scored.
    ``boundary``: :func:`wall_data` of each test scenario."""
    test = data["test"]
    N = cv.num_cvs
    d = test["u"].shape[-1] // N
    truth, u, var = test["u"][:, 1:], u[:, 1:], np.maximum(var[:, 1:], 0.0)
    w = np.tile(cv.volume, d)
    D = cv.incidence()
    scale = float(np.abs(test["u"]).max() * cv.face_area.max())
    divergence = np.abs(D @ flux.reshape(-1, flux.shape[-1]).T).T.reshape(*flux.shape[:2], N) / scale  # (S, T, N)
    wall_err, bflux_err = 0.0, 0.0
    faces = cv.boundary_faces
    for i, (walls_t, bflux) in enumerate(boundary):
        for n, walls in enumerate(walls_t):
            rows = wall_rows(cv, walls)
            x = np.concatenate([u[i, n], flux[i, n]])
            wall_err = max(wall_err, float(np.abs(rows.G @ x - rows.b).max()))
        bflux_err = max(bflux_err, float(np.abs(flux[i][:, faces] - bflux[:, faces]).max()))
    per_time = np.stack([relative_l2(u[:, n], truth[:, n], w) for n in range(u.shape[1])], axis=1)
    return {"rel_l2": float(relative_l2(u, truth, w).mean()), "mse": mse(u, truth, w),
            "max_error": max_error(u, truth), "flux_rel_l2": float(relative_l2(flux, test["flux"], 1.0).mean()),
            "max_divergence": float(divergence.max()),
            "divergence_over_time": divergence.max(axis=(0, 2)).tolist(),
            "wall_error": wall_err, "boundary_flux_error": bflux_err,
            "log_likelihood": gaussian_log_likelihood(u, var, truth, variance_floor(var)),
            "crps": crps_gaussian(u, var, truth), "coverage90": coverage(u, var, truth),
            "rel_l2_over_time": per_time.mean(axis=0).tolist()}


def vertex_vorticity(points: np.ndarray, cells: np.ndarray, cv_of_vertex: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """ω = ∂v/∂x − ∂u/∂y of the P1 interpolant of vertex velocities, lumped to the vertices
    (each triangle's constant curl, averaged with weights |K|/3), in control-volume order.
    ``velocity``: (..., d N) flattened (u block, v block) per control volume; returns (..., N)."""
    N = len(np.unique(cv_of_vertex))
    vel = velocity.reshape(*velocity.shape[:-1], 2, N)[..., cv_of_vertex]          # (..., 2, V)
    x = points[:, :2][cells]                                                         # (K, 3, 2)
    J = np.stack([x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]], axis=1)                      # rows: edge vectors
    area = 0.5 * np.abs(np.linalg.det(J))
    ref = np.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])                             # ∇̂ of the hat functions
    grad = np.einsum("kij,jv->kiv", np.linalg.inv(J), ref)                           # (K, 2, 3): ∂φ_v/∂x_i
    uc, vc = vel[..., 0, :][..., cells], vel[..., 1, :][..., cells]                  # (..., K, 3)
    curl = np.einsum("...kv,kv->...k", vc, grad[:, 0]) - np.einsum("...kv,kv->...k", uc, grad[:, 1])
    V, K = len(points), len(cells)
    lump = sp.csr_matrix((np.repeat(area / 3, 3), (cells.ravel(), np.repeat(np.arange(K), 3))), shape=(V, K))
    flat = curl.reshape(-1, K)
    omega = (lump @ flat.T).T / np.asarray(lump.sum(axis=1)).ravel()
    out = np.zeros((flat.shape[0], N))
    out[:, cv_of_vertex] = omega
    return out.reshape(*curl.shape[:-1], N)


# the flow report's columns: (key, header, format)
FLOW_METRIC_KEYS = (("rel_l2", "rel. L2", ".4f"), ("mse", "MSE", ".3e"), ("max_error", "max err", ".3g"),
                    ("flux_rel_l2", "flux rel. L2", ".4f"), ("max_divergence", "divergence", ".1e"),
                    ("wall_error", "walls", ".1e"), ("boundary_flux_error", "bnd flux", ".1e"),
                    ("log_likelihood", "log-lik", ".2f"), ("crps", "CRPS", ".3e"), ("coverage90", "cover90", ".2f"),
                    ("update_seconds", "update s", ".3g"))
FLOW_NOTE = ("Velocity errors are over all output times and test scenarios, weighted by the control volumes; "
             "flux rel. L2 = the dual faces' volume fluxes; divergence = the largest net volume flux out of a "
             "control volume relative to max|u| × max|f| (the Scott–Vogelius reference: ~1e-14); walls = the "
             "largest error of a wall vertex's velocity (no-slip, lid); bnd flux = the largest error of a boundary "
             "face's volume flux; log-lik with variances floored at 1e-10 of their mean; update s = the updates "
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
    label = ", ".join(f"{k} = {v:.3g}" for k, v, keep in zip(test["parameter_names"], test["params"][i], varying)
                      if keep)
    tag = f"{case.name}, test scenario {i}" + (f" ({label})" if label else "")
    main = [k for k in ("per-cell+boundary", "per-cell", "hardc") if k in variants][:1]
    shown = {"solver": test["u"][i], "raw": variants["raw"]["u_mean"][i],
             **{k: variants[k]["u_mean"][i] for k in ["boon"] * ("boon" in variants) + main}}
    pts, cells, expand = mesh.points[:, :2], mesh.cells, cv.cv_of_entity
    omega = {k: vertex_vorticity(pts, cells, expand, v) for k, v in shown.items()}
    bound = float(np.percentile(np.abs(omega["solver"][1:]), 98)) or 1.0   # the lid's corners are singular
    paths = []
    for n, name in ((1, "vorticity_step1.png"), (len(times) - 1, "vorticity_final.png")):
        fields = {f"{k} ω": omega[k][n][expand] for k in shown}
        for k in shown:
            if k != "solver":
                fields[f"|error| {k}"] = np.abs(omega[k][n] - omega["solver"][n])[expand]
        paths.append(fig.field_on_mesh(out / name, pts, cells, fields,
                                       f"Vorticity of the vertex velocities (P1), t = {times[n]:.3g} (step {n}); {tag}",
                                       scale=(-bound, bound), cmap="RdBu_r"))
    paths.append(_centrelines(out / "centreline.png", pts, cells, expand, {k: v[-1] for k, v in shown.items()}, N,
                              f"Centreline velocities at t = {times[-1]:g}\n{tag}"))
    paths.append(fig.error_over_time(out / "error.png", times[1:],
                                     {k: np.asarray(s["rel_l2_over_time"]) for k, s in scores.items()},
                                     "relative L2 error of the velocity",
                                     f"Error over time, mean over test scenarios\n{case.name}"))
    paths.append(fig.error_over_time(out / "divergence.png", times[1:],
                                     {k: np.maximum(np.asarray(s["divergence_over_time"]), 1e-18)
                                      for k, s in scores.items()},
                                     "largest |net volume flux| of a control volume\n/ (max|u| max|f|), floored at 1e-18",
                                     f"Discrete incompressibility over time, all test scenarios\n{case.name}"))
    return paths


def _centrelines(path, pts, cells, expand, velocities: dict, N: int, title: str):
    """u along the vertical centreline x = 1/2 and v along the horizontal one y = 1/2 of the
    box, from the P1 interpolant of each field's vertex velocities."""
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
        style = {"color": "black", "lw": 2.0} if name == "solver" else dict(variant_style(name), lw=1.3, ms=4,
                                                                             markevery=(k * 7 % 25, 25))
        axes[0].plot(np.asarray(LinearTriInterpolator(tri, u)(np.full_like(ys, mid[0]), ys)), ys, label=name, **style)
        axes[1].plot(xs, np.asarray(LinearTriInterpolator(tri, v)(xs, np.full_like(xs, mid[1]))), label=name, **style)
    axes[0].set_xlabel(f"u at x = {mid[0]:g}")
    axes[0].set_ylabel("y")
    axes[1].set_xlabel("x")
    axes[1].set_ylabel(f"v at y = {mid[1]:g}")
    for ax in axes:
        ax.grid(True, alpha=0.4)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def flow_variant_fields(mesh, cv, variant: str, u_mean: np.ndarray, u_var: np.ndarray, flux_mean: np.ndarray,
                        velocity: np.ndarray) -> dict[str, np.ndarray]:
    """One scenario's ParaView arrays of one variant, per control volume: ``P_velocity`` and
    ``P_velocity_std`` (3 components, z = 0), ``P_abs_error`` (|u_pred − u|), ``P_vorticity``
    (of the vertex velocities, P1) and ``P_net_volume_flux`` (zero at t = 0, where no flux is
    predicted); ``P`` as :func:`hybrid.stages.export.field_prefix`. ``u_mean``, ``u_var``
    (T+1, d N), ``flux_mean`` (T, F), ``velocity`` the reference (T+1, N, d)."""
    from hybrid.export.xdmf import field_prefix

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
