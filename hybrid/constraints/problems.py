"""What the variant driver needs to know about a problem family: its state layout and the
rows of every variant, for any scenario of a split.

Two implementations, one driver (:func:`hybrid.constraints.driver.run_variants`):

:class:`ScalarRows` (gpme, burgers, wave)
    x = [u^1 … u^T, Φ^1 … Φ^T], N control-volume values per output time and the fluxes
    integrated over each output interval; the rows of :mod:`hybrid.constraints.variants`
    (per-cell balances couple consecutive times).
:class:`FlowRows` (navier-stokes)
    the same layout with d N velocity components per output time (component blocks one
    after the other) and each time's instantaneous face fluxes; the rows of
    :mod:`hybrid.constraints.flow` hold each output time on its own, so G is block diagonal
    over times. The prior's member deviations are split by output time as well
    (:func:`time_blocks`), so that the one update over all times equals T independent
    updates, one per time (tested), and no time is corrected through another's residual.

Each scenario's data (boundary values, initial state, sources) comes from
:meth:`scenario`; :meth:`rows` builds a variant's G once per driver (``built``) and only
its right-hand side afterwards, since G is the same for every scenario of a case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from hybrid.constraints.flow import flow_rhs, flow_rows, flux_divergence_rows, wall_data
from hybrid.constraints.rows import ConstraintRows, StateLayout
from hybrid.constraints.variants import (ENSEMBLE_VARIANTS, VARIANTS, boundary_rows,
                                         known_mass_rows, variant_rhs, variant_rows)
from hybrid.dataset import scenario_parameters
from hybrid.errors import CaseError

__all__ = ["ScalarRows", "FlowRows", "ScenarioData", "time_blocks", "FLOW_VARIANTS"]

FLOW_VARIANTS = ("raw", "hardc", "boon", "unpadded", "global", "per-cell", "per-cell+boundary")


@dataclass
class ScenarioData:
    """One scenario's data for the rows: ``params`` by name, ``u0`` its initial state,
    ``source`` the integrated source (scalar) and ``boundary`` its boundary data (scalar:
    the :func:`boundary_rows`; flow: :func:`wall_data`); ``known`` ProbConserv's known-mass
    rows where the case has them; ``scored`` the rows the scores measure boundary errors by."""

    params: dict
    u0: np.ndarray
    source: np.ndarray | None
    boundary: object
    known: ConstraintRows | None = None
    scored: object = None


class ScalarRows:
    """The rows of the scalar families (see the module's docstring)."""

    components = 1
    instantaneous = False
    variants = VARIANTS

    def __init__(self, case, cv, times: np.ndarray):
        self.case, self.cv, self.times = case, cv, np.asarray(times, float)
        self.layout = StateLayout(cv.num_cvs, cv.num_faces, len(times) - 1)

    @property
    def state_weights(self) -> np.ndarray:
        """The volume of each entry of one output time's states (the scores' weights)."""
        return np.tile(self.cv.volume, self.components)

    def scenario(self, split: dict, i: int, scored: bool = False) -> ScenarioData:
        """Scenario i's data (``scored``: also the rows the scores measure by, which add the
        states' boundary derivative where the rows impose a flux)."""
        case, cv, layout, times = self.case, self.cv, self.layout, self.times
        params = scenario_parameters(split, i)
        boundary = boundary_rows(case, cv, layout, times, params)
        known = known_mass_rows(case, cv, layout, split["u"][i, 0], params, boundary, times)
        return ScenarioData(params, split["u"][i, 0], split["source"][i], boundary, known,
                            boundary_rows(case, cv, layout, times, params, derivative_rows=True)
                            if scored else None)

    def available(self, variant: str, data: ScenarioData) -> bool:
        """Whether the scenario has what the variant's rows need (known mass: its closed form)."""
        return variant != "known-mass" or data.known is not None

    def rows(self, variant: str, data: ScenarioData, built: dict) -> ConstraintRows | None:
        """The variant's rows for this scenario (None: no rows); ``built`` caches each variant's
        G."""
        cv, layout = self.cv, self.layout
        if variant in built:
            return ConstraintRows(built[variant].G,
                                  variant_rhs(variant, cv, layout, data.u0, data.source,
                                              data.boundary, data.known), built[variant].kind)
        rows = variant_rows(variant, cv, layout, data.u0, data.source, data.boundary, data.known)
        if rows is not None:
            built[variant] = rows
        return rows

    def owners(self) -> np.ndarray:
        """Owner rank of every entry of x (the control volumes' partition must be assigned)."""
        from hybrid.constraints.distributed import entry_owners
        return entry_owners(self.cv, self.layout.T, self.components)


class FlowRows(ScalarRows):
    """The rows of incompressible flow (see the module's docstring)."""

    instantaneous = True
    variants = FLOW_VARIANTS

    def __init__(self, case, cv, times: np.ndarray):
        super().__init__(case, cv, times)
        self.components = cv.dim
        self.layout = StateLayout(cv.dim * cv.num_cvs, cv.num_faces, len(times) - 1)
        # column of each entry of one time's flow unknowns (d N velocities, F fluxes) in x, per time
        L = self.layout
        self._columns = np.stack([np.concatenate([np.arange(L.u(n).start, L.u(n).stop),
                                                  np.arange(L.flux(n).start, L.flux(n).stop)])
                                  for n in range(1, L.T + 1)])

    def scenario(self, split: dict, i: int, scored: bool = False) -> ScenarioData:
        """Scenario i's data: its parameters, initial velocities and :func:`wall_data` (no
        source, no known-mass rows); the scores measure by the wall data, so ``scored``
        changes nothing."""
        params = scenario_parameters(split, i)
        walls = wall_data(self.case, self.cv, self.times, params)
        return ScenarioData(params, split["u"][i, 0], None, walls, None, walls)

    def _one_time(self, variant: str, walls: list, bflux: np.ndarray) -> ConstraintRows:
        if variant == "global":   # the per-cell rows summed: no net volume flux out of the domain
            div = flux_divergence_rows(self.cv)
            return ConstraintRows(sp.csr_matrix(div.G.sum(axis=0)), np.zeros(1),
                                  np.array(["global"], dtype="U24"))
        if variant == "per-cell":
            return flux_divergence_rows(self.cv)
        if variant in ("hardc", "per-cell+boundary"):
            return flow_rows(self.cv, walls, bflux)
        raise CaseError(f"variant {variant!r} is not available for navier-stokes "
                        f"(choose from {', '.join(FLOW_VARIANTS)})", key="constraints.compare")

    def rows(self, variant: str, data: ScenarioData, built: dict) -> ConstraintRows | None:
        """Every output time's rows, block diagonal in x."""
        if variant == "raw" or variant in ENSEMBLE_VARIANTS:
            return None
        walls_t, bflux = data.boundary
        if variant in built:   # G is every scenario's: only the walls' data change b
            rows = built[variant]
            b = (np.concatenate([flow_rhs(self.cv, walls_t[n], bflux[n])
                                 for n in range(self.layout.T)])
                 if variant in ("hardc", "per-cell+boundary") else np.zeros(rows.count))
            return ConstraintRows(rows.G, b, rows.kind)
        blocks = [self._one_time(variant, walls_t[n], bflux[n]) for n in range(self.layout.T)]
        b = np.concatenate([block.b for block in blocks])
        G = sp.vstack([block.G.tocsr() for block in blocks]).tocsr()
        offsets = np.repeat(np.arange(len(blocks)), [block.count for block in blocks])
        cols = self._columns[np.repeat(offsets, np.diff(G.indptr)), G.indices]
        G = sp.csr_matrix((G.data, cols, G.indptr), shape=(G.shape[0], self.layout.size))
        G.sort_indices()
        built[variant] = ConstraintRows(G, b, np.concatenate([block.kind for block in blocks]))
        return built[variant]


def time_blocks(U: np.ndarray | None, layout: StateLayout) -> np.ndarray | None:
    """Member deviations (size, M) split by output time: column block n holds only time n's
    states and fluxes, so the low-rank covariance U Uᵀ has no entry between two times."""
    if U is None:
        return None
    T, M = layout.T, U.shape[1]
    out = np.zeros((U.shape[0], T * M))
    for n in range(1, T + 1):
        cols = slice((n - 1) * M, n * M)
        out[layout.u(n), cols] = U[layout.u(n)]
        out[layout.flux(n), cols] = U[layout.flux(n)]
    return out
