"""The expression language: values match numpy, every construct outside it is refused."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import special

from hybrid.case.expressions import compile_expression
from hybrid.errors import CaseError

FILE, KEY = "cases/demo/case.toml", "initial.value"
POINTS = np.array([[0.1, 0.2, 0.3], [0.5, -0.4, 1.5], [0.9, 0.7, -2.0], [-0.3, 0.0, 0.25]])
X, Y, Z = POINTS.T


def compile_(text, names=("u_star", "a")):
    return compile_expression(text, names, file=FILE, key=KEY)


@pytest.mark.parametrize("text, expected", [
    ("1 - 0.5*erf(x/(2*sqrt(t+1e-9)))", 1 - 0.5 * special.erf(X / (2 * np.sqrt(0.3 + 1e-9)))),
    ("sin(pi*x)*cos(y) + tan(z/4)", np.sin(np.pi * X) * np.cos(Y) + np.tan(Z / 4)),
    ("exp(-x**2) * log(2 + y) - abs(z)", np.exp(-X ** 2) * np.log(2 + Y) - np.abs(Z)),
    ("tanh(3*(x - u_star)) + erfc(y)", np.tanh(3 * (X - 0.6)) + special.erfc(Y)),
    ("-x + +y - -z", -X + Y + Z),
    ("2**-1 * e**x", 0.5 * np.exp(X)),
    ("x / (y - y)", np.copysign(np.inf, X)),  # numpy semantics, no exception
    ("min(x, y, z)", np.minimum(np.minimum(X, Y), Z)),
    ("max(x, 0.4)", np.maximum(X, 0.4)),
    ("where(x < u_star, 1, -1) * a", np.where(X < 0.6, 1.0, -1.0) * 2.0),
    ("where(0 <= x <= 0.5, x, 0)", np.where((X >= 0) & (X <= 0.5), X, 0.0)),
    ("(x > 0.2) + (y >= 0.2) + (z == 0.25) + (x != 0.1) + (y < 0) + (z <= 0.3)",
     (X > 0.2) * 1.0 + (Y >= 0.2) + (Z == 0.25) + (X != 0.1) + (Y < 0) + (Z <= 0.3)),
    ("5*t", np.full(4, 1.5)),
])
def test_values_match_numpy(text, expected):
    values = compile_(text)(POINTS, t=0.3, params={"u_star": 0.6, "a": 2.0})
    assert values.shape == (4,) and values.dtype == np.float64
    np.testing.assert_allclose(values, expected, rtol=1e-14, atol=0)


def test_missing_coordinates_are_zero_and_constants_broadcast():
    one_d = compile_("x + 10*y + 100*z")(POINTS[:, :1])
    np.testing.assert_array_equal(one_d, X)
    assert compile_("3")(np.zeros((5, 2))).tolist() == [3.0] * 5
    assert compile_("x")(np.array([0.5, 0.25])).tolist() == [0.5, 0.25]  # (n,) means gdim 1


def test_metadata():
    expression = compile_("u_star*sin(pi*x) + t")
    assert expression.names_used == {"u_star", "x", "t"}
    assert expression.parameters_used == {"u_star"}
    assert expression.depends_on_t and expression.depends_on_space
    constant = compile_("2*u_star + pi")
    assert not constant.depends_on_t and not constant.depends_on_space
    assert constant.constant_value({"u_star": 1.5}) == pytest.approx(3 + np.pi)
    with pytest.raises(ValueError):
        expression.constant_value({"u_star": 1.0})


def test_missing_parameter_value_is_named():
    with pytest.raises(CaseError, match="u_star"):
        compile_("u_star*x")(POINTS, params={"a": 1.0})


def test_numeric_edges_give_inf_nan_without_warnings():
    with np.errstate(all="raise"):  # evaluation must suppress warnings itself
        values = compile_("sqrt(x) + 1/(x - x) + log(x)")(POINTS)
    assert np.isnan(values[3]) and np.isinf(values[0])
    assert np.isinf(compile_("9**9**9")(POINTS[:1]))[0]


def test_pickles_by_recompiling():
    expression = compile_("u_star*x**2")
    copy = pickle.loads(pickle.dumps(expression))
    np.testing.assert_array_equal(copy(POINTS, params={"u_star": 2.0}),
                                  expression(POINTS, params={"u_star": 2.0}))


@pytest.mark.parametrize("text, token", [
    ("sin(foo*x)", "'foo'"),
    ("x.real", "'x.real'"),
    ("__import__('os')", "'__import__'"),
    ("__import__('os').system('true')", "__import__('os').system"),
    ("x[0]", "'x[0]'"),
    ("(lambda: 1)()", "'lambda: 1'"),
    ("'text'", "'text'"),
    ("x and y", "'and'"),
    ("x or y", "'or'"),
    ("not x", "'not'"),
    ("sin(x=1)", "'x='"),
    ("sin(**{})", "'**'"),
    ("open('f')", "'open'"),
    ("x % 2", "'%'"),
    ("x // 2", "'//'"),
    ("x if y else z", "'x if y else z'"),
    ("[x, y]", "'[x, y]'"),
    ("(x, y)", "'(x, y)'"),
    ("x in y", "'in'"),
    ("x is y", "'is'"),
    ("1j", "'1j'"),
    ("True", "'True'"),
    ("sin", "'sin'"),
    ("x(1)", "'x'"),
    ("(x)(1)", "'x'"),
    ("f'{x}'", "f'{x}'"),
    ("(y := 2)", "'y := 2'"),
    ("sin(x, y)", "sin takes 1 argument, found 2"),
    ("min(x)", "min takes 2 or more arguments, found 1"),
    ("where(x, y)", "where takes 3 arguments, found 2"),
    ("1 +", "syntax error"),
    ("x = 1", "syntax error"),
    ("", "empty expression"),
])
def test_rejected_constructs_name_file_key_and_token(text, token):
    with pytest.raises(CaseError) as raised:
        compile_(text)
    message = str(raised.value)
    assert message.startswith(f"{FILE}: {KEY}: ")
    assert token in message
    assert raised.value.file == FILE and raised.value.key == KEY


def test_unknown_name_lists_the_allowed_names():
    with pytest.raises(CaseError) as raised:
        compile_expression("sin(foo*x)", ["u_star"], file="case.toml", key="initial.value")
    assert str(raised.value).startswith(
        "case.toml: initial.value: unknown name 'foo' in \"sin(foo*x)\"; allowed: "
        "x, y, z, t, pi, e, u_star, sin, cos")


def test_parameter_names_may_not_shadow_builtins():
    with pytest.raises(CaseError, match="pi"):
        compile_expression("x", ["pi"], file=FILE, key=KEY)


def test_non_string_is_refused():
    with pytest.raises(CaseError, match="expected an expression string"):
        compile_expression(1.5, [], file=FILE, key=KEY)  # type: ignore[arg-type]
