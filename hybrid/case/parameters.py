"""Scenario parameters: their distributions, and reproducible draws.

Scenario ``i`` of split ``s`` (train = 0, test = 1) draws its parameters from
``np.random.default_rng(np.random.SeedSequence([seed, s, i]))``, in sorted name order. A
scenario's values therefore depend only on the seed, the split and its index, never on
which MPI rank draws it or on which scenarios were drawn before. Other random choices of
a scenario (its initial field, say) take their own stream from :func:`scenario_rng`, so
that adding one never shifts the draws of another.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from hybrid.case.reader import describe_value
from hybrid.errors import CaseError

__all__ = [
    "SPLITS",
    "Distribution",
    "Fixed",
    "Uniform",
    "Choice",
    "Normal",
    "parse_distribution",
    "split_id",
    "scenario_rng",
    "draw_scenario",
]

SPLITS = {"train": 0, "test": 1}


class Distribution:
    """The law of one parameter; ``sample`` draws one float from ``rng``."""

    def sample(self, rng: np.random.Generator) -> float:
        """One draw from ``rng``."""
        raise NotImplementedError

    def to_json(self) -> Any:
        """The law as ``case.toml`` writes it (a number or a one-key table), JSON-able: what the
        case's settings hold, and so what :meth:`~hybrid.case.config.Case.hash` reads."""
        raise NotImplementedError

    def support(self) -> list[float]:
        """Values that bound the draws (to check a coefficient's allowed range)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Fixed(Distribution):
    """A plain number: every draw is ``value``."""

    value: float

    def sample(self, rng: np.random.Generator) -> float:
        """``value``; nothing is drawn from ``rng``."""
        return self.value

    def to_json(self) -> Any:
        """The number itself."""
        return self.value

    def support(self) -> list[float]:
        """``[value]``."""
        return [self.value]


@dataclass(frozen=True)
class Uniform(Distribution):
    """``{uniform = [low, high]}``: uniform on [``low``, ``high``)."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        """One uniform draw in [``low``, ``high``)."""
        return float(rng.uniform(self.low, self.high))

    def to_json(self) -> Any:
        """``{"uniform": [low, high]}``."""
        return {"uniform": [self.low, self.high]}

    def support(self) -> list[float]:
        """``[low, high]``."""
        return [self.low, self.high]


@dataclass(frozen=True)
class Choice(Distribution):
    """``{choice = [...]}``: one of ``values``, each equally likely."""

    values: tuple[float, ...]

    def sample(self, rng: np.random.Generator) -> float:
        """One of ``values``, picked uniformly."""
        return self.values[int(rng.integers(len(self.values)))]

    def to_json(self) -> Any:
        """``{"choice": [values...]}``."""
        return {"choice": list(self.values)}

    def support(self) -> list[float]:
        """Every one of ``values``."""
        return list(self.values)


@dataclass(frozen=True)
class Normal(Distribution):
    """``{normal = [mean, std]}``: normal with mean ``mean`` and standard deviation ``std``."""

    mean: float
    std: float

    def sample(self, rng: np.random.Generator) -> float:
        """One normal draw."""
        return float(rng.normal(self.mean, self.std))

    def to_json(self) -> Any:
        """``{"normal": [mean, std]}``."""
        return {"normal": [self.mean, self.std]}

    def support(self) -> list[float]:
        """``[mean]``: the law is unbounded, so only the mean can be checked."""
        return [self.mean]  # unbounded; only the mean can be checked


def _number(value: Any, *, file: str | None, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CaseError(f"found {describe_value(value)}, expected a number", file=file, key=key)
    number = float(value)
    if not math.isfinite(number):
        raise CaseError(f"found {number}, expected a finite number", file=file, key=key)
    return number


def _pair(value: Any, what: str, *, file: str | None, key: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise CaseError(f"found {describe_value(value)}, expected a list {what}", file=file,
                        key=key)
    return (_number(value[0], file=file, key=key), _number(value[1], file=file, key=key))


def parse_distribution(value: Any, *, file: str | None, key: str) -> Distribution:
    """A number, or an inline table ``{uniform = [lo, hi]}``, ``{choice = [...]}``,
    ``{normal = [mean, std]}``; anything else is a :class:`CaseError` at ``key``."""
    if not isinstance(value, dict):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CaseError(f"found {describe_value(value)}, expected a number or a distribution "
                            "{ uniform = [low, high] } | { choice = [...] } | "
                            "{ normal = [mean, std] }", file=file, key=key)
        return Fixed(_number(value, file=file, key=key))
    if len(value) != 1:
        found = ", ".join(value) or "nothing"
        raise CaseError(f"a distribution has exactly one of uniform, choice, normal; found {found}",
                        file=file, key=key)
    (law, arguments), = value.items()
    where = f"{key}.{law}"
    if law == "uniform":
        low, high = _pair(arguments, "[low, high]", file=file, key=where)
        if low > high:
            raise CaseError(f"low = {low:g} is larger than high = {high:g}", file=file, key=where)
        return Uniform(low, high)
    if law == "normal":
        mean, std = _pair(arguments, "[mean, std]", file=file, key=where)
        if std < 0:
            raise CaseError(f"std = {std:g} is negative", file=file, key=where)
        return Normal(mean, std)
    if law == "choice":
        if not isinstance(arguments, list):
            raise CaseError(f"found {describe_value(arguments)}, expected a list of numbers",
                            file=file, key=where)
        if not arguments:
            raise CaseError("the list of choices is empty", file=file, key=where)
        return Choice(tuple(_number(v, file=file, key=where) for v in arguments))
    close = difflib.get_close_matches(law, ["uniform", "choice", "normal"], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise CaseError(f"unknown distribution {law!r}{hint}; allowed: uniform, choice, normal",
                    file=file, key=key)


def split_id(split: str | int) -> int:
    """0 for "train", 1 for "test" (an int passes through)."""
    if isinstance(split, int) and not isinstance(split, bool):
        return split
    try:
        return SPLITS[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}") from None


def _stream_id(stream: str | int) -> int:
    if isinstance(stream, int) and not isinstance(stream, bool):
        return stream
    # a stable id (Python's hash() is salted per process)
    return int.from_bytes(hashlib.sha256(str(stream).encode()).digest()[:4], "little")


def scenario_rng(seed: int, split: str | int, index: int, stream: str | int) -> np.random.Generator:
    """A generator for one random choice of one scenario, e.g. ``stream="initial"``.

    Seeded by ``SeedSequence([seed, split, index, stream_id])``: independent of the
    parameter draws and of every other stream, and of the order scenarios are made in.
    """
    return np.random.default_rng(np.random.SeedSequence(
        [int(seed), split_id(split), int(index), _stream_id(stream)]))


def draw_scenario(seed: int, split: str | int, index: int,
                  laws: Mapping[str, Distribution]) -> dict[str, float]:
    """Every parameter of scenario ``index`` of ``split``, as Python floats."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), split_id(split), int(index)]))
    return {name: float(laws[name].sample(rng)) for name in sorted(laws)}
