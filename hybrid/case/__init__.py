"""Case directories: ``case.toml`` loading, validation, expressions, parameters.

- :mod:`~hybrid.case.schema`       every accepted key, its type, default and meaning
- :mod:`~hybrid.case.config`       :func:`load_case` and the checked :class:`Case`
- :mod:`~hybrid.case.expressions`  the one safe expression language (no eval)
- :mod:`~hybrid.case.parameters`   distributions and reproducible scenario draws
- :mod:`~hybrid.case.initial`      initial values: expressions or Gaussian random fields
- :mod:`~hybrid.case.sections`     the sections each stage's digest hashes
"""

from hybrid.case.config import BoundaryCondition, Case, InitialCondition, load_case
from hybrid.case.expressions import Expression, compile_expression
from hybrid.case.initial import gaussian_random_field, initial_values
from hybrid.case.parameters import scenario_rng
from hybrid.case.schema import describe_keys
from hybrid.errors import CaseError

__all__ = [
    "load_case",
    "Case",
    "CaseError",
    "BoundaryCondition",
    "InitialCondition",
    "Expression",
    "compile_expression",
    "describe_keys",
    "initial_values",
    "gaussian_random_field",
    "scenario_rng",
]
