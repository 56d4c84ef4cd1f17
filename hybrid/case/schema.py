"""Every key a ``case.toml`` may hold: its type, default, allowed values and meaning.

This module is the one place that documents the case format (``hybrid keys`` prints
:func:`describe_keys`); :mod:`hybrid.case.config` validates against it, so a key that is
not listed here is rejected, and a default changed here changes everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "REQUIRED",
    "Key",
    "Section",
    "SECTIONS",
    "TOP_LEVEL",
    "GENERATE",
    "GENERATE_KEYS",
    "GENERATED_BOUNDARIES",
    "BOUNDARY",
    "DISTRIBUTIONS",
    "K_MODELS",
    "FAMILIES",
    "coefficient_defaults",
    "coefficient_users",
    "describe_keys",
]


class _Required:
    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()
"""Default of a key that must be given."""


@dataclass(frozen=True)
class Key:
    """One key of a section.

    ``kind`` is one of: ``string``, ``int``, ``number``, ``bool``, ``choice`` (a string from
    ``choices``), ``choices`` (a list of strings from ``choices``), ``expression``,
    ``expression-or-list`` (a vector of expressions), ``ints`` (an int or a list of ints),
    ``table``, ``k-model`` (a choice or a number), ``coefficient`` (a number), ``strings`` (a list
    of distinct strings).
    ``low``/``high`` bound numbers (``*_open``: the bound itself is excluded).
    """

    name: str
    kind: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def bounds_text(self) -> str:
        """The bounds for messages, ``">= 0 and < 1"``; empty when unbounded."""
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)

    def in_bounds(self, value: float) -> bool:
        """Whether ``value`` lies within ``low``/``high`` (open bounds excluded)."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True

    def allowed_text(self) -> str:
        """What is allowed, for messages: the choices (``k-model``: or a number), else the
        bounds."""
        if self.kind in ("choice", "choices"):
            return ", ".join(self.choices)
        if self.kind == "k-model":
            return ", ".join(self.choices) + ", or a number (= constant with that k)"
        return self.bounds_text()


@dataclass(frozen=True)
class Section:
    """A table of the case file; ``free`` describes keys the user names (parameters, boundaries)."""

    name: str
    doc: str
    keys: tuple[Key, ...] = ()
    free: str = ""

    def __getitem__(self, name: str) -> Key:
        for key in self.keys:
            if key.name == name:
                return key
        raise KeyError(name)

    def names(self) -> list[str]:
        """The names of ``keys``, in order."""
        return [key.name for key in self.keys]


FAMILIES = ("gpme", "burgers", "wave", "navier-stokes")
K_MODELS = ("constant", "power", "stefan")
SHAPES = ("interval", "rectangle", "lshape", "disk", "box")
DISTRIBUTIONS = {
    "uniform": "[low, high]: uniform on the interval (low <= high)",
    "choice": "[v1, v2, ...]: one of the values, equally likely",
    "normal": "[mean, std]: Gaussian (std >= 0)",
}

# Which PDE coefficients each model reads, with defaults (REQUIRED: from [pde] or [parameters]).
_K_MODEL_COEFFICIENTS = {
    "constant": {"k": REQUIRED},
    "power": {"m": REQUIRED},
    "stefan": {"u_star": REQUIRED, "k_max": 1.0, "k_min": 0.0, "smoothing": 0.005},
}
_FAMILY_COEFFICIENTS = {
    "burgers": {"nu": REQUIRED},
    "wave": {"c": REQUIRED},
    "navier-stokes": {"nu": REQUIRED, "rho": 1.0},  # nu may be given as re (nu = 1/re)
}
# families whose unknown is a scalar, so that a scalar source term applies
_SCALAR_FAMILIES = ("gpme", "burgers", "wave")


def coefficient_defaults(family: str, k_model: str | None) -> dict[str, Any]:
    """Coefficients the PDE reads, name -> default (``REQUIRED`` when none)."""
    if family == "gpme":
        return dict(_K_MODEL_COEFFICIENTS[k_model or "constant"])
    return dict(_FAMILY_COEFFICIENTS[family])


def coefficient_users(name: str) -> str:
    """Which families/models read coefficient ``name``, for error messages."""
    if name == "re":
        return 'family = "navier-stokes" (instead of nu; nu = 1/re)'
    if name == "k":
        return 'family = "gpme" (the conductivity model, or the value of a constant k)'
    if name == "source":
        return "family " + ", ".join(_SCALAR_FAMILIES)
    if name == "convection":
        return "family burgers"
    models = [m for m, coefficients in _K_MODEL_COEFFICIENTS.items() if name in coefficients]
    families = [f for f, coefficients in _FAMILY_COEFFICIENTS.items() if name in coefficients]
    parts = []
    if models:
        parts.append(" or ".join(f'k = "{m}"' for m in models) + ' (family = "gpme")')
    if families:
        parts.append("family " + ", ".join(families))
    return " and ".join(parts)


def _k(name, kind, default, doc, **kw) -> Key:
    return Key(name, kind, default, doc, **kw)


SECTIONS: dict[str, Section] = {}


def _section(name: str, doc: str, *keys: Key, free: str = "") -> Section:
    section = Section(name, doc, tuple(keys), free)
    SECTIONS[name] = section
    return section


_section(
    "case", "What the case is; the seed every random choice derives from.",
    _k("name", "string", None, "Name in reports (default: the case directory's name)."),
    _k("description", "string", "", "One line shown in reports."),
    _k("seed", "int", 0, "Root of every random choice (scenarios, initial fields, training).",
       low=0),
)

_section(
    "mesh", "The mesh: a file, or a generated shape (exactly one of file, generate).",
    _k("file", "string", None, "Mesh file, relative to the case directory: gmsh .msh, DOLFINx "
       "XDMF, or any format meshio reads (.vtu .vtk .inp .med .mesh .bdf ...)."),
    _k("tag_data", "string", None, "Files read through meshio: the integer cell data holding the "
       "boundary tags (default: gmsh:physical, medit:ref, CellEntityIds, cell_tags or nastran:ref, "
       "whichever is there, else named cell sets)."),
    _k("generate", "table", None,
       "Inline table describing a generated shape: see [mesh.generate]."),
    _k("boundaries", "table", {}, "For files: boundary name = physical tag (int)."),
    _k("control_volumes", "choice", "dual",
       "cells: the mesh cells (DG0); dual: median-dual cells around vertices (P1).",
       choices=("cells", "dual")),
)

GENERATE = Section(
    "mesh.generate",
    "Generated shapes. Geometry defaults: interval [x0,x1] = [0,1]; rectangle [x0,x1]x[y0,y1] = "
    "[0,1]^2; lshape [0,1]^2 minus [0.5,1]^2; disk centred at 0, radius 1; box [0,1]^3.",
    (
        _k("shape", "choice", REQUIRED, "The shape.", choices=SHAPES),
        _k("cells", "int", None, "interval: number of cells (instead of h).", low=1),
        _k("h", "number", 0.1, "Target cell size (interval: cells = round(length / h)).",
           low=0, low_open=True),
        _k("x0", "number", 0.0, "Lower x bound (interval, rectangle, box)."),
        _k("x1", "number", 1.0, "Upper x bound (interval, rectangle, box)."),
        _k("y0", "number", 0.0, "Lower y bound (rectangle, box)."),
        _k("y1", "number", 1.0, "Upper y bound (rectangle, box)."),
        _k("z0", "number", 0.0, "Lower z bound (box)."),
        _k("z1", "number", 1.0, "Upper z bound (box)."),
        _k("radius", "number", 1.0, "Disk radius.", low=0, low_open=True),
        _k("jitter", "number", 0.0, "interval: interior vertices move by uniform(-jitter h/2, "
           "jitter h/2), drawn from the case seed.", low=0, high=1, high_open=True),
    ),
)
GENERATE_KEYS = {
    "interval": ("shape", "cells", "h", "x0", "x1", "jitter"),
    "rectangle": ("shape", "h", "x0", "x1", "y0", "y1"),
    "lshape": ("shape", "h"),
    "disk": ("shape", "h", "radius"),
    "box": ("shape", "h", "x0", "x1", "y0", "y1", "z0", "z1"),
}
GENERATED_BOUNDARIES = {
    "interval": ("left", "right"),
    "rectangle": ("left", "right", "bottom", "top"),
    "lshape": ("left", "right", "bottom", "top", "inner"),
    "disk": ("wall",),
    "box": ("left", "right", "bottom", "top", "front", "back"),
}

_section(
    "pde", "The equation. A coefficient is a number here, or a name in [parameters] "
    "(never both); required coefficients missing from both are an error.",
    _k("family", "choice", REQUIRED, "The PDE family.", choices=FAMILIES),
    _k("k", "k-model", "constant", 'gpme: conductivity model; k(u) = k, u^m, or the Stefan '
       'step from k_min (u < u_star) to k_max (u > u_star), smoothed over a width smoothing. '
       'A number means "constant" with that k.', choices=K_MODELS),
    _k("m", "coefficient", REQUIRED, 'gpme, k = "power": exponent of k(u) = u^m.', low=0),
    _k("u_star", "coefficient", REQUIRED, 'gpme, k = "stefan": the melting value where k jumps.'),
    _k("k_max", "coefficient", 1.0, 'gpme, k = "stefan": k above u_star.', low=0),
    _k("k_min", "coefficient", 0.0, 'gpme, k = "stefan": k below u_star.', low=0),
    _k("smoothing", "coefficient", 0.005, 'gpme, k = "stefan": width of the smoothed step.',
       low=0, low_open=True),
    _k("source", "expression", "0", "gpme, burgers, wave: source term f(x, t) of u_t + ... = f."),
    _k("nu", "coefficient", REQUIRED, "burgers: viscosity of u_t + sum_i (u^2/2)_x_i = nu "
       "laplace(u) + f; navier-stokes: kinematic viscosity.",
       low=0, low_open=True),
    _k("convection", "choice", "central", "burgers: the convective face flux; central (second "
       "order, for cell Peclet numbers u h / nu below 2) or upwind (Engquist-Osher: monotone, "
       "first order).", choices=("central", "upwind")),
    _k("c", "coefficient", REQUIRED, "wave: wave speed.", low=0, low_open=True),
    _k("re", "coefficient", None, "navier-stokes: Reynolds number, instead of nu (nu = 1/re).",
       low=0, low_open=True),
    _k("rho", "coefficient", 1.0, "navier-stokes: density.", low=0, low_open=True),
)

_section(
    "parameters", "Scenario parameters, usable in every expression and as PDE coefficients.",
    free="NAME = number, or a distribution inline table: " + "; ".join(
        f"{{ {name} = {text.split(':')[0]} }}" for name, text in DISTRIBUTIONS.items())
    + ". NAME is an identifier other than x y z t pi e, the function names and test.",
)
_section(
    "parameters.test", "Optional: test scenarios drawn differently (e.g. out of range). "
    "Names must be in [parameters] or PDE coefficients; others keep their [parameters] law.",
    free="NAME = number or distribution, as in [parameters].",
)

_section(
    "initial", "The initial condition: an expression, or a Gaussian random field per scenario.",
    _k("kind", "choice", "expression", "expression: value below; grf: a random field.",
       choices=("expression", "grf")),
    _k("value", "expression-or-list", "0", "kind = expression: u(x, 0) (navier-stokes: a list "
       "of components, or one expression for all)."),
    _k("alpha", "number", 2.5, "grf: smoothness; amplitudes (tau^2 + 4 pi^2 k.k)^(-alpha/2).",
       low=0, low_open=True),
    _k("tau", "number", 7.0, "grf: inverse length scale.", low=0, low_open=True),
    _k("sigma", "number", 1.0, "grf: pointwise standard deviation.", low=0),
    _k("mean", "number", 0.0, "grf: mean value."),
    _k("modes", "int", 16, "grf: integer wave vectors k with k.k <= modes^2 (periods of the box).",
       low=1),
)

BOUNDARY = _section(
    "boundary.NAME", "One table per boundary named by the mesh. Expressions read x, y, z, t "
    "and parameters. Boundaries without a table are insulated (flux = 0).",
    _k("type", "choice", REQUIRED, "The kind of condition.",
       choices=("dirichlet", "neumann", "periodic")),
    _k("value", "expression-or-list", None, "dirichlet: u on the boundary (navier-stokes: a "
       "list of velocity components, or one expression for all)."),
    _k("flux", "expression", None, "neumann: outward normal flux F.n, F = -k(u) grad u."),
    _k("normal_derivative", "expression", None, "neumann: outward du/dn (instead of flux)."),
    _k("partner", "string", None, "periodic: the boundary whose values and derivatives match "
       "this one's (it must name this one back)."),
)
# [boundary] itself is a table of such tables
_section("boundary", "Boundary conditions, one [boundary.NAME] table each.",
         free="NAME = table with the keys of [boundary.NAME].")

_section(
    "time", "The time interval and the reference solver's step.",
    _k("t_end", "number", REQUIRED, "Final time.", low=0, low_open=True),
    _k("dt", "number", REQUIRED, "Reference solver step (<= t_end).", low=0, low_open=True),
    _k("outputs", "int", 20, "Number of output times, evenly spaced, t_end included.", low=1),
    _k("theta", "number", 1.0, "Time-stepping weight: 1 implicit Euler, 0.5 Crank-Nicolson.",
       low=0.5, high=1.0),
)

_section(
    "solver", "Newton's method of the reference solver.",
    _k("newton_rtol", "number", 1e-10, "Relative residual tolerance.", low=0, low_open=True),
    _k("newton_atol", "number", 1e-13, "Absolute residual tolerance.", low=0),
    _k("newton_max_it", "int", 30, "Most iterations per step.", low=1),
    _k("petsc_options", "table", {},
       "PETSc options of the GPME/Burgers, wave (partition) and Navier-Stokes solvers' Newton and "
       "linear solvers, "
       "without '-' or prefix (e.g. { ksp_type = \"gmres\", pc_type = \"hypre\" }); "
       "set under the prefix hybrid_solver_ (so also -hybrid_solver_ksp_type in PETSC_OPTIONS). "
       "Defaults: Newton with a backtracking line search and LU (MUMPS for Navier-Stokes); with "
       "parallel = partition, GMRES with hypre's BoomerAMG."),
    _k("parallel", "choice", "auto",
       "Under mpirun: solve each GPME/Burgers/wave scenario over the mesh partition (partition: "
       "Newton-Krylov or, for waves, GMRES with algebraic multigrid on every rank's control "
       "volumes), give each rank "
       "whole scenarios (scenarios: serial LU), or choose by size (auto: partition from 8000 "
       "control volumes, 50000 for waves).",
       choices=("auto", "partition", "scenarios")),
)

_section(
    "data", "How many scenarios the reference solver computes.",
    _k("train", "int", 200, "Training scenarios.", low=1),
    _k("test", "int", 20, "Test scenarios (drawn with [parameters.test] where given).", low=0),
)

_section(
    "surrogate", "The neural-operator surrogate and its training.",
    _k("model", "choice", "fno-ensemble", "The registered model.", choices=("fno-ensemble",)),
    _k("members", "int", 5, "Ensemble members (trained independently, spread over ranks).", low=1),
    _k("epochs", "int", 200, "Most training epochs.", low=1),
    _k("modes", "int", 16, "Fourier modes kept per dimension.", low=1),
    _k("width", "int", 32, "Channels of the spectral layers.", low=1),
    _k("layers", "int", 4, "Spectral layers.", low=1),
    _k("grid", "ints", 64, "Points of the regular grid per dimension (int, or one per dimension).",
       low=2),
    _k("lr", "number", 1e-3, "Adam learning rate.", low=0, low_open=True),
    _k("batch", "int", 16, "Mini-batch size.", low=1),
    _k("validation", "number", 0.1, "Fraction of training scenarios held out for early stopping.",
       low=0, high=1, high_open=True),
    _k("patience", "int", 20, "Epochs without validation improvement before stopping.", low=1),
    _k("softc_weight", "number", 0.0, "Weight of the PDE-residual penalty (SoftC). With softc in "
       "[constraints] compare it trains the separate SoftC ensemble (0 there means 0.01) and the "
       "main ensemble has none; otherwise it trains the main ensemble (0 = off).", low=0),
    _k("heteroscedastic", "bool", False,
       "Members also predict a variance per output (Gaussian NLL heads); the ensemble's variance "
       "is then the mixture's."),
    _k("time", "choice", "one-shot",
       "How the members predict the output times: all at once from the initial state (one-shot), "
       "one step t_n -> t_(n+1) at a time rolled out from it (autoregressive), or both trained and "
       "the one with the lower validation error kept (select; where test parameters leave the "
       "training span, 2 probe members of each kind, fitted inside a cut of the span and scored "
       "beyond it, weigh in by the fraction of test scenarios outside). Not autoregressive with "
       "heteroscedastic or a main-ensemble softc_weight; SoftC's and BOON's ensembles stay "
       "one-shot.",
       choices=("one-shot", "autoregressive", "select")),
    _k("parameter_inputs", "strings", None,
       "The scenario parameters the networks see as input channels (a list of [parameters] "
       "names; default all). A parameter that only shapes the initial state (heat-boon-1d's omega) "
       "can be left to the initial-state channel, so a test value beyond the training span is "
       "not an input the networks never saw."),
    _k("rollout_epochs", "int", 0,
       "Most epochs of autoregressive members, each a pass over every (scenario, step) pair; 0 = "
       "epochs.", low=0),
    _k("rollout_noise", "number", 0.5,
       "Autoregressive training: std of the noise added to the input states, in units of the "
       "one-step increments' std.", low=0),
    _k("rollout_history", "int", 1,
       "Time levels an autoregressive step sees: 1 (the state at t_n) or 2 (also the last "
       "increment u_n - u_(n-1), as a second-order equation such as the wave equation needs).",
       low=1, high=2),
    _k("rollout_loss", "choice", "scaled",
       "Autoregressive training loss of a step: its squared error over the one-step increments' "
       "typical size, du_std^2 and the flux densities' flux_std^2 (scaled), or over its own "
       "increment's and flux's (relative, what members trained with before this key). relative "
       "divides by near-zero increments where a state turns (a wave's), and those steps then "
       "dominate its loss.",
       choices=("relative", "scaled")),
)

_section(
    "constraints", "The constraint layer: G x = b imposed by a Gaussian update.",
    _k("conservation", "choice", "per-cell", "Conservation rows.",
       choices=("none", "global", "per-cell")),
    _k("boundary", "choice", "exact", "Boundary-condition rows.", choices=("none", "exact")),
    _k("sigma", "number", 0.0, "Constraint noise sigma_G; 0 = exact.", low=0),
    _k("covariance", "choice", "diagonal", "Covariance of the prediction used by the update.",
       choices=("diagonal", "ensemble", "ensemble+diagonal")),
    _k("compare", "choices", ["raw", "hardc", "global", "per-cell"], "Variants to report. softc, "
       "boon and unpadded train their own ensembles: SoftC (the PDE residual as a penalty), BOON "
       "(boundary-corrected Fourier layers: 1-D cases, and 2-D rectangles with Dirichlet or "
       "periodic walls) and the FNO without zero padding (BOON's published 1-D baseline, which "
       "declares a padding and never applies it). known-mass is ProbConserv's own setting, "
       "per-cell + boundary rows plus the closed-form total mass (data no surrogate has: 1-D "
       "Stefan cases started from 0 with u = 1 at the left end; skipped elsewhere).",
       choices=("raw", "hardc", "softc", "boon", "unpadded", "global", "per-cell",
                "per-cell+boundary", "known-mass")),
    _k("calibrate", "bool", True,
       "Scale the ensemble's state and flux variances, per output time, by the factors that "
       "maximise the validation scenarios' Gaussian likelihood, before any variant uses them."),
    _k("defect_scale", "bool", True,
       "Widen a test scenario's constrained variances by the factor its rows' residual statistic "
       "r^T (G Sigma G^T)^-1 r / rows exceeds the largest validation scenario's (never narrower; "
       "the mean is unchanged)."),
    _k("flux_inflations", "numbers", [1.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e4],
       "Candidate factors lambda on the prediction's flux variances, one chosen on the validation "
       "scenarios (the largest within one standard error of the best MSE). Each candidate costs "
       "one update of every validation scenario (at scale, a factorisation each): a large case "
       "may list fewer.", low=0, low_open=True),
    _k("prior_shape", "choice", "auto",
       "The update's prior for test scenarios inside the training span: each scenario's own "
       "calibrated variances (scenario: G Sigma G^T factored once per scenario), or one case-level "
       "shape, the validation scenarios' mean variances, times each scenario's overall scale "
       "(case: factored once per case, the variance computed once, and the flux inflation chosen "
       "under the shape alone); auto takes case unless "
       "scenario does better on validation by more than a standard error. case needs sigma = 0, "
       "covariance = \"diagonal\" and two validation scenarios (else scenario).",
       choices=("auto", "scenario", "case")),
    _k("parallel", "choice", "auto", "Under mpirun: distribute each update over the mesh partition "
       "(partition), give each rank whole scenarios (scenarios), or choose by size (auto).",
       choices=("auto", "partition", "scenarios")),
    _k("petsc_options", "table", {},
       "PETSc options of the update's sparse Cholesky, without '-' or prefix (e.g. { "
       "pc_factor_mat_solver_type = \"mumps\" }); set under the prefix hybrid_update_."),
)

_section(
    "output", "Where results go and what is written.",
    _k("dir", "string", "results", "Output directory, relative to the case directory."),
    _k("paraview", "bool", True, "Write XDMF + HDF5 time series."),
    _k("figures", "bool", True, "Write figures."),
)

# the top-level tables of case.toml, in the order they are documented
TOP_LEVEL = ("case", "mesh", "pde", "parameters", "initial", "boundary", "time", "solver",
             "data", "surrogate", "constraints", "output")


MAX_STEPS = 1e7   # reference-solver steps of one scenario (t_end / dt) a case may ask for

# keys added after results existed, at the value that reproduces those results (their default,
# but for rollout_loss, whose default changed with it): at that value they are left out of the
# stages' hashes (Case.hash), so adding them did not make every stage stale
NEUTRAL_DEFAULTS = {("mesh", "tag_data"): None, ("solver", "petsc_options"): {},
                    ("constraints", "petsc_options"): {}, ("solver", "parallel"): "auto",
                    ("surrogate", "time"): "one-shot", ("surrogate", "rollout_noise"): 0.5,
                    ("surrogate", "rollout_epochs"): 0, ("surrogate", "rollout_history"): 1,
                    ("surrogate", "rollout_loss"): "relative",
                    ("surrogate", "parameter_inputs"): None}


def _default_text(key: Key) -> str:
    if key.default is REQUIRED:
        return "required"
    if key.default is None:
        return "-"
    if isinstance(key.default, bool):
        return str(key.default).lower()
    if isinstance(key.default, str):
        return f'"{key.default}"'
    if isinstance(key.default, list):
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else f'"{v}"'
                               for v in key.default) + "]"
    return f"{key.default}"


def _table(section: Section) -> list[str]:
    lines = [f"### [{section.name}]", "", section.doc, ""]
    if section.keys:
        lines += ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for key in section.keys:
            lines.append(f"| `{key.name}` | {key.kind} | {_default_text(key)} | "
                         f"{key.allowed_text()} | {key.doc} |")
        lines.append("")
    if section.free:
        lines += [section.free, ""]
    return lines


def describe_keys() -> str:
    """A markdown reference of every accepted key (printed by ``hybrid keys``)."""
    from hybrid.case.expressions import FUNCTIONS

    lines = ["# case.toml keys", "",
             "Every key `hybrid` accepts; any other key is an error. Coefficients marked "
             "required may come from [pde] or [parameters].", ""]
    order = ["case", "mesh", "mesh.generate", "pde", "parameters", "parameters.test", "initial",
             "boundary.NAME", "time", "solver", "data", "surrogate", "constraints", "output"]
    for name in order:
        section = GENERATE if name == "mesh.generate" else SECTIONS[name]
        lines += _table(section)
        if name == "mesh.generate":
            lines += ["Keys per shape: " + "; ".join(f"{shape}: {', '.join(keys[1:])}"
                                                     for shape, keys in GENERATE_KEYS.items()),
                      "", "Boundary names: " + "; ".join(f"{shape}: {', '.join(names)}"
                                                         for shape, names
                                                         in GENERATED_BOUNDARIES.items()),
                      ""]
        if name == "pde":
            lines += ["Coefficients read: gpme constant: k; power: m; stefan: u_star, k_max, "
                      "k_min, smoothing; burgers: nu; wave: c; navier-stokes: nu (or re), rho.", ""]
    lines += ["## Expressions", "",
              "Strings are data, never code: numbers; `x y z t pi e`; parameters and PDE "
              "coefficients; `+ - * / **`, unary minus, comparisons (`< <= > >= == !=`, giving "
              "1 or 0); functions " + ", ".join(f"`{f}`" for f in FUNCTIONS)
              + " (`where(c, a, b)`: a where c != 0; `min`/`max`: 2 or more arguments).", ""]
    return "\n".join(lines)
