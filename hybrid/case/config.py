"""Loading a case directory: ``case.toml`` read, checked against the schema, compiled.

:func:`load_case` returns a :class:`Case` whose every value is checked and defaulted, whose
expressions are compiled, and whose scenarios can be drawn reproducibly. Mistakes raise
:class:`~hybrid.errors.CaseError` (one message naming file, key, what was found and what
is allowed); the CLI prints it and exits 2.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import keyword
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybrid.case import schema
from hybrid.case.expressions import RESERVED_NAMES, Expression, compile_expression
from hybrid.case.parameters import (Choice, Distribution, Fixed, Uniform, draw_scenario,
                                    parse_distribution, split_id)
from hybrid.case.reader import Reader, describe_value
from hybrid.case.schema import REQUIRED, SECTIONS
from hybrid.errors import CaseError
from hybrid.petsc_options import check_petsc_options

__all__ = ["Case", "BoundaryCondition", "InitialCondition", "load_case", "MESH_SUFFIXES",
           "periodic_pairs"]

MESH_SUFFIXES = (".msh", ".xdmf")   # read without meshio


def mesh_suffixes() -> tuple[str, ...]:
    """Every mesh file suffix accepted: gmsh, DOLFINx XDMF, and those meshio reads."""
    try:
        from meshio._helpers import extension_to_filetypes
    except ImportError:   # pragma: no cover - the set-up installs meshio
        return MESH_SUFFIXES
    return tuple(sorted(set(MESH_SUFFIXES) | set(extension_to_filetypes)))
ExpressionValue = Expression | list[Expression]


@dataclass(frozen=True)
class BoundaryCondition:
    """The condition on one named boundary (``[boundary.NAME]``).

    ``dirichlet``: ``value`` (a list for navier-stokes vectors); ``neumann``: ``flux``
    (outward F.n, F = -k(u) grad u) or ``normal_derivative`` (outward du/dn);
    ``periodic``: ``partner``, the boundary it is identified with.
    """

    name: str
    type: str
    value: ExpressionValue | None = None
    flux: Expression | None = None
    normal_derivative: Expression | None = None
    partner: str | None = None

    def dirichlet_values(self, points, t: float, params: dict):
        """The Dirichlet data at ``points`` (n, d) and time ``t``: (components, n), one row
        for a scalar value."""
        exprs = self.value if isinstance(self.value, list) else [self.value]
        return np.stack([np.broadcast_to(np.asarray(e(points, t=t, params=params), float),
                                         (len(points),))
                         for e in exprs])


def periodic_pairs(case) -> list[tuple[str, str]]:
    """The case's periodic boundaries as (boundary, partner) pairs, each pair once, in the
    order of ``[boundary]``."""
    pairs, seen = [], set()
    for name, bc in case.boundaries.items():
        if bc.type == "periodic" and name not in seen:
            pairs.append((name, bc.partner))
            seen.update((name, bc.partner))
    return pairs


@dataclass(frozen=True)
class InitialCondition:
    """``[initial]``: ``kind`` "expression" (``value``) or "grf"
    (see :mod:`hybrid.case.initial`)."""

    kind: str
    value: ExpressionValue | None
    alpha: float
    tau: float
    sigma: float
    mean: float
    modes: int


@dataclass
class Case:
    """A checked case directory. Sections are dicts with every default filled in."""

    dir: Path
    file: Path
    display_file: str  # the file as messages name it
    name: str
    description: str
    seed: int
    mesh: dict[str, Any]
    pde: dict[str, Any]
    parameters: dict[str, Distribution]
    test_parameters: dict[str, Distribution]  # the [parameters.test] overrides only
    coefficient_names: tuple[str, ...]
    initial: InitialCondition
    boundaries: dict[str, BoundaryCondition]
    time: dict[str, Any]
    solver: dict[str, Any]
    data: dict[str, Any]
    surrogate: dict[str, Any]
    constraints: dict[str, Any]
    output: dict[str, Any]
    raw: dict[str, Any]
    settings: dict[str, Any] = field(repr=False)  # JSON-able, defaults filled: what hash() reads

    @property
    def output_dir(self) -> Path:
        """The ``[output] dir`` folder (a relative one is under the case directory)."""
        return self.dir / self.output["dir"]

    @property
    def expression_names(self) -> frozenset[str]:
        """Names expressions may read besides x, y, z, t: parameters and PDE coefficients."""
        return frozenset(self._laws("train")) | frozenset(self.coefficient_names)

    def hash(self, *sections: str) -> str:
        """sha256 of the named sections (all when none), defaults included (but for the keys of
        :data:`~hybrid.case.schema.NEUTRAL_DEFAULTS` at their default); ``"mesh"`` also
        hashes the mesh file's bytes. Stages compare it to decide whether to redo."""
        sections = sections or schema.TOP_LEVEL
        unknown = [s for s in sections if s not in self.settings]
        if unknown:
            raise ValueError(f"unknown section(s) {unknown}; known: {', '.join(self.settings)}")
        digest = hashlib.sha256()
        canonical = {name: _hashed(name, self.settings[name]) for name in sections}
        digest.update(json.dumps(canonical, sort_keys=True, separators=(",", ":"),
                                 allow_nan=False).encode())
        if "mesh" in sections and self.mesh["file"] is not None:
            digest.update(b"\0mesh-file\0")
            digest.update(Path(self.mesh["file"]).read_bytes())
        return digest.hexdigest()

    def _laws(self, split: str | int) -> dict[str, Distribution]:
        laws = dict(self.parameters)
        for name, value in self.pde["coefficients"].items():
            laws.setdefault(name, Fixed(value))
        if split_id(split) == 1:
            laws.update(self.test_parameters)
        return laws

    def declared_span(self, names: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """The training laws' bounds for the parameter columns ``names``: (low, high), NaN where
        the law is unbounded (normal) or the column is not a declared parameter or coefficient
        (derived ones such as ``nu`` from ``re``). Uniform gives [low, high], a choice its
        smallest and largest value, a fixed number [value, value]."""
        laws = self._laws("train")
        low, high = [], []
        for name in names:
            law = laws.get(name)
            bounded = isinstance(law, (Uniform, Choice, Fixed))
            values = law.support() if bounded else [np.nan]
            low.append(min(values))
            high.append(max(values))
        return np.array(low, float), np.array(high, float)

    def scenario(self, split: str | int, index: int) -> dict[str, float]:
        """Parameters and PDE coefficients of one scenario (see :mod:`hybrid.case.parameters`)."""
        values = draw_scenario(self.seed, split, index, self._laws(split))
        if "re" in values:
            values["nu"] = 1.0 / values["re"]  # non-dimensional: unit velocity and length
        return values

    def scenarios(self, split: str | int) -> list[dict[str, float]]:
        """Every scenario of ``split`` ("train" or "test"), ``[data]`` train/test of them."""
        count = self.data[{0: "train", 1: "test"}[split_id(split)]]
        return [self.scenario(split, index) for index in range(count)]

    def boundary_condition(self, name: str) -> BoundaryCondition:
        """The condition on boundary ``name``; boundaries without a table are insulated."""
        if name in self.boundaries:
            return self.boundaries[name]
        return BoundaryCondition(name, "neumann",
                                 flux=compile_expression("0", file=self.display_file,
                                                         key=f"boundary.{name}"))

    def check_boundary_names(self, mesh_names: Iterable[str]) -> None:
        """Raise if a ``[boundary.NAME]`` names no boundary of the mesh (called by the mesh
        module)."""
        mesh_names = sorted(mesh_names)
        for name in self.boundaries:
            if name not in mesh_names:
                close = difflib.get_close_matches(name, mesh_names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise CaseError(f"the mesh has no boundary {name!r}{hint}; it has: "
                                f"{', '.join(mesh_names) or 'no named boundaries'}",
                                file=self.display_file, key=f"boundary.{name}")


def _display_path(file: Path) -> str:
    """``file`` relative to the working directory when below it, else as given."""
    try:
        return str(file.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(file)


def _locate(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        file = path / "case.toml"
        if not file.is_file():
            raise CaseError(f"no case.toml in {path}")
        return path, file
    if path.is_file():
        return path.parent, path
    if path.suffix == ".toml":
        raise CaseError(f"{path} does not exist")
    raise CaseError(f"no case.toml in {path} (no such directory)")


def _hashed(section: str, values):
    """A section's settings as hashed: keys added later, at a default that changes nothing, are
    left out, so that results made before those keys existed stay current."""
    if not isinstance(values, dict):
        return values
    return {k: v for k, v in values.items()
            if not ((section, k) in schema.NEUTRAL_DEFAULTS
                    and v == schema.NEUTRAL_DEFAULTS[(section, k)])}


def load_case(path: str | os.PathLike) -> Case:
    """Read, check and compile the case in directory ``path`` (or its ``case.toml``)."""
    case_dir, file = _locate(path)
    display = _display_path(file)
    reader = Reader(display)
    try:
        raw = tomllib.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise reader.error(None, f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise reader.error(None, f"TOML syntax error: {error}") from None
    return _Builder(reader, case_dir, file, raw).build()


# the allowed range of each PDE coefficient, also checked against parameter distributions
_COEFFICIENT_BOUNDS = {key.name: key for key in SECTIONS["pde"].keys if key.kind == "coefficient"}
_COEFFICIENT_BOUNDS["k"] = schema.Key("k", "coefficient", None, "", low=0, low_open=True)


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("__")


class _Builder:
    """Checks the sections in dependency order and assembles the :class:`Case`."""

    def __init__(self, reader: Reader, case_dir: Path, file: Path, raw: dict):
        self.reader = reader
        self.dir = case_dir
        self.file = file
        self.raw = raw
        self.settings: dict[str, Any] = {}

    def error(self, key: str | None, message: str) -> CaseError:
        return self.reader.error(key, message)

    def table(self, name: str) -> dict:
        return self.reader.table(self.raw.get(name, {}), name)

    def build(self) -> Case:
        self.reader.check_known(self.raw, "", schema.TOP_LEVEL, what="section")
        for name in schema.TOP_LEVEL:
            self.table(name)
        simple = {name: self.reader.section(self.table(name), SECTIONS[name])
                  for name in ("case", "time", "solver", "data", "surrogate", "constraints",
                               "output")}
        for section in ("solver", "constraints"):
            simple[section]["petsc_options"] = check_petsc_options(simple[section]["petsc_options"],
                                                                   f"{section}.petsc_options",
                                                                   self.error)
        time = simple["time"]
        if time["dt"] > time["t_end"]:
            raise self.error("time.dt", f"{time['dt']:g} is larger than t_end = {time['t_end']:g}")
        if time["t_end"] / time["dt"] > schema.MAX_STEPS:
            raise self.error("time.dt", f"{time['dt']:g} makes t_end / dt = "
                                        f"{time['t_end'] / time['dt']:.3g} steps; "
                                        f"at most {schema.MAX_STEPS:.0e}")
        if not simple["output"]["dir"].strip():
            raise self.error("output.dir", "found an empty string, expected a directory name")
        if simple["case"]["name"] is None:
            simple["case"]["name"] = self.dir.resolve().name
        self.settings.update(simple)

        mesh = self.mesh()
        pde, coefficient_names, coefficient_laws = self.pde()
        parameters, test_parameters = self.parameters(coefficient_names, coefficient_laws)
        self.check_conductivity_bounds(pde, parameters, test_parameters)
        names = set(parameters) | set(coefficient_names) | set(coefficient_laws)
        source = compile_expression(pde.pop("source_text"), names, file=self.reader.file,
                                    key="pde.source")
        pde["source"] = source
        initial = self.initial(pde["family"], names)
        boundaries = self.boundaries(pde["family"], names)
        case = Case(
            dir=self.dir, file=self.file, display_file=self.reader.file,
            name=simple["case"]["name"], description=simple["case"]["description"],
            seed=simple["case"]["seed"], mesh=mesh, pde=pde, parameters=parameters,
            test_parameters=test_parameters, coefficient_names=coefficient_names,
            initial=initial, boundaries=boundaries, time=time, solver=simple["solver"],
            data=simple["data"], surrogate=simple["surrogate"],
            constraints=simple["constraints"], output=simple["output"], raw=self.raw,
            settings=self.settings)
        unknown = [n for n in simple["surrogate"]["parameter_inputs"] or () if n not in parameters]
        if unknown:
            raise self.error("surrogate.parameter_inputs",
                             f"{', '.join(unknown)} is not a parameter of [parameters] "
                             f"(they are: {', '.join(parameters) or 'none'})")
        if mesh["generate"] is not None:
            case.check_boundary_names(schema.GENERATED_BOUNDARIES[mesh["generate"]["shape"]])
        if case.constraints["covariance"] == "ensemble" and int(case.surrogate["members"]) < 2:
            raise self.error("constraints.covariance",
                             '"ensemble" is the members\' spread alone, which one member '
                             "does not have; use members >= 2, or covariance = \"diagonal\" or "
                             "\"ensemble+diagonal\"")
        return case

    # [mesh] ---------------------------------------------------------------------------
    def mesh(self) -> dict[str, Any]:
        mesh = self.reader.section(self.table("mesh"), SECTIONS["mesh"])
        settings = dict(mesh)
        if (mesh["file"] is None) == (mesh["generate"] is None):
            found = "both" if mesh["file"] is not None else "neither"
            raise self.error("mesh", f"give exactly one of file and generate; found {found}")
        if mesh["file"] is not None:
            mesh["file"] = self.mesh_file(mesh["file"])
        else:
            mesh["generate"] = settings["generate"] = self.generate(mesh["generate"])
            if mesh["boundaries"]:
                shape = mesh["generate"]["shape"]
                raise self.error("mesh.boundaries", "applies to mesh files; the generated "
                                 f"{shape} names its boundaries: "
                                 + ", ".join(schema.GENERATED_BOUNDARIES[shape]))
        tags: dict[int, str] = {}
        for name, tag in mesh["boundaries"].items():
            if isinstance(tag, bool) or not isinstance(tag, int):
                raise self.error(f"mesh.boundaries.{name}",
                                 f"found {describe_value(tag)}, expected an integer physical tag")
            if tag in tags:
                raise self.error(f"mesh.boundaries.{name}",
                                 f"tag {tag} is also given to {tags[tag]!r}")
            tags[tag] = name
        self.settings["mesh"] = settings
        return mesh

    def mesh_file(self, text: str) -> Path:
        if not text.strip():
            raise self.error("mesh.file", "found an empty string, expected a mesh file name")
        resolved = (self.dir / text).resolve()
        if not resolved.is_file():
            what = "is a directory" if resolved.is_dir() else "does not exist"
            raise self.error("mesh.file", f'"{text}" {what} (looked for {resolved})')
        suffixes = mesh_suffixes()
        if not any(resolved.name.lower().endswith(s) for s in suffixes):
            raise self.error("mesh.file", f'"{text}" has suffix "{resolved.suffix}"; allowed: '
                             + ", ".join(suffixes)
                             + " (gmsh, DOLFINx XDMF, and the formats meshio reads)")
        return resolved

    def generate(self, table: dict) -> dict[str, Any]:
        section, prefix = schema.GENERATE, "mesh.generate"
        self.reader.check_known(table, prefix, section.names())
        shape = self.reader.read(table, section["shape"], prefix)
        allowed = schema.GENERATE_KEYS[shape]
        for name in table:
            if name not in allowed:
                raise self.error(f"{prefix}.{name}",
                                 f'does not apply to shape "{shape}"; its keys: '
                                 + ", ".join(allowed))
        generate = {name: self.reader.read(table, section[name], prefix) for name in allowed
                    if name in table or section[name].default is not None}
        for low, high in (("x0", "x1"), ("y0", "y1"), ("z0", "z1")):
            if low in generate and generate[low] >= generate[high]:
                raise self.error(f"{prefix}.{high}", f"{generate[high]:g} is not larger than "
                                 f"{low} = {generate[low]:g}")
        if shape == "interval":
            # one size key, as hybrid.mesh.shapes expects: cells = round(length / h)
            if "cells" in table and "h" in table:
                raise self.error(prefix, "give cells or h, not both")
            h = generate.pop("h")
            if "cells" not in table:
                generate["cells"] = max(1, round((generate["x1"] - generate["x0"]) / h))
        return generate

    # [pde] ----------------------------------------------------------------------------
    def pde(self) -> tuple[dict[str, Any], tuple[str, ...], dict[str, float]]:
        """The PDE settings, the coefficient names it reads, and their fixed values."""
        table, section = self.table("pde"), SECTIONS["pde"]
        self.reader.check_known(table, "pde", section.names())
        family = self.reader.read(table, section["family"], "pde")
        model = None
        given: dict[str, float] = {}
        if family == "gpme":
            model = self.reader.read(table, section["k"], "pde")
            if not isinstance(model, str):
                given["k"], model = model, "constant"
        defaults = schema.coefficient_defaults(family, model)
        applicable = set(defaults) | ({"re"} if family == "navier-stokes" else set())
        if family in ("gpme", "burgers", "wave"):
            applicable.add("source")
        if family == "burgers":
            applicable.add("convection")
        context = f'family = "{family}"' + (f', k = "{model}"' if model else "")
        for name in table:
            if name in ("family",) or (name == "k" and family == "gpme"):
                continue
            if name not in applicable:
                raise self.error(f"pde.{name}", f"{name} is used by "
                                 f"{schema.coefficient_users(name)}; this case has {context}")
            if name not in ("source", "convection"):
                given[name] = self.reader.read(table, section[name], "pde")
        source_text = self.reader.read(table, section["source"], "pde")

        parameters = self.table("parameters")
        if family == "navier-stokes":
            present = [n for n in ("nu", "re") if n in given or n in parameters]
            if len(present) == 2:
                raise self.error("pde.re", "give nu or re, not both (nu = 1/re)")
            if not present:
                raise self.error("pde.nu", f"{context} needs nu or re: give nu = <number> in [pde] "
                                 "or nu in [parameters]")
            if present == ["re"]:
                defaults = {"re": REQUIRED, **{k: v for k, v in defaults.items() if k != "nu"}}
        coefficients: dict[str, float] = {}
        for name, default in defaults.items():
            if name in given and name in parameters:
                raise self.error(f"parameters.{name}", f"{name} is given in [pde] "
                                 f"({given[name]:g}) and in [parameters]; give it in one place")
            if name in given:
                coefficients[name] = given[name]
            elif name not in parameters:
                if default is REQUIRED:
                    raise self.error(f"pde.{name}", f"{context} needs {name}: give {name} = "
                                     f"<number> in [pde] or {name} in [parameters]")
                coefficients[name] = float(default)
        if model == "stefan" and {"k_min", "k_max"} <= set(coefficients) \
                and coefficients["k_min"] > coefficients["k_max"]:
            raise self.error("pde.k_min", f"{coefficients['k_min']:g} is larger than k_max = "
                             f"{coefficients['k_max']:g}")
        names = tuple(defaults) if family != "navier-stokes" else ("nu", "rho")
        pde = {"family": family, "k": model, "coefficients": coefficients,
               "source_text": source_text}
        self.settings["pde"] = {"family": family, "k": model, "coefficients": dict(coefficients),
                                "source": source_text}
        if family == "burgers":   # only here, so that other families' stage hashes do not change
            pde["convection"] = self.settings["pde"]["convection"] = \
                self.reader.read(table, section["convection"], "pde")
        self.defaults = defaults
        return pde, names, coefficients

    def check_conductivity_bounds(self, pde: dict, parameters: dict, test_parameters: dict) -> None:
        """A Stefan step needs k_min ≤ k_max for every draw, wherever each is given ([pde],
        [parameters], [parameters.test]): checked once the sections are merged."""
        if pde["k"] != "stefan":
            return
        def span(name: str) -> tuple[list[float], str]:
            values, where = [], None
            for laws, section in ((parameters, "parameters"), (test_parameters, "parameters.test")):
                if name in laws:
                    values += [float(v) for v in laws[name].support()]
                    where = where or f"{section}.{name}"
            if name in pde["coefficients"]:
                values.append(float(pde["coefficients"][name]))
                where = where or f"pde.{name}"
            return values, where
        (low, low_at), (high, high_at) = span("k_min"), span("k_max")
        if low and high and max(low) > min(high):
            raise self.error(low_at, f"k_min can be {max(low):g}, larger than k_max's "
                             f"{min(high):g} ({high_at}); the step needs k_min <= k_max")

    # [parameters] -----------------------------------------------------------------------
    def parameters(self, coefficient_names, coefficients) -> tuple[dict, dict]:
        table = dict(self.table("parameters"))
        test = table.pop("test", {})
        looks_like_a_law = isinstance(test, dict) and len(test) == 1 and \
            next(iter(test)) in schema.DISTRIBUTIONS and isinstance(next(iter(test.values())), list)
        if not isinstance(test, dict) or looks_like_a_law:
            raise self.error("parameters.test", "test is the table of test-scenario overrides "
                             "[parameters.test], not a parameter; rename the parameter")
        laws = {name: self.law(value, f"parameters.{name}") for name, value in table.items()}
        known = sorted(set(laws) | set(self.defaults) | set(coefficients))
        self.reader.check_known(test, "parameters.test", known, what="parameter")
        test_laws = {name: self.law(value, f"parameters.test.{name}")
                     for name, value in test.items()}
        self.settings["parameters"] = {"train": {n: d.to_json() for n, d in laws.items()},
                                       "test": {n: d.to_json() for n, d in test_laws.items()}}
        return laws, test_laws

    def law(self, value: Any, where: str) -> Distribution:
        name = where.rsplit(".", 1)[1]
        if not _is_identifier(name) or name in RESERVED_NAMES:
            raise self.error(where, f"{name!r} cannot name a parameter: names are identifiers "
                             f"other than {', '.join(sorted(RESERVED_NAMES))}")
        law = parse_distribution(value, file=self.reader.file, key=where)
        key = _COEFFICIENT_BOUNDS.get(name)
        if key is not None:
            for bound in law.support():
                if not key.in_bounds(bound):
                    raise self.error(where, f"{name} must be {key.bounds_text()}; the distribution "
                                     f"allows {bound:g}")
        return law

    # [initial] --------------------------------------------------------------------------
    def initial(self, family: str, names: set[str]) -> InitialCondition:
        table, section = self.table("initial"), SECTIONS["initial"]
        values = self.reader.section(table, section)
        kind = values["kind"]
        own = {"expression": ("kind", "value"),
               "grf": ("kind", "alpha", "tau", "sigma", "mean", "modes")}[kind]
        for name in table:
            if name not in own:
                other = "grf" if kind == "expression" else "expression"
                raise self.error(f"initial.{name}", f'{name} applies to kind = "{other}"; this '
                                 f'case has kind = "{kind}"')
        settings = {name: values[name] for name in own}
        self.settings["initial"] = settings
        if kind == "grf":
            if family == "navier-stokes":
                raise self.error("initial.kind", 'a "grf" field is scalar; navier-stokes needs '
                                 "value = [expressions of the velocity components]")
            values["value"] = None
        else:
            values["value"] = self.expressions(values["value"], family, names, "initial.value")
        return InitialCondition(kind=kind, value=values["value"], alpha=values["alpha"],
                                tau=values["tau"], sigma=values["sigma"], mean=values["mean"],
                                modes=values["modes"])

    def expressions(self, text: str | list[str], family: str, names: set[str],
                    where: str) -> ExpressionValue:
        if isinstance(text, list):
            if family != "navier-stokes":
                raise self.error(where, f"found a list; family {family} has a scalar unknown, "
                                 "expected one expression")
            if not 2 <= len(text) <= 3:
                raise self.error(where, f"found {len(text)} components, expected 2 or 3")
            return [compile_expression(t, names, file=self.reader.file, key=f"{where}[{i}]")
                    for i, t in enumerate(text)]
        return compile_expression(text, names, file=self.reader.file, key=where)

    # [boundary.NAME] --------------------------------------------------------------------
    def boundaries(self, family: str, names: set[str]) -> dict[str, BoundaryCondition]:
        tables = self.table("boundary")
        conditions: dict[str, BoundaryCondition] = {}
        for name, table in tables.items():
            prefix = f"boundary.{name}"
            table = self.reader.table(table, prefix)
            values = self.reader.section(table, schema.BOUNDARY, prefix)
            kind = values["type"]
            self.boundary_keys(table, kind, prefix)
            compiled = {key: self.expressions(values[key], family, names, f"{prefix}.{key}")
                        for key in ("value", "flux", "normal_derivative")
                        if values[key] is not None}
            conditions[name] = BoundaryCondition(name, kind, partner=values["partner"], **compiled)
        for condition in conditions.values():
            if condition.type == "periodic":
                self.check_partner(condition, conditions)
        self.settings["boundary"] = {name: {k: v for k, v in tables[name].items()}
                                     for name in tables}
        return conditions

    def boundary_keys(self, table: dict, kind: str, prefix: str) -> None:
        neumann = [k for k in ("flux", "normal_derivative") if k in table]
        if kind == "dirichlet":
            if neumann:
                raise self.error(f"{prefix}.{neumann[0]}", "Dirichlet and Neumann on the same "
                                 f'boundary: type = "dirichlet" takes value; {neumann[0]} belongs '
                                 'to type = "neumann"')
            if "value" not in table:
                raise self.error(f"{prefix}.value", 'missing; type = "dirichlet" needs value')
        elif kind == "neumann":
            if "value" in table:
                raise self.error(f"{prefix}.value", "Dirichlet and Neumann on the same boundary: "
                                 'type = "neumann" takes flux or normal_derivative; value belongs '
                                 'to type = "dirichlet"')
            if len(neumann) != 1:
                found = "both" if neumann else "neither"
                raise self.error(prefix, 'type = "neumann" needs exactly one of flux and '
                                 f"normal_derivative; found {found}")
        else:
            extra = [k for k in ("value", "flux", "normal_derivative") if k in table]
            if extra:
                raise self.error(f"{prefix}.{extra[0]}", 'type = "periodic" takes only partner '
                                 "(values and derivatives match the partner's)")
            if "partner" not in table:
                raise self.error(f"{prefix}.partner", 'missing; type = "periodic" needs partner')
        if kind != "periodic" and "partner" in table:
            raise self.error(f"{prefix}.partner", f'applies to type = "periodic"; this boundary '
                             f'has type = "{kind}"')

    def check_partner(self, condition: BoundaryCondition,
                      conditions: dict[str, BoundaryCondition]) -> None:
        where, partner = f"boundary.{condition.name}.partner", condition.partner
        if partner == condition.name:
            raise self.error(where, f"a boundary cannot be its own partner ({partner!r})")
        if partner not in conditions:
            periodic = [n for n, c in conditions.items()
                        if c.type == "periodic" and n != condition.name]
            raise self.error(where, f"no [boundary.{partner}] table; periodic boundaries: "
                             + (", ".join(periodic) or "none besides this one"))
        other = conditions[partner]
        if other.type != "periodic":
            raise self.error(where, f'partner {partner!r} has type = "{other.type}"; both '
                             'boundaries of a periodic pair need type = "periodic"')
        if other.partner != condition.name:
            raise self.error(where, f"partner {partner!r} names {other.partner!r} as its partner, "
                             f"not {condition.name!r}")
