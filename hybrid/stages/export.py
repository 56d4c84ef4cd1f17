"""``hybrid export CASE``: XDMF + HDF5 time series of the solver and the constrained surrogate.

One series per test scenario, ``OUTPUT/export/test-NNN.xdmf`` (``--train`` adds the
training scenarios, which have solver fields only), with physical time values. Solver
fields: ``u`` (the reference solution) and ``balance_residual`` (the per-control-volume
balance ``|K|(u^n - u^{n-1}) + Σ_f s Φ_f - S`` of each output interval; zero at t = 0).

Unless ``--solver-only``, the export first runs ``hybrid predict`` (and the solve and
training it needs) and adds, for every constraint variant ``V`` in
``OUTPUT/predict/variants.h5``:

``P_mean``
    the variant's predictive mean ``V/u_mean``
``P_std``
    its predictive standard deviation ``sqrt(max(V/u_var, 0))``
``P_abs_error``
    ``|P_mean - u|`` against the reference solution
``P_balance_residual``
    the balance above evaluated with the variant's ``u_mean`` and ``flux_mean`` and the
    solver's source: round-off for the per-cell variants, not for ``raw``

where the array prefix ``P`` is the variant's name with ``+`` and ``-`` replaced by ``_``,
so that every array name is a plain identifier (ParaView's calculator and Python shell
use them as variable names): ``raw`` → ``raw``, ``hardc`` → ``hardc``, ``softc`` →
``softc``, ``boon`` → ``boon``, ``unpadded`` → ``unpadded``, ``global`` → ``global``,
``per-cell`` → ``per_cell``, ``per-cell+boundary``
→ ``per_cell_boundary`` (see :func:`field_prefix`). Datasets of variants.h5 other than
``u_mean``, ``u_var`` and ``flux_mean`` are not exported.

Values live where the control volumes live: on vertices (point data) for ``dual``, on
cells (cell data) for ``cells``. Series are spread over ranks like the solve.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mpi4py import MPI

from hybrid.errors import CaseError
from hybrid.export.vtu import write_vtu_series
from hybrid.export.xdmf import field_prefix, write_time_series
from hybrid.files import commit_pending, commits_together, mark_stage_done, stage_is_current
from hybrid.dataset import scenario_parameters
from hybrid.parallel import ScenarioProgress, collective, my_indices, root_print
from hybrid.problems import problem_for
from hybrid.constraints.driver import read_variants as read_variant_groups
from hybrid.stages.predict import predict_digest, run_predict
from hybrid.stages.solve import read_dataset, run_solve, solve_digest

__all__ = ["run_export", "cv_fields", "field_prefix", "read_variants"]

_VARIANT_DATASETS = ("u_mean", "u_var", "flux_mean")


def cv_fields(kind: str, cvd: dict, fields: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Place control-volume fields (T, N) on the mesh: point data for dual, cell data for cells."""
    if kind == "dual":
        expand = cvd["cv_of_entity"]  # vertex -> control volume (periodic partners share one)
        return {k: v[:, expand] for k, v in fields.items()}, {}
    return {}, dict(fields)


def read_variants(path: Path | str) -> dict[str, dict[str, np.ndarray]]:
    """The variants of ``variants.h5``: ``{name: {u_mean, u_var, flux_mean}}`` in the ablation
    table's order; groups without those datasets and every other dataset are skipped."""
    out = read_variant_groups(path, _VARIANT_DATASETS)[0]
    prefixes = [field_prefix(v) for v in out]
    if len(set(prefixes)) != len(prefixes):
        raise ValueError(f"{path}: variants {list(out)} map to clashing array names {prefixes}")
    return out


EXPORT_FORMATS = ("xdmf", "vtu")


@commits_together
def run_export(case, *, force: bool = False, train: bool = False, solver_only: bool = False,
               comm: MPI.Comm = MPI.COMM_WORLD, progress: bool = True, fmt: str = "xdmf",
               variants_file: Path | None = None, out: Path | None = None,
               digest: str | None = None) -> list[Path]:
    """Write the series (collective); returns the paths of the .xdmf files, or with
    ``fmt = "vtu"`` of the .pvd collections (:mod:`hybrid.export.vtu`). ``variants_file``,
    ``out`` and ``digest``: another stage's variants (``hybrid constrain``), its folder and hash."""
    if fmt not in EXPORT_FORMATS:
        raise CaseError(f"unknown export format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}",
                        key="--format")
    if variants_file is not None:
        dataset = Path(case.output_dir) / "solve" / "dataset.h5"
    elif solver_only:
        dataset = run_solve(case, comm=comm, progress=progress, announce=False)
        digest = solve_digest(case)
    else:
        variants_file = (run_predict(case, comm=comm, progress=progress, announce=False)
                         / "variants.h5")
        dataset = Path(case.output_dir) / "solve" / "dataset.h5"
        # the predict stage's sections (TRAIN_SECTIONS + constraints): the variants change when
        # these do
        digest = predict_digest(case) + "+variants"
    digest += ("+train" if train else "") + ("" if fmt == "xdmf" else f"+{fmt}")
    out = Path(out) if out is not None else Path(case.output_dir) / "export"
    data = read_dataset(dataset)
    splits = ["test"] + (["train"] if train else [])
    tasks = [(s, i) for s in splits if s in data for i in range(data[s]["u"].shape[0])]
    names = [out / f"{s}-{i:03d}.{'pvd' if fmt == 'vtu' else 'xdmf'}" for s, i in tasks]
    outputs = [p.name for p in names] + ([f"{p.stem}/step-{k:04d}.vtu" for p in names
                                          for k in range(len(data.times))]
                                         if fmt == "vtu" else [])
    inputs = [dataset.parent] + ([] if variants_file is None else [Path(variants_file).parent])
    if not force and stage_is_current(out, digest, outputs, inputs):
        root_print(f"export: up to date ({out})", comm=comm)
        return names
    variants = {} if variants_file is None else read_variants(variants_file)
    problem = problem_for(case)
    for v, arrays in variants.items():
        expected = problem.state_shape(data.test.u.shape)
        if arrays["u_mean"].shape != expected:
            raise RuntimeError(f"{variants_file}: {v}/u_mean has shape {arrays['u_mean'].shape}, "
                               f"the solver's test states {data['test']['u'].shape}; "
                               "rerun hybrid predict --force")
    mesh, cvd, kind = data.mesh, data.control_volumes, data.control_volumes_kind
    cv = data.cv
    with ScenarioProgress(comm, len(tasks), "export", enabled=progress) as bar, collective(comm):
        for j in my_indices(len(tasks), comm):
            split, i = tasks[j]
            d = data[split]
            fields = problem.solver_fields(d, i, cvd)
            if split == "test":
                for v, a in variants.items():
                    fields.update(problem.variant_fields(mesh, cv, cvd, v, a, i, d))
            point, cell = cv_fields(kind, cvd, fields)
            params = scenario_parameters(d, i)
            attributes = {"case": case.name, "scenario": f"{split} {i}",
                          "parameters": ", ".join(f"{k}={v:.6g}" for k, v in params.items())}
            if split == "test":
                attributes["variants"] = ", ".join(variants)
            if fmt == "vtu":
                write_vtu_series(names[j], mesh.points, mesh.cells, mesh.cell_type, data.times,
                                 point, cell)
            else:
                write_time_series(names[j], mesh.points, mesh.cells, mesh.cell_type, data.times,
                                  point, cell, attributes=attributes)
            bar.done()
    with collective(comm):   # every rank's series in place before rank 0 hashes them
        commit_pending()
    with collective(comm):
        if comm.rank == 0:
            mark_stage_done(out, digest, outputs, inputs, files=[p.name for p in names],
                            variants=list(variants), format=fmt)
            what = problem.export_summary(list(variants), train)
            problem.export_figures(case, data, out)
            root_print(f"export: {len(names)} ParaView series in {out} (open e.g. "
                       f"{names[0].name if names else '-'}): {what}", comm=comm)
    return names
