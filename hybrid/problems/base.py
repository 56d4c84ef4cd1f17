"""The protocol of a problem family: everything a pipeline stage asks of the family it runs.

A stage (``hybrid/stages/``) is the same for every family: it checks its cache, calls the
family's :class:`Problem` where the families differ, writes and prints. Two implementations:
:class:`hybrid.problems.scalar.ScalarProblem` (gpme, burgers, wave: one value per control
volume, fluxes integrated over each output interval) and
:class:`hybrid.problems.flow.FlowProblem` (navier-stokes: d velocity components per control
volume, instantaneous face fluxes), both on the one layout of
:class:`hybrid.constraints.rows.StateLayout`; :func:`hybrid.problems.problem_for` picks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["Problem"]


class Problem:
    """The family-specific half of each stage (see the module's docstring).

    Attributes:
        table_columns: the variants table ``hybrid predict`` prints: (metrics key, header,
            width, format).
        metric_keys: the report's ablation-table columns: (metrics key, header, format).
        external_predictions: whether ``hybrid constrain`` takes a prediction file of this family.
    """

    table_columns: tuple = ()
    metric_keys: tuple = ()
    external_predictions: bool = True
    solver_arrays: tuple = ()      # the names of :meth:`solver_fields`, for export's closing line
    variant_suffixes: tuple = ()   # the suffixes of :meth:`variant_fields`' arrays (``V_<suffix>``)

    # --- solve
    def check(self, case) -> None:
        """Refuse, before any work, what the case asks of this family that it has not."""

    def can_partition(self, case) -> bool:
        """Whether one scenario of the case can be solved over the ranks (``[solver] parallel``)."""
        return False

    def solve(self, case, cv, mesh, params: dict, split: str, index: int, box, comm=None):
        """One scenario's reference trajectory (the ``[solver] petsc_options`` already in force),
        over the ranks of ``comm`` where the family has a partitioned solver (every rank gets
        the whole trajectory), else serially."""
        raise NotImplementedError

    def dataset_arrays(self, trajectories: list) -> dict[str, np.ndarray]:
        """The family's arrays of one split in ``dataset.h5`` (besides ``u``), stacked over
        scenarios."""
        raise NotImplementedError

    def solve_summary(self, cv, trajectories: list) -> tuple[dict, str]:
        """(what the solve stage's stage.json records of the trajectories' exactness, the end of
        its closing line, from its separator on)."""
        raise NotImplementedError

    # --- train, predict
    def view(self, data: dict) -> dict:
        """The dataset as every later stage reads it: each split's ``u`` (S, T+1, C N) and
        ``flux`` (S, T, F) in the layout of :class:`hybrid.constraints.rows.StateLayout`."""
        return data

    def rows(self, case, cv, times: np.ndarray):
        """The family's constraint rows (:mod:`hybrid.constraints.problems`)."""
        raise NotImplementedError

    def scores(self, cv, data: dict, layout, scored: list, u, var, flux) -> dict:
        """Every metric of one variant over the test scenarios (docs/metrics.md)."""
        raise NotImplementedError

    def front_threshold(self, case, params: dict, truth_final: np.ndarray) -> float | None:
        """The level whose crossing is the scenario's front (ProbConserv's downstream task), or
        None when the family has no front."""
        return None

    def front_measure(self, cv, u: np.ndarray, threshold: float) -> np.ndarray:
        """The front of each profile u (..., N) at ``threshold``."""
        raise NotImplementedError

    # --- validate, export
    def note(self, front_kind: str | None) -> str:
        """The report's note under the ablation table."""
        raise NotImplementedError

    def figures(self, case, cv, data: dict, variants: dict, extra: dict, scores: dict,
                out: Path) -> list[Path]:
        """The report's figures."""
        raise NotImplementedError

    def state_shape(self, u_shape: tuple) -> tuple:
        """The shape of a variant's ``u_mean`` for the dataset's ``u`` of this shape."""
        return tuple(u_shape)

    def solver_fields(self, split: dict, i: int, cvd: dict) -> dict[str, np.ndarray]:
        """Scenario i's solver arrays for ParaView, per control volume, (T+1, N[, 3]) each."""
        raise NotImplementedError

    def variant_fields(self, mesh, cv, cvd: dict, variant: str, arrays: dict, i: int,
                       split: dict) -> dict[str, np.ndarray]:
        """Scenario i's arrays of one variant for ParaView (``arrays``: its
        ``u_mean u_var flux_mean``)."""
        raise NotImplementedError

    def export_summary(self, variants: list, train: bool) -> str:
        """What the ParaView series hold, for export's closing line."""
        from hybrid.export.xdmf import field_prefix

        solver = ", ".join(self.solver_arrays)
        if not variants:
            return f"{solver} (solver only)"
        return (f"{solver} and, {'in the test series, ' if train else ''}for the variants "
                f"{', '.join(variants)}, {' '.join('V_' + s for s in self.variant_suffixes)} "
                f"(V = {', '.join(field_prefix(v) for v in variants)})")

    def export_figures(self, case, data: dict, out: Path) -> list[Path]:
        """Figures export draws beside the series."""
        return []
