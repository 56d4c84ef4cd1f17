"""The one safe expression language of case files.

Strings in ``case.toml`` such as ``"1 - 0.5*erf(x/(2*sqrt(t+1e-9)))"`` are *data*: they are
parsed with :func:`ast.parse` and every node is checked against a whitelist, then compiled
once into a tree of numpy closures. Nothing is ever passed to ``eval`` or ``exec``, so a
case file cannot run code, and a mistake is reported with the file, the key and the
offending token instead of a traceback.

Grammar (everything else is rejected)::

    numbers            1, 2.5, 1e-3
    names              x y z t pi e, and the case's parameters and PDE coefficients
    arithmetic         + - * / **, unary - and +
    comparisons        < <= > >= == !=  (chains allowed; they give 1.0 or 0.0)
    where(c, a, b)     a where c != 0, else b (both branches are evaluated)
    functions          sin cos tan exp log sqrt abs tanh erf erfc, min(a, b, ...) max(a, b, ...)

All arithmetic is float64 numpy arithmetic with warnings suppressed: ``1/0`` is ``inf`` and
``sqrt(-1)`` is ``nan``, as in numpy, never an exception in the middle of a solve.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from scipy import special

from hybrid.errors import CaseError

__all__ = [
    "Expression",
    "compile_expression",
    "COORDINATES",
    "CONSTANTS",
    "FUNCTIONS",
    "RESERVED_NAMES",
]

COORDINATES = ("x", "y", "z")
TIME = "t"
CONSTANTS = {"pi": np.float64(np.pi), "e": np.float64(np.e)}


def _minimum(*args):
    return functools.reduce(np.minimum, args)


def _maximum(*args):
    return functools.reduce(np.maximum, args)


def _where(condition, if_true, if_false):
    return np.where(condition != 0, if_true, if_false)


# name -> (implementation, number of arguments; None = two or more)
FUNCTIONS: dict[str, tuple[Callable, int | None]] = {
    "sin": (np.sin, 1),
    "cos": (np.cos, 1),
    "tan": (np.tan, 1),
    "exp": (np.exp, 1),
    "log": (np.log, 1),
    "sqrt": (np.sqrt, 1),
    "abs": (np.abs, 1),
    "tanh": (np.tanh, 1),
    "erf": (special.erf, 1),
    "erfc": (special.erfc, 1),
    "min": (_minimum, None),
    "max": (_maximum, None),
    "where": (_where, 3),
}

# names a parameter may not take: they already mean something in an expression
RESERVED_NAMES = frozenset(COORDINATES) | {TIME} | set(CONSTANTS) | set(FUNCTIONS)

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
            ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne}
_OPERATOR_SYMBOLS = {ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.LShift: "<<",
                     ast.RShift: ">>", ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&",
                     ast.Not: "not", ast.Invert: "~", ast.In: "in", ast.NotIn: "not in",
                     ast.Is: "is", ast.IsNot: "is not", ast.And: "and", ast.Or: "or"}
_CONSTRUCTS = {ast.Attribute: "attribute access", ast.Subscript: "subscript",
               ast.Lambda: "lambda", ast.IfExp: "conditional",
               ast.List: "list", ast.Tuple: "tuple", ast.Dict: "dict", ast.Set: "set",
               ast.ListComp: "comprehension", ast.SetComp: "comprehension",
               ast.DictComp: "comprehension", ast.GeneratorExp: "generator",
               ast.NamedExpr: "assignment ':='", ast.JoinedStr: "f-string",
               ast.Starred: "'*' unpacking", ast.Await: "await", ast.Yield: "yield",
               ast.YieldFrom: "yield", ast.Slice: "slice"}
_HINTS = {ast.IfExp: " (use where(cond, a, b))"}

MAX_LENGTH = 10_000  # longer strings are certainly not hand-written expressions

_Evaluator = Callable[[Mapping[str, object]], object]


class Expression:
    """A compiled expression: call it with points, a time and parameter values.

    Attributes:
        text (str): The expression as written in the case file.
        names_used (frozenset[str]): The variables it reads: coordinates, ``t`` and parameters
            (not ``pi``/``e``).
        parameters_used (frozenset[str]): ``names_used`` less coordinates and ``t``.
        depends_on_t, depends_on_space (bool): Whether it reads ``t``; whether it reads any of
            ``x``, ``y``, ``z``.
    """

    __slots__ = ("text", "names_used", "parameters_used", "file", "key",
                 "_allowed", "_evaluate")

    def __init__(self, text: str, evaluate: _Evaluator, names_used: Iterable[str],
                 allowed: Iterable[str], file: str | None, key: str | None):
        self.text = text
        self.names_used = frozenset(names_used)
        self.parameters_used = self.names_used - set(COORDINATES) - {TIME}
        self.file = file
        self.key = key
        self._allowed = tuple(sorted(allowed))
        self._evaluate = evaluate

    @property
    def depends_on_t(self) -> bool:
        """Whether it reads ``t``."""
        return TIME in self.names_used

    @property
    def depends_on_space(self) -> bool:
        """Whether it reads any of ``x``, ``y``, ``z``."""
        return not self.names_used.isdisjoint(COORDINATES)

    @property
    def is_constant(self) -> bool:
        """True when the value depends on neither space nor time (parameters allowed)."""
        return not (self.depends_on_t or self.depends_on_space)

    def _environment(self, params: Mapping[str, float] | None) -> dict[str, object]:
        env: dict[str, object] = {}
        for name in self.parameters_used:
            if params is None or name not in params:
                raise CaseError(f"no value for parameter {name!r} needed by {self.text!r}",
                                file=self.file, key=self.key)
            env[name] = np.asarray(params[name], dtype=np.float64)
        return env

    def __call__(self, points, t: float = 0.0,
                 params: Mapping[str, float] | None = None) -> np.ndarray:
        """Values at ``points`` ((n, gdim) array, gdim 1..3; absent coordinates are 0).

        Returns a new float64 array of shape ``(n,)``; constants are broadcast.
        """
        points = np.asarray(points, dtype=np.float64)
        if points.ndim == 1:
            points = points[:, None]
        if points.ndim != 2 or points.shape[1] > 3:
            raise ValueError(f"points must have shape (n, 1..3), got {points.shape}")
        env = self._environment(params)
        env[TIME] = np.asarray(t, dtype=np.float64)
        for axis, name in enumerate(COORDINATES):
            env[name] = points[:, axis] if axis < points.shape[1] else np.float64(0.0)
        with np.errstate(all="ignore"):
            value = self._evaluate(env)
        out = np.empty(points.shape[0], dtype=np.float64)
        out[...] = value
        return out

    def constant_value(self, params: Mapping[str, float] | None = None, t: float = 0.0) -> float:
        """The value as a float, for an expression that does not depend on space."""
        if self.depends_on_space:
            raise ValueError(f"{self.text!r} depends on x, y or z")
        env = self._environment(params)
        env[TIME] = np.float64(t)
        with np.errstate(all="ignore"):
            return float(self._evaluate(env))

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Expression)
                and (self.text, self._allowed) == (other.text, other._allowed))

    def __hash__(self) -> int:
        return hash((self.text, self._allowed))

    def __reduce__(self):
        # closures do not pickle; recompiling from the text does (MPI, DataLoader workers)
        return (_recompile, (self.text, self._allowed, self.file, self.key))


def _recompile(text: str, names: tuple[str, ...], file: str | None, key: str | None) -> Expression:
    return compile_expression(text, names, file=file, key=key)


class _Compiler:
    """Walks the checked AST once and returns (evaluator, names read) for each node."""

    def __init__(self, text: str, parameters: frozenset[str], file: str | None, key: str | None):
        self.text = text
        self.variables = frozenset(COORDINATES) | {TIME} | parameters
        self.parameters = parameters
        self.file = file
        self.key = key

    def allowed(self) -> str:
        names = list(COORDINATES) + [TIME] + list(CONSTANTS) + sorted(self.parameters)
        return ", ".join(names + list(FUNCTIONS))

    def fail(self, message: str, *, list_allowed: bool = False) -> CaseError:
        message = f"{message} in {_quote(self.text)}"
        if list_allowed:
            message += f"; allowed: {self.allowed()}"
        return CaseError(message, file=self.file, key=self.key)

    def token(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.text, node) or type(node).__name__

    def compile(self, node: ast.AST) -> tuple[_Evaluator, frozenset[str]]:
        evaluate, names = self._compile(node)
        if not names and not isinstance(node, ast.Constant):
            # fold constant sub-trees once, at compile time
            with np.errstate(all="ignore"):
                value = evaluate({})
            return (lambda env, value=value: value), names
        return evaluate, names

    def _compile(self, node: ast.AST) -> tuple[_Evaluator, frozenset[str]]:
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.BinOp):
            return self._binary(node)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node)
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.BoolOp):
            raise self.fail(f"{_OPERATOR_SYMBOLS[type(node.op)]!r} is not allowed "
                            "(multiply comparisons, or use where)")
        what = _CONSTRUCTS.get(type(node), type(node).__name__)
        raise self.fail(f"{what} {self.token(node)!r} is not allowed{_HINTS.get(type(node), '')}")

    def _constant(self, node: ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            what = {str: "string", complex: "complex number", bytes: "bytes"}.get(type(value),
                                                                                  "constant")
            raise self.fail(f"{what} {self.token(node)!r} is not allowed")
        try:
            number = np.float64(value)
        except OverflowError:
            raise self.fail(f"number {self.token(node)!r} is too large") from None
        return (lambda env: number), frozenset()

    def _name(self, node: ast.Name):
        name = node.id
        if name in self.variables:
            return (lambda env: env[name]), frozenset([name])
        if name in CONSTANTS:
            value = CONSTANTS[name]
            return (lambda env: value), frozenset()
        if name in FUNCTIONS:
            raise self.fail(f"{name!r} is a function; call it as {name}(...)")
        raise self.fail(f"unknown name {name!r}", list_allowed=True)

    def _binary(self, node: ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            raise self.fail(f"operator {_OPERATOR_SYMBOLS.get(type(node.op), '?')!r} is not allowed"
                            " (allowed: + - * / **)")
        left, left_names = self.compile(node.left)
        right, right_names = self.compile(node.right)
        return (lambda env: op(left(env), right(env))), left_names | right_names

    def _unary(self, node: ast.UnaryOp):
        op = _UNARY.get(type(node.op))
        if op is None:
            raise self.fail(f"operator {_OPERATOR_SYMBOLS.get(type(node.op), '?')!r} is not "
                            "allowed")
        operand, names = self.compile(node.operand)
        return (lambda env: op(operand(env))), names

    def _compare(self, node: ast.Compare):
        ops = []
        for op_node in node.ops:
            op = _COMPARE.get(type(op_node))
            if op is None:
                raise self.fail(f"operator {_OPERATOR_SYMBOLS.get(type(op_node), '?')!r} is not "
                                "allowed (allowed: < <= > >= == !=)")
            ops.append(op)
        compiled = [self.compile(operand) for operand in [node.left, *node.comparators]]
        operands = [evaluate for evaluate, _ in compiled]
        names = frozenset().union(*(n for _, n in compiled))

        def compare(env):
            values = [evaluate(env) for evaluate in operands]
            result = np.float64(1.0)
            for op, left, right in zip(ops, values, values[1:]):
                result = result * op(left, right)  # bool * float -> 1.0 / 0.0
            return result

        return compare, names

    def _call(self, node: ast.Call):
        if not isinstance(node.func, ast.Name):
            raise self.fail(f"call of {self.token(node.func)!r} is not allowed; functions: "
                            + ", ".join(FUNCTIONS))
        name = node.func.id
        if name in self.variables or name in CONSTANTS:
            raise self.fail(f"{name!r} is not a function; functions: " + ", ".join(FUNCTIONS))
        if name not in FUNCTIONS:
            raise self.fail(f"unknown function {name!r}", list_allowed=True)
        if node.keywords:
            keyword = node.keywords[0]
            shown = f"{keyword.arg}=" if keyword.arg else "**"
            raise self.fail(f"keyword argument {shown!r} in {name}(...) is not allowed")
        function, arity = FUNCTIONS[name]
        count = len(node.args)
        if arity is None and count < 2:
            raise self.fail(f"{name} takes 2 or more arguments, found {count}")
        if arity is not None and count != arity:
            plural = "s" if arity > 1 else ""
            raise self.fail(f"{name} takes {arity} argument{plural}, found {count}")
        compiled = [self.compile(argument) for argument in node.args]
        arguments = [evaluate for evaluate, _ in compiled]
        names = frozenset().union(*(n for _, n in compiled))
        return (lambda env: function(*[evaluate(env) for evaluate in arguments])), names


def _quote(text: str) -> str:
    shown = text if len(text) <= 200 else text[:200] + "..."
    return '"' + shown.replace('"', '\\"') + '"'


def compile_expression(text: str, names: Iterable[str] = (), *, file: str | None = None,
                       key: str | None = None) -> Expression:
    """Check and compile ``text``; ``names`` are the parameters it may read.

    Raises :class:`~hybrid.errors.CaseError` naming ``file``, ``key`` and the offending
    token for a syntax error or anything outside the grammar of this module.
    """
    if not isinstance(text, str):
        raise CaseError(f"found {type(text).__name__} {text!r}, expected an expression string",
                        file=file, key=key)
    text = text.strip()
    parameters = frozenset(names)
    clashes = sorted(parameters & RESERVED_NAMES)
    if clashes:
        raise CaseError(f"parameter name(s) {', '.join(clashes)} clash with built-in names "
                        f"of expressions ({', '.join(sorted(RESERVED_NAMES))})", file=file, key=key)
    compiler = _Compiler(text, parameters, file, key)
    if not text:
        raise compiler.fail("empty expression")
    if len(text) > MAX_LENGTH:
        raise CaseError(f"expression is {len(text)} characters long (at most {MAX_LENGTH})",
                        file=file, key=key)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        column = f" at column {error.offset}" if error.offset else ""
        raise compiler.fail(f"syntax error{column} ({error.msg})") from None
    except (RecursionError, MemoryError, ValueError):
        raise compiler.fail("expression is nested too deeply or is not valid text") from None
    try:
        evaluate, used = compiler.compile(tree.body)
    except RecursionError:
        raise compiler.fail("expression is nested too deeply") from None
    return Expression(text, evaluate, used, parameters, file, key)
