"""Typed reading of one TOML table against the schema, one clear message per mistake.

A :class:`Reader` knows the file name shown in messages; each check raises a
:class:`~hybrid.errors.CaseError` that says where (``time.dt``), what was found and what
is allowed, with the closest valid key for a misspelt one.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from hybrid.case.schema import REQUIRED, Key, Section
from hybrid.errors import CaseError

__all__ = ["Reader", "describe_value"]


def describe_value(value: Any) -> str:
    """``string "0.1"``, ``integer 3``, ``list [1, 2]``: what was found, for messages."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, list):
        return f"list {value!r}"
    if isinstance(value, dict):
        return "table {" + ", ".join(value) + "}"
    return f"{type(value).__name__} {value!r}"


_EXPECTED = {
    "string": "a string", "int": "an integer", "number": "a number", "bool": "true or false",
    "expression": "an expression string", "table": "a table", "coefficient": "a number",
    "expression-or-list": "an expression string or a list of them",
    "ints": "an integer or a list of integers", "choices": "a list of strings",
    "strings": "a list of strings",
    "numbers": "a non-empty list of numbers",
}


_POSITIVE = Key("k", "number", None, "", low=0, low_open=True)


class Reader:
    """Checks tables of the case file whose name in messages is ``file``."""

    def __init__(self, file: str):
        self.file = file

    def error(self, key: str | None, message: str) -> CaseError:
        """A :class:`~hybrid.errors.CaseError` at ``key`` of this file, for the caller to
        raise."""
        return CaseError(message, file=self.file, key=key)

    def table(self, value: Any, key: str) -> dict:
        """``value`` itself when it is a table; else a CaseError naming ``[key]``."""
        if not isinstance(value, dict):
            raise self.error(key, f"found {describe_value(value)}, expected a table [{key}]")
        return value

    def check_known(self, table: Mapping[str, Any], prefix: str, allowed: Iterable[str],
                    what: str = "key") -> None:
        """Reject keys of ``table`` outside ``allowed``, suggesting the closest one."""
        allowed = list(allowed)
        for name in table:
            if name not in allowed:
                where = f"{prefix}.{name}" if prefix else name
                close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(where, f"unknown {what}{hint}; allowed: {', '.join(allowed)}")

    def section(self, table: Mapping[str, Any], section: Section, prefix: str | None = None,
                only: Iterable[str] | None = None) -> dict[str, Any]:
        """Every key of ``section`` read from ``table`` (defaults filled in)."""
        prefix = prefix or section.name
        names = section.names() if only is None else list(only)
        self.check_known(table, prefix, names)
        return {name: self.read(table, section[name], prefix) for name in names}

    def read(self, table: Mapping[str, Any], key: Key, prefix: str) -> Any:
        """``key`` read from ``table`` (the section ``prefix``) and checked by :meth:`value`;
        when absent, its default (a list copied), or a CaseError if it is required."""
        where = f"{prefix}.{key.name}"
        if key.name not in table:
            if key.default is REQUIRED:
                raise self.error(where, f"missing; expected {self._expected(key)}")
            return list(key.default) if isinstance(key.default, list) else key.default
        return self.value(table[key.name], key, where)

    def _expected(self, key: Key) -> str:
        if key.kind in ("choice", "k-model"):
            return "one of " + key.allowed_text()
        text = _EXPECTED.get(key.kind, key.kind)
        if key.kind == "choices":
            text += " from " + key.allowed_text()
        bounds = key.bounds_text()
        return (f"{text} {bounds}"
                if bounds and key.kind in ("int", "number", "coefficient", "ints", "numbers")
                else text)

    def _wrong(self, value: Any, key: Key, where: str) -> CaseError:
        return self.error(where, f"found {describe_value(value)}, expected {self._expected(key)}")

    def number(self, value: Any, key: Key, where: str) -> float:
        """``value`` as a finite float within ``key``'s bounds (booleans refused)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._wrong(value, key, where)
        number = float(value)
        if not math.isfinite(number):
            raise self.error(where, f"found {number}, expected a finite number")
        self.bounded(number, key, where)
        return number

    def integer(self, value: Any, key: Key, where: str) -> int:
        """``value``, an int within ``key``'s bounds (booleans and floats refused)."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(value, key, where)
        self.bounded(value, key, where)
        return value

    def bounded(self, value: float, key: Key, where: str) -> None:
        """Raise a CaseError at ``where`` when ``value`` is outside ``key``'s bounds."""
        if not key.in_bounds(value):
            raise self.error(where, f"found {value:g}, allowed: {key.bounds_text()}")

    def choice(self, value: Any, key: Key, where: str) -> str:
        """``value``, a string among ``key.choices``; else a CaseError naming the closest."""
        if not isinstance(value, str):
            raise self._wrong(value, key, where)
        if value not in key.choices:
            close = difflib.get_close_matches(value, key.choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.error(where, f'found "{value}"{hint}, allowed: {key.allowed_text()}')
        return value

    def expression_text(self, value: Any, key: Key, where: str) -> str:
        """The text of an expression: ``value``, a string, or the repr of a bare number."""
        # a bare number is an expression too: value = 1 means value = "1"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return repr(value)
        if not isinstance(value, str):
            raise self._wrong(value, key, where)
        return value

    def value(self, value: Any, key: Key, where: str) -> Any:
        """``value`` checked against ``key``'s kind, bounds and choices, and returned as kept
        (numbers as floats, expressions as their text); else a CaseError at ``where``."""
        kind = key.kind
        if kind == "string":
            if not isinstance(value, str):
                raise self._wrong(value, key, where)
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise self._wrong(value, key, where)
            return value
        if kind in ("number", "coefficient"):
            return self.number(value, key, where)
        if kind == "int":
            return self.integer(value, key, where)
        if kind == "choice":
            return self.choice(value, key, where)
        if kind == "k-model":
            if isinstance(value, str):
                return self.choice(value, key, where)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._wrong(value, key, where)
            return self.number(value, _POSITIVE, where)
        if kind == "choices":
            if not isinstance(value, list):
                raise self._wrong(value, key, where)
            chosen = [self.choice(item, key, where) for item in value]
            repeated = sorted({c for c in chosen if chosen.count(c) > 1})
            if repeated:
                raise self.error(where, f"{', '.join(repeated)} listed more than once")
            return chosen
        if kind == "strings":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self._wrong(value, key, where)
            repeated = sorted({v for v in value if value.count(v) > 1})
            if repeated:
                raise self.error(where, f"{', '.join(repeated)} listed more than once")
            return list(value)
        if kind == "ints":
            if isinstance(value, list):
                if not 1 <= len(value) <= 3:
                    raise self.error(where,
                                     f"found {describe_value(value)}, expected 1 to 3 integers")
                return [self.integer(item, key, where) for item in value]
            return self.integer(value, key, where)
        if kind == "numbers":
            if not isinstance(value, list) or not value:
                raise self._wrong(value, key, where)
            numbers = [self.number(item, key, where) for item in value]
            if len(set(numbers)) < len(numbers):
                raise self.error(where, f"found {describe_value(value)}: a number listed twice")
            return numbers
        if kind == "expression":
            return self.expression_text(value, key, where)
        if kind == "expression-or-list":
            if isinstance(value, list):
                if not value:
                    raise self.error(where, "found an empty list, expected expressions")
                return [self.expression_text(item, key, where) for item in value]
            return self.expression_text(value, key, where)
        if kind == "table":
            if not isinstance(value, dict):
                raise self._wrong(value, key, where)
            return value
        raise AssertionError(f"schema kind {kind!r} has no reader")
