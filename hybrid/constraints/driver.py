"""The variant driver of ``hybrid predict``: every constraint variant the case asks for, per
test scenario, with the scores of the ablation table and ProbConserv's downstream front task.
One driver for every family: the family's layout and rows come from
:mod:`hybrid.constraints.problems` (a vector family's state is the d N components of each
output time, its fluxes instantaneous, and its rows hold each time on its own), its scores
from its :class:`~hybrid.problems.base.Problem`.

Written to ``OUTPUT/predict/variants.h5``, one group per variant:

``u_mean`` (S, T+1, N), ``u_var``, ``flux_mean`` (S, T, F)
    the constrained predictive mean and marginal variance (t = 0 is the given state)
``u_samples`` (S, K, N)
    K posterior samples (K = FRONT_SAMPLES where the case has a front, else 0) of the states at the
    report time t_T (Matheron's rule; for raw the prior, for HardC the projected mean plus prior
    deviations — its variance is unchanged)
``front`` (S, K)
    where the case has a front (Stefan: u = u*, porous medium: the edge of the support
    u = 1% of the reference maximum): its position (1-D) or the volume behind it (2-D/3-D)
    for every sample (see :meth:`hybrid.problems.base.Problem.front_measure`)

and into ``metrics.json`` under ``variants``: :func:`variant_scores` (every metric of
docs/metrics.md, the ones ``hybrid validate`` reports), the largest residual of the
variant's own rows per row kind, the front error of the sample mean, and the update's
wall time per scenario (all of it, and the mean alone).

Under ``mpirun -n P`` with P > 1, ``[constraints] parallel`` chooses how ranks share the
work: ``partition`` distributes every update over the control volumes' partition (PETSc,
:mod:`hybrid.constraints.distributed`), ``scenarios`` gives each rank whole scenarios
updated serially (sparse LU / CG), ``auto`` (default) picks by size (:func:`parallel_mode`).
All use the same random numbers, so results agree across modes and rank counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import h5py
import numpy as np
from mpi4py import MPI

from hybrid.constraints.distributed import DistributedShapePlan, ShapedUpdate
from hybrid.constraints.freeflux import free_flux_split
from hybrid.constraints.problems import time_blocks
from hybrid.constraints.rows import ConstraintRows, StateLayout
from hybrid.constraints.selection import (OUTSIDE_INFLATION, ValidationScenario,
                                          choose_flux_inflation, defect_scale, outside_prior,
                                          prefers_case_shape, shape_scale, shaped_scenarios,
                                          within_training_span)
from hybrid.constraints.update import (DIRECT_ROWS, ConstraintError, GaussianUpdate, UpdatePlan,
                                       multiple_of, prior_deviation)
from hybrid.constraints.variants import (ENSEMBLE_VARIANTS, LOW_RANK, VARIANTS, make_update,
                                         prediction_covariance)
from hybrid.errors import CaseError
from hybrid.files import atomic_path
from hybrid.metrics import coverage_scale
from hybrid.parallel import my_indices
from hybrid.problems import problem_for
from hybrid.validation.scores import residual_by_kind

__all__ = ["requested_variants", "main_variant", "run_variants", "FRONT_SAMPLES",
           "residual_by_kind", "read_variants"]

FRONT_SAMPLES = 100       # posterior samples per scenario kept for the front histogram
VARIANCE_SAMPLES = 200    # Matheron samples estimating the posterior
                          # variance of large (or distributed) updates
SAMPLE_BLOCK = 20         # of them drawn at a time (memory: one block of the whole state)
SAMPLE_RTOL = 1e-6        # CG's tolerance for the samples that only estimate the variance (their
                          # statistical error is ~10%; 23 against 265 iterations on a 296,380-row
                          # update)
DISTRIBUTE_ROWS = 50_000  # parallel = "auto": distribute updates with more per-cell rows than this


def requested_variants(case, extra: dict | None = None, problem=None) -> list[str]:
    """raw, the case's main variant and those it compares with, in the table's order
    (``softc`` and ``boon`` only when their ensembles are in ``extra``); ``problem``: the
    family's rows (:meth:`~hybrid.problems.base.Problem.rows`), which refuse a variant
    the family has not."""
    c = case.constraints
    wanted = ["raw", main_variant(case)] + [v for v in c["compare"]
                                            if v not in ENSEMBLE_VARIANTS or v in (extra or {})]
    offered = VARIANTS if problem is None else problem.variants
    bad = sorted(set(wanted) - set(offered))
    if bad:
        raise CaseError(f"{case.pde['family']} cases compare {', '.join(offered)}; "
                        f"{', '.join(bad)} is not available", file=str(case.display_file),
                        key="constraints.compare")
    return [v for v in VARIANTS if v in wanted]


def main_variant(case) -> str:
    """The variant the case's ``conservation`` and ``boundary`` keys ask for."""
    c = case.constraints
    main = "raw" if c["conservation"] == "none" else c["conservation"]
    return "per-cell+boundary" if main == "per-cell" and c["boundary"] == "exact" else main


def parallel_mode(setting: str, comm: MPI.Comm, state_rows: int) -> str:
    """``partition`` (every update distributed over the control volumes' partition) or
    ``scenarios`` (each rank updates its own scenarios serially). ``auto`` distributes an
    update once its per-cell rows (N × T) exceed DISTRIBUTE_ROWS: below, one rank's sparse
    LU is faster than CG across ranks (measured: 0.15 s against 3.2 s per stefan-1d scenario)."""
    if comm.size == 1:
        return "scenarios"
    if setting == "auto":
        return "partition" if state_rows > DISTRIBUTE_ROWS else "scenarios"
    return setting


@dataclass
class _Run:
    """What every variant's updates share: the family, the scenarios' data and priors' settings,
    and how ranks share the work (``partition``: every rank on every scenario, through ``sub``
    = the communicator; else each rank its own scenarios, ``mine``, serially)."""

    case: object
    cv: object
    family: object
    problem: object
    test: dict
    pred: dict
    extra: dict
    inside: np.ndarray
    scenario: list
    thresholds: list
    samples: int
    inflation: float
    references: dict
    partition: bool
    owner: np.ndarray | None
    comm: MPI.Comm
    sub: MPI.Comm
    mine: object
    table: dict | None = None
    even: bool = False   # every test scenario takes outside_prior (see _prepare)
    shape: np.ndarray | None = None   # the case-level prior shape, fluxes inflated (_choose_prior)
    shape_record: dict | None = None
    posterior_scale: np.ndarray | None = None   # per output time (_posterior_scales), inside
    posterior_scale_outside: np.ndarray | None = None   # and under the prior of those outside
    # per test scenario, whether its parameters lie within the validation scenarios' own range,
    # where the posterior scales were fitted; beyond it they may widen, never narrow
    calibrated_range: np.ndarray | None = None
    main: str = ""


def run_variants(case, cv, data: dict, pred: dict | None, out_path, comm: MPI.Comm = MPI.COMM_SELF,
                 extra: dict | None = None,
                 validation: dict | None = None) -> tuple[dict, dict] | None:
    """Every requested variant of every test scenario, for every family (collective over
    ``comm``; ``data`` the dataset as the family's :meth:`~hybrid.problems.base.Problem.view`
    gives it; ``pred``, the ensemble's ``u_mean u_var u_dev flux_mean flux_var flux_dev``, is
    needed on rank 0 only; ``extra`` holds other ensembles scored unconstrained, such as
    ``softc`` and ``boon``; ``validation``, the validation scenarios' ``split`` and the
    ensemble's ``pred`` of them, chooses the flux-variance inflation of
    :mod:`hybrid.constraints.selection` and the defect references). Writes ``out_path``
    (variants.h5). Returns (the scores, the inflation chosen and its validation table) on
    rank 0, None elsewhere."""
    run = _prepare(case, cv, data, pred, comm, extra, validation)
    wanted = [v for v in requested_variants(case, run.extra, run.problem)
              if all(run.problem.available(v, sc) for sc in run.scenario)]
    outcome = {variant: _run_variant(run, variant) for variant in wanted}
    if comm.rank != 0:
        return None
    fronts = _fronts(run, outcome)
    _write_variants(out_path, run, data["times"], outcome, fronts)
    scores = _scores(run, data, outcome, fronts)
    return scores, {"flux_inflation": run.inflation, "validation_mse_ratio": run.table,
                    "flux_inflation_outside_training_span": OUTSIDE_INFLATION,
                    "test_outside_training_span": int(np.count_nonzero(~run.inside)),
                    "prior_inside_training_span": "even" if run.even else "ensemble",
                    "prior_shape": run.shape_record,
                    "posterior_scales": None if run.posterior_scale is None and
                    run.posterior_scale_outside is None else
                    {"variant": run.main,
                     "state": None if run.posterior_scale is None else
                     [float(x) for x in run.posterior_scale],
                     "state_outside": None if run.posterior_scale_outside is None else
                     [float(x) for x in run.posterior_scale_outside],
                     "test_beyond_validation_range": int(np.count_nonzero(
                         ~run.calibrated_range))}}


def _prepare(case, cv, data: dict, pred, comm: MPI.Comm, extra, validation) -> _Run:
    """The λ and defect references from the validation scenarios (rank 0, then shared), the
    test scenarios' data, and the ranks' shares."""
    family = problem_for(case)
    problem = family.rows(case, cv, data["times"])
    wanted = requested_variants(case, extra, problem)
    test = data["test"]
    S, T1, N = test["u"].shape
    partition = parallel_mode(case.constraints["parallel"], comm, N * (T1 - 1)) == "partition"
    owner, make = None, None
    if partition:
        from hybrid.mesh.distribute import partition_owners
        cv.assign_owners(*partition_owners(data["mesh"], comm))
        owner = problem.owners()
        make = _distributed_maker(owner, comm, problem.layout)
    inflation, table, references, shape, record, calibration = (None,) * 6
    # λ was chosen on validation scenarios, all inside the training parameters' span; a scenario
    # outside it is an extrapolation no validation spoke for: it takes the prior of outside_prior
    in_span = within_training_span(data["train"]["params"], test["params"],
                                   case.declared_span(data["train"]["parameter_names"]))
    if partition:   # the validation scenarios' updates distributed
                    # too, as the test scenarios' will be
        validation = comm.bcast(validation if comm.rank == 0 else None, root=0)
    if partition or comm.rank == 0:
        checks = _validation_scenarios(case, problem, validation, wanted)
        inflation, table, shape, record, inside = _choose_prior(case, problem, checks, make)
        references = _validation_defects(case, problem, checks, inflation, make, inside)
        main = main_variant(case)
        calibration = (_posterior_scales(case, problem, inside.get(main) or [], inflation),
                       _posterior_scales(case, problem, checks.get(main) or [], None, main)
                       if not np.all(in_span) or _rejected(table) else None,
                       np.ones(S, bool) if validation is None else
                       within_training_span(validation["split"]["params"], test["params"]))
    pred, extra, inflation, table, references, shape, record, calibration = comm.bcast(
        (pred, extra or {}, inflation, table, references, shape, record, calibration)
        if comm.rank == 0 else None, root=0)
    # the ensemble's variances made the main variant's validation MSE worse at every λ: then no
    # scenario uses them, and every one takes the prior of outside_prior, whose update is a
    # volume-orthogonal projection onto rows the truth satisfies in the free-flux limit
    # (hybrid/constraints/freeflux.py): it cannot increase the MSE
    even = _rejected(table)
    # each scenario's boundary data (and the rows the scores measure by), known mass, front level
    scenario = [problem.scenario(test, i, scored=True) for i in range(S)]
    thresholds = [family.front_threshold(case, scenario[i].params, test["u"][i, -1])
                  for i in range(S)]
    has_front = S > 0 and all(t is not None for t in thresholds)
    mine, sub = (range(S), comm) if partition else (my_indices(S, comm), MPI.COMM_SELF)
    run = _Run(case, cv, family, problem, test, pred, extra, in_span, scenario, thresholds,
               FRONT_SAMPLES if has_front else 0,   # posterior samples serve
                                                    # the front histogram only
               inflation, references, partition, owner, comm, sub, mine, table, even, shape,
               record, *calibration, main_variant(case))
    return run


def _rejected(table: dict | None) -> bool:
    """Whether the ensemble's variances made the main variant's validation MSE worse at every λ
    of ``table`` (then every test scenario takes the prior of outside_prior)."""
    return bool(table) and min(table.values()) >= 1.0


def _run_variant(run: _Run, variant: str) -> dict | None:
    """One variant's update of every test scenario; on rank 0 {results: (u_mean, u_var,
    flux_mean, samples), own_rows, widened, phases, plan_seconds}; None elsewhere."""
    case, layout, test, comm = run.case, run.problem.layout, run.test, run.comm
    S, T1, N = test["u"].shape
    T, c = T1 - 1, case.constraints
    done, phases, plans, built, splits = {}, {}, {}, {}, {}
    source = run.extra.get(variant, run.pred)
    # the scenarios inside the span first, then those outside: a distributed plan (one at a time)
    # serves each group
    for i in sorted(run.mine, key=lambda i: not run.inside[i] or run.even):
        t0 = time.perf_counter()
        rows = run.problem.rows(variant, run.scenario[i], built)
        t1 = time.perf_counter()
        # the covariance serves the update and the prior's samples: raw and the other ensembles
        # without samples skip it
        needed = rows is not None or run.samples > 0
        mean, var, diag, U = scenario_prior(source, i, run.problem,
                                            c["covariance"] if needed else "none")
        where = "inside" if run.inside[i] and not run.even else "outside"
        split, built_here = None, {}
        shape = (run.shape if where == "inside" and source is run.pred and rows is not None
                 and variant != "hardc" else None)
        if shape is not None:   # a multiple of the case's shape: one factorisation for all
            diag, U = shape_scale(diag, shape, layout, run.problem.state_weights) * shape, None
        elif source is run.pred and needed:
            diag, U = (_inflate(diag, U, layout, run.inflation) if where == "inside"
                       else outside_prior(diag, layout, run.problem.state_weights, U))
            if where == "outside" and rows is not None and variant != "hardc":
                # built once per variant's G and shared by its scenarios: the plan's work
                split = _free_split(splits, variant, rows, layout, float(c["sigma"]), built_here)
        # one seed for every scenario: the samples' standard normals (and the variance's probes)
        # are drawn once per case and scaled by each scenario's prior, as the case shape's are;
        # each scenario's samples are exact, not independent across scenarios
        seed = int(case.seed) * 1000
        t2 = time.perf_counter()
        if split is not None:   # the even prior's free-flux limit, exactly
            m, v, post, spent, defect = _constrain_free(variant, rows, split, mean, diag, run.owner,
                                                        run.sub, seed, layout, run.samples, plans,
                                                        run.shape, int(case.seed))
        else:
            m, v, post, spent, defect = _constrain(variant, rows, mean, var, diag, U,
                                                   float(c["sigma"]), run.owner, run.sub, seed,
                                                   layout, run.samples, plans, shape,
                                                   int(case.seed))
        scale = defect_scale(defect, run.references.get(variant, {}).get(where))
        split_seconds = built_here.get("plan", 0.0)
        spent["plan"] = spent.get("plan", 0.0) + split_seconds
        spent.update(rows=t1 - t0, prior=t2 - t1 - split_seconds,
                     total=time.perf_counter() - t0 - spent["plan"])
        spent["total_mean"] += t2 - t0 - split_seconds
        for phase, seconds_spent in spent.items():
            phases[phase] = phases.get(phase, 0.0) + seconds_spent
        if run.sub.rank == 0:
            um, fm = layout.unpack(m)
            # the main variant's posterior calibrated on validation, under the scenario's prior
            calibrated = (None if variant != run.main or source is not run.pred else
                          run.posterior_scale if where == "inside" else
                          run.posterior_scale_outside)
            if calibrated is not None and not run.calibrated_range[i]:
                calibrated = np.maximum(calibrated, 1.0)
            times = np.ones(T) if calibrated is None else calibrated
            uv = v.reshape(T, N) * scale * times[:, None]
            if scale * times[-1] != 1.0:   # the samples widen about the mean as the variance does
                post = m[layout.u(T)] + np.sqrt(scale * times[-1]) * (post - m[layout.u(T)])
            residual = {}
            if rows is not None:   # the exactness of the variant's own rows
                residual_by_kind(rows, m, residual)
            done[i] = (np.concatenate([test["u"][i, :1], um]),
                       np.concatenate([np.zeros((1, N)), uv]), fm, post, residual, (defect, scale))
    for plan in plans.values():
        plan.destroy()
    if not run.partition:
        parts = comm.gather(done, root=0)
        done = {i: r for part in parts for i, r in part.items()} if comm.rank == 0 else {}
    # seconds per scenario: the slowest rank's wall time when ranks share each update, the
    # ranks' summed time when each update ran on one rank
    op = MPI.MAX if run.partition else MPI.SUM
    names = sorted(set().union(*comm.allgather(set(phases))))
    per_scenario = {k: comm.allreduce(phases.get(k, 0.0), op=op) / max(S, 1) for k in names}
    # the plan is built once per variant (on each rank that updates scenarios): its seconds, not per
    # scenario
    plan_seconds = (comm.allreduce(phases.get("plan", 0.0), op=op)
                    / (1 if run.partition else comm.size))
    if comm.rank != 0:
        return None
    own_rows = {}
    for i in range(S):
        for kind, value in done[i][4].items():
            own_rows[kind] = max(own_rows.get(kind, 0.0), value)
    return {"results": tuple(np.array([done[i][k] for i in range(S)]) for k in range(4)),
            "own_rows": own_rows, "widened": [done[i][5] for i in range(S)], "phases": per_scenario,
            "plan_seconds": plan_seconds}


def _fronts(run: _Run, outcome: dict) -> dict:
    """Where the case has a front: {variant: its samples' fronts (S, K)}, and "true" the solver's
    (S,)."""
    if not run.samples:
        return {}
    S = run.test["u"].shape[0]
    measure = lambda u, i: run.family.front_measure(run.cv, u, run.thresholds[i])
    fronts = {v: np.stack([measure(o["results"][3][i], i) for i in range(S)])
              for v, o in outcome.items()}
    return {**fronts, "true": np.array([measure(run.test["u"][i, -1], i) for i in range(S)])}


def _write_variants(path, run: _Run, times: np.ndarray, outcome: dict, fronts: dict) -> None:
    """variants.h5 (the module's docstring)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["report_time"] = float(times[-1])
            f.attrs["components"] = run.problem.components
            if fronts:
                f["front_true"] = fronts["true"]
                f.attrs["front_kind"] = "position" if run.cv.dim == 1 else "volume"
            for variant, o in outcome.items():
                m, v, fl, post = o["results"]
                f[f"{variant}/u_mean"] = m
                f[f"{variant}/u_var"] = v
                f[f"{variant}/flux_mean"] = fl
                f[f"{variant}/u_samples"] = post
                if fronts:
                    f[f"{variant}/front"] = fronts[variant]


def _scores(run: _Run, data: dict, outcome: dict, fronts: dict) -> dict:
    """Every variant's scores, update times, exactness of its own rows, defect widening and front
    error."""
    scores, scored = {}, [sc.scored for sc in run.scenario]
    for variant, o in outcome.items():
        m, v, fl, _ = o["results"]
        scores[variant] = run.family.scores(run.cv, data, run.problem.layout, scored, m, v, fl)
        phases = o["phases"]
        scores[variant].update(update_seconds=phases["total"],
                               mean_update_seconds=phases["total_mean"],
                               plan_seconds=o["plan_seconds"],
                               update_phases={k: x for k, x in phases.items()
                                              if not k.startswith("total") and k != "plan"},
                               row_residual=o["own_rows"], front_error=None, front_std=None)
        if variant in run.references:
            q, f = zip(*o["widened"]) if o["widened"] else ((), ())
            scores[variant]["defect"] = {"test": [None if x is None else float(x) for x in q],
                                         "variance_scale": [float(x) for x in f],
                                         "validation": {where: list(map(float, r))
                                                        for where, r
                                                        in run.references[variant].items()}}
        if fronts:
            scores[variant]["front_error"] = float(np.mean(np.abs(fronts[variant].mean(axis=1)
                                                                  - fronts["true"])))
            scores[variant]["front_std"] = float(np.mean(fronts[variant].std(axis=1)))
    return scores


def scenario_prior(pred: dict, i: int, problem, covariance: str):
    """(mean, per-entry variance, and the update's covariance diagonal and low-rank factor) of
    scenario i's state vector x = [u^1..u^T, Φ^1..Φ^T], from an ensemble prediction; a family
    whose rows hold each output time on its own gets the members' deviations split by time.
    ``covariance = "none"``: the mean and variance alone (diagonal and factor None)."""
    layout = problem.layout
    mean = layout.pack(pred["u_mean"][i, 1:], pred["flux_mean"][i])
    var = layout.pack(pred["u_var"][i, 1:], pred["flux_var"][i])
    if covariance == "none":
        return mean, var, None, None
    dev = (np.stack([layout.pack(pred["u_dev"][i, m, 1:], pred["flux_dev"][i, m])
                     for m in range(pred["u_dev"].shape[1])])
           if covariance in LOW_RANK else None)   # "diagonal" does not use them
    diag, U = prediction_covariance(var, dev, covariance)
    return mean, var, diag, time_blocks(U, layout) if problem.instantaneous else U


def _inflate(diag: np.ndarray, U: np.ndarray | None, layout: StateLayout, inflation: float):
    """The prior covariance with the fluxes' variances scaled by ``inflation``."""
    scale = np.ones(layout.size)
    scale[layout.T * layout.N:] = inflation
    return diag * scale, None if U is None else U * np.sqrt(scale)[:, None]


def _validation_scenarios(case, problem, validation: dict | None, variants) -> dict:
    """{variant: the validation scenarios with its rows} for every constrained variant of
    ``variants`` (none without validation scenarios). Each scenario's boundary and known-mass
    rows are built once for all variants, each variant's G once for all scenarios (only b
    changes, as for the test scenarios); the prediction is calibrated as the test's."""
    constrained = [v for v in variants if v not in ("raw", "hardc") and v not in ENSEMBLE_VARIANTS]
    if validation is None or not constrained:
        return {}
    split, pred = validation["split"], validation["pred"]
    layout = problem.layout
    flux = np.zeros(layout.size, bool)
    flux[layout.T * layout.N:] = True
    out, built = {v: [] for v in constrained}, {}
    for i in range(split["u"].shape[0]):
        data = problem.scenario(split, i)
        mean, _, diag, U = scenario_prior(pred, i, problem, case.constraints["covariance"])
        for variant in constrained:
            if problem.available(variant, data):
                out[variant].append(ValidationScenario(problem.rows(variant, data, built), mean,
                                                       diag, U, flux, split["u"][i, 1:]))
    return out


class _GatheredUpdate:
    """A distributed update as the validation's serial code uses one: ``mean`` returns the
    posterior mean's states (all the validation scores) on every rank (collective), then its
    ``defect``; no plan."""

    plan = None

    def __init__(self, update, comm: MPI.Comm, states: slice):
        self.update, self.comm, self.states = update, comm, states

    def mean(self, mu: np.ndarray) -> np.ndarray:
        local = self.update.mean(mu[self.update.entries])
        return self.comm.bcast(self.update.gather(local, part=self.states), root=0)

    @property
    def defect(self) -> float:
        return self.update.defect

    def destroy(self) -> None:
        self.update.destroy()


def _distributed_maker(owner: np.ndarray, comm: MPI.Comm, layout: StateLayout):
    """The validation's update maker under ``parallel = partition`` (the plan is not used)."""
    from hybrid.constraints.distributed import DistributedUpdate

    def make(G, b, var, U, sigma, plan=None):
        return _GatheredUpdate(DistributedUpdate(G, b, var, U, sigma, owner, comm), comm,
                               slice(0, layout.T * layout.N))
    return make


def _flux_inflation(case, problem, scenarios: dict, make=None,
                    per_scenario: dict | None = None) -> tuple[float, dict, float]:
    """The flux-variance inflation of the main variant chosen on its validation scenarios
    (``make``: how to build an update, serial by default; ``per_scenario`` receives each λ's
    ratios)."""
    main = main_variant(case)
    if not scenarios.get(main):
        return 1.0, {}, 1.0
    return choose_flux_inflation(scenarios[main], problem.state_weights,
                                 float(case.constraints["sigma"]),
                                 candidates=tuple(case.constraints["flux_inflations"]),
                                 layout=problem.layout, make=make, per_scenario=per_scenario)


def _choose_prior(case, problem, checks: dict, make=None):
    """(λ, its validation table, the case-level prior shape with the fluxes inflated by λ or None,
    the choice's record for metrics.json, the validation scenarios under the chosen prior).

    ``[constraints] prior_shape``: ``scenario`` keeps each scenario's own variances (G Σ Gᵀ
    factored once per scenario); ``case`` gives every test scenario inside the training span the
    prior s · diag(d₀), d₀ the mean of the validation scenarios' calibrated variances and s the
    scenario's own overall scale (:func:`~hybrid.constraints.selection.shape_scale`), so that one
    factorisation per case serves every scenario's mean, variance and samples (λ is then chosen
    under the shape alone: the per-scenario sweep, one factorisation per λ and validation
    scenario, is not run); ``auto`` takes the
    case shape unless the per-scenario variances do better on validation by more than a standard
    error (each validation scenario's shape left out of its own mean). The shape needs an exact
    update (σ_G = 0), the diagonal covariance and two validation scenarios."""
    c, main = case.constraints, main_variant(case)
    record = {"setting": c["prior_shape"], "chosen": "scenario"}
    shaped = {v: shaped_scenarios(group, problem.layout, problem.state_weights)
              for v, group in checks.items()}
    possible = (c["prior_shape"] != "scenario" and not float(c["sigma"])
                and c["covariance"] == "diagonal" and bool(shaped.get(main)))
    d0 = lambda: np.mean([s.var for s in checks[main]], axis=0)
    per_case = {}
    if possible:
        lam, table_case, _ = _flux_inflation(case, problem, shaped, make, per_case)
        if c["prior_shape"] == "case" and lam in per_case:   # asked for: the per-scenario sweep
                                                             # (a factorisation per λ and
                                                             # validation scenario) is not run
            record.update(chosen="case", validation_mse_ratio={"case": float(per_case[lam].mean())},
                          flux_inflation={"case": lam})
            return lam, table_case, _inflate(d0(), None, problem.layout, lam)[0], record, shaped
    per = {}
    inflation, table, _ = _flux_inflation(case, problem, checks, make, per)
    if not possible or inflation not in per or lam not in per_case:
        return inflation, table, None, record, checks
    record.update(validation_mse_ratio={"scenario": float(per[inflation].mean()),
                                        "case": float(per_case[lam].mean())},
                  flux_inflation={"scenario": inflation, "case": lam})
    if c["prior_shape"] == "auto" and not prefers_case_shape(per[inflation], per_case[lam]):
        return inflation, table, None, record, checks
    record["chosen"] = "case"
    return lam, table_case, _inflate(d0(), None, problem.layout, lam)[0], record, shaped


def _posterior_scales(case, problem, group: list, inflation: float | None,
                      variant: str = "") -> np.ndarray | None:
    """Per output time, the factor on the main variant's posterior state variance at which 90% of
    the validation scenarios' errors after the update fall inside its 90% interval
    (:func:`~hybrid.metrics.coverage_scale`, as the ensemble's own calibration), under the prior
    of test scenarios inside the span (``group``: the validation scenarios under it, fluxes
    inflated by ``inflation``), or with ``inflation`` None under the prior of those outside it
    (:func:`~hybrid.constraints.selection.outside_prior`, in the free-flux limit where the test
    scenarios' updates take it; ``group`` the validation scenarios with their own variances). The
    update moves both the error and the variance, so a calibrated prior does not make a calibrated
    posterior (measured: 0.97 coverage on burgers-1d with the case shape). None with
    ``[constraints] calibrate = false``, fewer than two validation scenarios, or above
    DIRECT_ROWS rows: each rank computes it serially, alike, so no rank count changes it."""
    layout = problem.layout
    if not case.constraints["calibrate"] or len(group) < 2 or \
            group[0].rows.G.shape[0] > DIRECT_ROWS:
        return None
    sigma = float(case.constraints["sigma"])
    states, plans, splits, found = slice(0, layout.T * layout.N), {}, {}, []
    try:
        for k, s in enumerate(group):
            if inflation is not None:
                (G, b), (diag, U) = (s.rows.G, s.rows.b), _inflate(s.var, s.U, layout, inflation)
            else:
                (G, b, diag), U = _outside_rows(problem, s, variant, splits, sigma), None
            key = "rows" if G is s.rows.G else "states"
            if G.shape[0]:
                update = GaussianUpdate(G, b, diag, U, sigma, plan=plans.get(key), layout=layout)
                plans[key] = update.plan
                m, v, _ = update.posterior(s.mean, 0, int(case.seed) * 1000 + 500 + k,
                                           entries=states)
                update.destroy()
            else:   # no row moves the states: the prior's
                m, v = s.mean, diag[states]
            found.append((s.truth, m[states].reshape(s.truth.shape), v.reshape(s.truth.shape)))
    except ConstraintError:
        return None
    finally:
        for plan in plans.values():
            if plan is not None:
                plan.destroy()
    truth, mean, var = (np.array(a) for a in zip(*found))
    return coverage_scale(truth, mean, var)


def _validation_defects(case, problem, scenarios: dict, inflation: float, make=None,
                        inside: dict | None = None) -> dict:
    """{variant: {"inside" | "outside": the validation scenarios' defect statistics}}
    (:func:`~hybrid.constraints.selection.defect_scale`) of each constrained variant under the
    priors of test scenarios inside the training span (fluxes inflated by λ) and outside it
    (:func:`~hybrid.constraints.selection.outside_prior`); empty with
    ``[constraints] defect_scale = false``. ``inside``: the validation scenarios under the inside
    prior where it is not their own variances (the case-level shape of :func:`_choose_prior`)."""
    if not case.constraints["defect_scale"]:
        return {}
    sigma, out, layout = float(case.constraints["sigma"]), {}, problem.layout
    for variant, group in scenarios.items():
        if not group:
            continue
        plans, splits, out[variant] = {}, {}, {}
        try:
            for where in ("inside", "outside"):
                q = []
                for s in (inside or scenarios)[variant] if where == "inside" else group:
                    if where == "inside":
                        G, b = s.rows.G, s.rows.b
                        diag, U = _inflate(s.var, s.U, layout, inflation)
                    else:   # as the test scenarios' updates; in the free-flux limit the defect
                            # is the state rows' (none: no reference)
                        (G, b, diag), U = _outside_rows(problem, s, variant, splits, sigma), None
                        if not G.shape[0]:
                            continue
                    key = "rows" if G is s.rows.G else "states"
                    update = (make(G, b, diag, U, sigma) if make is not None else
                              GaussianUpdate(G, b, diag, U, sigma, plan=plans.get(key),
                                             layout=layout))
                    plans[key] = update.plan
                    update.mean(s.mean)
                    q.append(update.defect)
                    update.destroy()
                out[variant][where] = q
        except ConstraintError:   # no reference where a validation update
                                  # fails: that variant is not widened
            out.pop(variant)
        for plan in plans.values():
            if plan is not None:
                plan.destroy()
    return out


def _constrain(variant, rows, mean, var, diag, U, sigma, owner, comm, seed, layout, samples: int,
               plans: dict, shape: np.ndarray | None = None, case_seed: int = 0):
    """(mean of x, variance of the states, states at the report time of ``samples`` posterior
    samples) of one scenario on rank 0 (None elsewhere), the seconds of each phase of the
    update, and the update's defect statistic (None without rows). ``plans`` caches the serial
    update's :class:`UpdatePlan` of each variant's rows (distributed: its
    :class:`~hybrid.constraints.distributed.DistributedShapePlan` where ``shape`` is given);
    ``shape``, the case-level prior shape that ``diag`` is a multiple of (fixed on the plan,
    :meth:`UpdatePlan.fix`; its samples seeded by ``case_seed`` serially and distributed)."""
    states, final = slice(0, layout.T * layout.N), layout.u(layout.T)

    def prior(k: int) -> np.ndarray:
        # the report time's entries of prior sample k: its normals up to there only (a prefix of
        # the whole sample's, the same numbers: 4x fewer draws on a 2-D mesh's states and fluxes)
        stop = final.stop
        return prior_deviation(seed, k, np.sqrt(np.broadcast_to(diag, mean.shape)[:stop]),
                               None if U is None else U[:stop], np.arange(stop), stop)[final]

    t0 = time.perf_counter()
    if rows is None or variant == "hardc":
        m, phases = mean, {}
        if variant == "hardc":   # Euclidean projection (Σ = I); the variance is left as it was
            update, built = _update(variant, rows, 1.0, None, 0.0, owner, comm, plans, layout)
            m = update.gather(update.mean(mean[update.entries]))
            phases = {**getattr(update, "timings", {}), "plan": built}
        phases = {**phases, "total_mean": time.perf_counter() - t0 - phases.get("plan", 0.0)}
        if comm.rank != 0:
            return None, None, None, phases, None
        post = (np.stack([m[final] + prior(k) for k in range(samples)]) if samples
                else np.zeros((0, layout.N)))
        return m, var[states], post, phases, None
    update, built = _update(variant, rows, diag, U, sigma, owner, comm, plans, layout, shape,
                            case_seed)
    if comm.size == 1:
        m, v, post = update.posterior(mean, samples, seed, entries=states)
        phases = {**update.timings, "plan": built + update.timings.get("plan", 0.0)}
        phases["total_mean"] = phases["assemble"] + phases["factor"] + phases["mean"]
        phases["mean_iterations"] = float(update.mean_iterations)
        update.destroy()
        return m, v, post[:, final], phases, update.defect
    t1 = time.perf_counter()
    local_mean = update.mean(mean[update.entries])
    m = update.gather(local_mean)
    t2 = time.perf_counter()
    phases = {"total_mean": t2 - t0 - built, "factor": t1 - t0 - built, "mean": t2 - t1,
              "plan": built}
    defect = update.defect
    if isinstance(update, ShapedUpdate):
        # the shape's deviations, drawn once per case (its seconds the plan's): this scenario's
        # are √s times them, its variance s times theirs
        # (seeded by the case's seed, as the serial plan's fixed shape: the same samples at 1 and
        # 2 ranks)
        key, plan = (case_seed, samples), update.plan
        if key not in plan.kept:
            base = plan.update
            base.b = np.zeros(len(base.row_ids))
            zero = np.zeros(len(base.entries))
            plan.kept[key] = _sample_moments(base, zero, zero, samples, case_seed, layout)
            phases["plan"] += time.perf_counter() - t2
        t3 = time.perf_counter()
        var, drawn = plan.kept[key]
        if comm.rank == 0:
            var, drawn = update.scale * var, m[final] + np.sqrt(update.scale) * drawn
        phases["posterior"] = time.perf_counter() - t3
    else:
        var, drawn = _sample_moments(update, mean[update.entries], local_mean, samples, seed,
                                     layout)
        phases["posterior"] = time.perf_counter() - t2   # as the serial update's
                                                         # phase: samples and variance
    # the share of scenarios MUMPS factored
    phases["count_cholesky"] = float(update.method == "cholesky")
    update.destroy()
    if comm.rank != 0:
        return None, None, None, phases, defect
    return m, np.maximum(var, 0.0), drawn, phases, defect


def _sample_moments(update, prior_mean: np.ndarray, local_mean: np.ndarray, samples: int,
                    seed: int, layout):
    """(the posterior variance of the states, the report time's states of the first ``samples``
    posterior samples) on rank 0 (None elsewhere) of a distributed update from the prior mean
    and the posterior mean on the rank's entries: VARIANCE_SAMPLES Matheron samples in blocks of
    SAMPLE_BLOCK, so memory holds one block of the whole state (200 of 4.5e6 entries would be
    7 GB); each rank sums its entries' deviations from the posterior mean and their squares, and
    sends rank 0 only the report time's states of the kept samples."""
    states, final = slice(0, layout.T * layout.N), layout.u(layout.T)
    shift, square, kept = np.zeros(len(local_mean)), np.zeros(len(local_mean)), []
    for first in range(0, VARIANCE_SAMPLES, SAMPLE_BLOCK):
        count = min(SAMPLE_BLOCK, VARIANCE_SAMPLES - first)
        # the kept samples meet the rows
        block = update.sample(update.prior_samples(prior_mean, count, seed, first), seed,
                              first, rtol=None if first < samples else SAMPLE_RTOL)
        block -= local_mean
        shift += block.sum(axis=0)
        square += (block * block).sum(axis=0)
        if first < samples:
            kept.append(update.gather(block[:samples - first] + local_mean, part=final))
    K = VARIANCE_SAMPLES
    var = update.gather((square - shift * shift / K) / (K - 1), part=states)
    if update.comm.rank != 0:
        return None, None
    return var, np.concatenate(kept) if kept else np.zeros((0, layout.N))


def _free_split(splits: dict, variant: str, rows, layout: StateLayout, sigma: float,
                spent: dict | None = None):
    """The :class:`~hybrid.constraints.freeflux.FreeFluxSplit` of the variant's rows (G is every
    scenario's: built once, kept in ``splits``; its seconds added to ``spent["plan"]``), or None
    where the limit is not computed: soft rows (σ_G > 0) and flux columns shared by three rows
    keep the fluxes' finite inflation."""
    if sigma:
        return None
    if variant not in splits or splits[variant][0] is not rows.G:
        t0 = time.perf_counter()
        splits[variant] = (rows.G, free_flux_split(rows.G, layout.T * layout.N))
        if spent is not None:
            spent["plan"] = spent.get("plan", 0.0) + time.perf_counter() - t0
    return splits[variant][1]


def _outside_rows(problem, s: ValidationScenario, variant: str, splits: dict, sigma: float):
    """(G, b, diagonal) of validation scenario ``s``'s update under the prior of test scenarios
    outside the span (:func:`~hybrid.constraints.selection.outside_prior`, no ensemble part), as
    their updates take it: in the free-flux limit where it is computed, the state rows only (G
    may then have none), else every row with the fluxes inflated."""
    diag, _ = outside_prior(s.var, problem.layout, problem.state_weights, s.U)
    split = _free_split(splits, variant, s.rows, problem.layout, sigma)
    if split is None:
        return s.rows.G, s.rows.b, diag
    return split.states, split.state_rhs(s.rows.b), diag


def _constrain_free(variant, rows, split, mean, diag, owner, comm, seed, layout, samples: int,
                    plans: dict, shape: np.ndarray | None = None, case_seed: int = 0):
    """:func:`_constrain` under the even prior ``diag`` in the limit of free fluxes
    (:mod:`hybrid.constraints.freeflux`): the states' update on the rows that leave the fluxes
    free, which gives the state variance, the samples and the defect statistic, then the
    fluxes' update on the rest with the states fixed. That one leaves the states as they are,
    whatever the flux variances: with a case-level ``shape`` it takes the shape's (one
    factorisation for every scenario) instead of the scenario's own."""
    states = ConstraintRows(split.states, split.state_rhs(rows.b))
    m, v, post, phases, defect = _constrain(variant + "/states", states if states.count else None,
                                            mean, diag, diag, None, 0.0, owner, comm, seed, layout,
                                            samples, plans)
    t0 = time.perf_counter()
    if comm.size > 1:
        m = comm.bcast(m, root=0)
    if split.fluxes.shape[0]:
        fluxes = ConstraintRows(split.fluxes, split.flux_rhs(rows.b, m))
        update, built = _update(variant + "/fluxes", fluxes, diag if shape is None else shape,
                                None, 0.0, owner, comm, plans, layout, shape, case_seed)
        m = update.gather(update.mean(m[update.entries]))
        update.destroy()
        phases["plan"] = phases.get("plan", 0.0) + built
        phases["total_mean"] += time.perf_counter() - t0 - built
    if comm.rank != 0:
        return None, None, None, phases, defect
    return m, v, post, phases, defect


def _update(variant, rows, diag, U, sigma, owner, comm, plans: dict, layout=None, shape=None,
            seed: int = 0):
    """(the update of a variant's rows, the seconds spent building the variant's plan here).
    Serial updates share the variant's :class:`UpdatePlan`: its first use builds it (G's
    pattern, the value map, the ordering and symbolic factorisation, :meth:`UpdatePlan.prepare`)
    on this scenario's values, timed apart as the case's once-per-variant cost, like the
    surrogate's loading; every scenario's update then refactors numerically, or, where ``shape``
    is given, the plan factors it once (:meth:`UpdatePlan.fix`, timed with the plan) and updates
    of its multiples refactor nothing. Distributed updates have a plan only for multiples of
    ``shape`` (:class:`~hybrid.constraints.distributed.DistributedShapePlan`: one factorisation
    per variant); at most one is kept at a time (each holds a MUMPS factorisation), so the
    caller takes the scenarios of one plan together."""
    if comm.size > 1:
        return _distributed_update(variant, rows, diag, U, sigma, owner, comm, plans, shape)
    built = 0.0
    if variant not in plans:
        t0 = time.perf_counter()
        plans[variant] = UpdatePlan(rows.G, layout=layout)
        plans[variant].prepare(diag, sigma)
        built = time.perf_counter() - t0
    plan = plans[variant]
    if shape is not None and plan.shape is None and plan.can_fix:
        t0 = time.perf_counter()
        plan.fix(shape, seed)
        built += time.perf_counter() - t0
    update = GaussianUpdate(rows.G, rows.b, diag, U, sigma, plan=plans[variant], layout=layout)
    plans[variant] = update.plan
    return update, built






def _distributed_update(variant, rows, diag, U, sigma, owner, comm, plans: dict, shape):
    """:func:`_update` over the partition: (the update, the seconds spent building its plan)."""
    scale = None if shape is None or sigma or U is not None else multiple_of(diag, shape)
    if scale is None:
        return make_update(rows, diag, U, sigma, owner, comm), 0.0
    built, plan = 0.0, plans.get(variant)
    if plan is None or not plan.serves(rows.G, shape):
        t0 = time.perf_counter()
        for key in list(plans):   # one MUMPS factorisation in memory at a time
            plans.pop(key).destroy()
        plan = plans[variant] = DistributedShapePlan(rows.G, shape, owner, comm)
        built = time.perf_counter() - t0
    return plan.bind(rows.b, scale), built


def read_variants(path, datasets: tuple | None = None) -> tuple[dict, dict]:
    """The one reader of ``variants.h5`` (every family): ({variant: {dataset: array}} in the
    ablation table's order, then any other group by name; {front_true, front_kind,
    report_time}). ``datasets``: read only these, and only groups that have them all."""
    with h5py.File(path, "r") as f:
        groups = [k for k, g in f.items() if isinstance(g, h5py.Group) and
                  (datasets is None or all(d in g for d in datasets))]
        groups.sort(key=lambda v: (VARIANTS.index(v) if v in VARIANTS else len(VARIANTS), v))
        variants = {k: {d: f[k][d][()] for d in (datasets or f[k])} for k in groups}
        extra = {"front_true": f["front_true"][()] if "front_true" in f else None,
                 "front_kind": str(f.attrs.get("front_kind", "")),
                 "report_time": float(f.attrs["report_time"])}
    return variants, extra
