"""Case directories: the contract example loads, each mistake gives its one message,
scenario draws are reproducible and independent of order."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CASES

from hybrid.case import (CaseError, describe_keys, gaussian_random_field, initial_values,
                         load_case, scenario_rng)
from hybrid.case.initial import wave_vectors
from hybrid.case.schema import SECTIONS, TOP_LEVEL

# the example of /work/shared/case-format.md, verbatim in its keys
CONTRACT = '''
[case]
name = "stefan-1d"
description = "Stefan problem: k(u) is a step, a sharp front moves right"
seed = 7

[mesh]
file = "../../meshes/interval-400.msh"
boundaries = { left = 1, right = 2 }
control_volumes = "cells"

[pde]
family = "gpme"
k = "stefan"

[parameters]
u_star = { uniform = [0.55, 0.7] }
k_max = 1.0

[parameters.test]
u_star = { choice = [0.6, 0.5] }

[initial]
value = "0"

[boundary.left]
type = "dirichlet"
value = "1"
[boundary.right]
type = "neumann"
flux = "0"

[time]
t_end = 0.1
dt = 1e-4
outputs = 20

[data]
train = 200
test = 20

[surrogate]
model = "fno-ensemble"
members = 5
epochs = 200

[constraints]
conservation = "per-cell"
boundary = "exact"
sigma = 0.0
covariance = "diagonal"
compare = ["raw", "hardc", "softc", "global", "per-cell"]

[output]
dir = "results"
paraview = true
figures = true
'''

GENERATED = '''
[mesh]
generate = { shape = "rectangle", h = 0.1 }
[pde]
family = "gpme"
k = "power"
m = 2
[parameters]
amplitude = { normal = [1.0, 0.1] }
[initial]
value = "amplitude*exp(-20*((x-0.5)**2 + (y-0.5)**2))"
[boundary.left]
type = "periodic"
partner = "right"
[boundary.right]
type = "periodic"
partner = "left"
[time]
t_end = 0.5
dt = 0.01
'''


@pytest.fixture
def write_case(tmp_path, monkeypatch):
    """Write ``text`` as cases/stefan-1d/case.toml beside meshes/interval-400.msh; cwd = case
    dir."""
    case_dir = tmp_path / "cases" / "stefan-1d"
    case_dir.mkdir(parents=True)
    (tmp_path / "meshes").mkdir()
    (tmp_path / "meshes" / "interval-400.msh").write_text("$MeshFormat\n4.1 0 8\n$EndMeshFormat\n")
    monkeypatch.chdir(case_dir)

    def write(text: str = CONTRACT):
        (case_dir / "case.toml").write_text(text)
        return case_dir

    return write


def test_contract_example_loads_with_defaults(write_case, tmp_path):
    case = load_case(write_case())
    assert case.name == "stefan-1d" and case.seed == 7
    assert case.mesh["file"] == (tmp_path / "meshes" / "interval-400.msh").resolve()
    assert case.mesh["file"].is_absolute() and case.mesh["generate"] is None
    assert case.mesh["boundaries"] == {"left": 1, "right": 2}
    assert case.mesh["control_volumes"] == "cells"
    assert case.pde["family"] == "gpme" and case.pde["k"] == "stefan"
    assert case.pde["coefficients"] == {"k_min": 0.0, "smoothing": 0.005}
    assert case.coefficient_names == ("u_star", "k_max", "k_min", "smoothing")
    assert case.time == {"t_end": 0.1, "dt": 1e-4, "outputs": 20, "theta": 1.0}
    assert case.solver == {"newton_rtol": 1e-10, "newton_atol": 1e-13, "newton_max_it": 30,
                           "petsc_options": {}, "parallel": "auto"}
    assert case.surrogate["modes"] == 16 and case.surrogate["grid"] == 64
    assert case.surrogate["heteroscedastic"] is False and case.surrogate["validation"] == 0.1
    assert case.constraints["compare"] == ["raw", "hardc", "softc", "global", "per-cell"]
    assert case.initial.kind == "expression"
    assert case.initial.value(np.zeros((3, 1))).tolist() == [0.0] * 3
    left, right = case.boundaries["left"], case.boundaries["right"]
    assert left.type == "dirichlet" and left.value(np.zeros((1, 1)))[0] == 1.0
    assert right.type == "neumann" and right.flux.text == "0" and right.normal_derivative is None
    assert case.output_dir == case.dir / "results"
    assert case.pde["source"].text == "0"
    assert case.boundary_condition("elsewhere").type == "neumann"


def test_generated_mesh_defaults(write_case):
    case = load_case(write_case(GENERATED) / "case.toml")  # the file itself works too
    assert case.name == "stefan-1d"  # default: the directory's name
    assert case.seed == 0 and case.mesh["control_volumes"] == "dual"
    assert case.mesh["generate"] == {"shape": "rectangle", "h": 0.1, "x0": 0.0, "x1": 1.0,
                                     "y0": 0.0, "y1": 1.0}
    assert case.data == {"train": 200, "test": 20}
    assert case.boundaries["left"].partner == "right"
    params = case.scenario("train", 0)
    assert set(params) == {"amplitude", "m"} and params["m"] == 2.0
    assert isinstance(params["amplitude"], float)
    values = case.initial.value(np.array([[0.5, 0.5]]), 0.0, params)
    assert values[0] == pytest.approx(params["amplitude"])


def test_interval_h_gives_cells(write_case):
    text = GENERATED.replace('generate = { shape = "rectangle", h = 0.1 }',
                             'generate = { shape = "interval", h = 0.03, x1 = 3.0 }')
    case = load_case(write_case(text.split("[boundary.left]")[0] + "[time]\nt_end = 1\ndt = 0.1\n"))
    # one size key for the interval: cells = round(length / h)
    assert case.mesh["generate"] == {"shape": "interval", "cells": 100, "x0": 0.0, "x1": 3.0,
                                     "jitter": 0.0}
    default = load_case(write_case(text.replace(", h = 0.03, x1 = 3.0", "")))
    assert default.mesh["generate"]["cells"] == 10  # default h = 0.1


def replace(old: str, new: str, text: str = CONTRACT) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


MESH_LINE = 'file = "../../meshes/interval-400.msh"'
RIGHT = '[boundary.right]\ntype = "neumann"\nflux = "0"'

ERRORS = [
    # (text, key, fragments of the message)
    (replace("dt = 1e-4", "dt = 1e-4\ndtt = 2"), "time.dtt", ["unknown key", "did you mean 'dt'?"]),
    (replace("[output]", "[outptu]"), "outptu", ["unknown section", "did you mean 'output'?"]),
    (replace("members = 5", "membres = 5"), "surrogate.membres", ["did you mean 'members'?"]),
    (replace("[0.55, 0.7]", "[0.7, 0.55]"), "parameters.u_star.uniform",
     ["low = 0.7 is larger than high = 0.55"]),
    (replace("uniform = [0.55, 0.7]", "normal = [0.6, -0.1]"), "parameters.u_star.normal",
     ["std = -0.1 is negative"]),
    (replace("uniform = [0.55, 0.7]", "choice = []"), "parameters.u_star.choice", ["empty"]),
    (replace("uniform = [0.55, 0.7]", "unifrom = [0.55, 0.7]"), "parameters.u_star",
     ["unknown distribution 'unifrom'", "did you mean 'uniform'?"]),
    (replace("dt = 1e-4", "dt = 0.5"), "time.dt", ["0.5 is larger than t_end = 0.1"]),
    (replace("dt = 1e-4", 'dt = "1e-4"'), "time.dt", ['found string "1e-4"', "expected a number"]),
    (replace("t_end = 0.1", "t_end = 0"), "time.t_end", ["found 0", "> 0"]),
    (replace("outputs = 20", "outputs = 0"), "time.outputs", [">= 1"]),
    (replace("outputs = 20", "theta = 0.3"), "time.theta", [">= 0.5", "<= 1"]),
    (replace(MESH_LINE, 'file = "../../meshes/missing.msh"'), "mesh.file",
     ['"../../meshes/missing.msh" does not exist', "meshes/missing.msh)"]),
    (replace(MESH_LINE, MESH_LINE + '\ngenerate = { shape = "interval" }'), "mesh", ["found both"]),
    (replace(MESH_LINE, ""), "mesh", ["found neither"]),
    (replace(MESH_LINE, 'generate = { shape = "circle" }\n'), "mesh.generate.shape",
     ['found "circle"', "interval, rectangle, lshape, disk, box"]),
    (replace(MESH_LINE, 'generate = { shape = "disk", cells = 3 }\n'), "mesh.generate.cells",
     ['does not apply to shape "disk"', "h, radius"]),
    (replace(MESH_LINE, 'generate = { shape = "interval", cells = 3, h = 0.1 }\n'),
     "mesh.generate", ["cells or h, not both"]),
    (replace('control_volumes = "cells"', 'control_volumes = "vertices"'), "mesh.control_volumes",
     ['found "vertices"', "cells, dual"]),
    (replace('value = "1"', 'value = "1"\nflux = "2"'), "boundary.left.flux",
     ["Dirichlet and Neumann on the same boundary"]),
    (replace('flux = "0"', 'flux = "0"\nvalue = "1"'), "boundary.right.value",
     ["Dirichlet and Neumann on the same boundary"]),
    (replace('flux = "0"', 'flux = "0"\nnormal_derivative = "1"'), "boundary.right",
     ["exactly one of flux and normal_derivative", "both"]),
    (replace(RIGHT, '[boundary.right]\ntype = "periodic"\npartner = "middle"'),
     "boundary.right.partner", ["no [boundary.middle] table"]),
    (replace(RIGHT, '[boundary.right]\ntype = "periodic"\npartner = "left"'),
     "boundary.right.partner", ["partner 'left' has type = \"dirichlet\""]),
    (replace(RIGHT, '[boundary.right]\ntype = "periodic"'), "boundary.right.partner",
     ["needs partner"]),
    (replace('type = "neumann"', 'type = "robin"'), "boundary.right.type",
     ['found "robin"', "dirichlet, neumann, periodic"]),
    (replace('family = "gpme"', 'family = "heat"'), "pde.family",
     ['found "heat"', "gpme, burgers, wave, navier-stokes"]),
    (replace('k = "stefan"', 'k = "stefan"\nm = 2'), "pde.m",
     ['m is used by k = "power"', 'k = "stefan"']),
    (replace('k = "stefan"', 'k = "stefan"\nnu = 0.1'), "pde.nu",
     ["family burgers, navier-stokes"]),
    (replace('k = "stefan"', 'k = "power"'), "pde.m", ['k = "power" needs m']),
    (replace('k = "stefan"', 'k = "stefan"\nu_star = 0.6'), "parameters.u_star",
     ["given in [pde] (0.6) and in [parameters]"]),
    (replace('k = "stefan"', 'k = "stefan"\nsmoothing = 0'), "pde.smoothing", ["> 0"]),
    (replace('value = "0"', 'value = "sin(foo*x)"'), "initial.value",
     ["unknown name 'foo'", "u_star"]),
    (replace('value = "0"', 'value = "0"\nalpha = 2'), "initial.alpha",
     ['applies to kind = "grf"']),
    (replace("[parameters.test]\nu_star", "[parameters.test]\nu_sta"), "parameters.test.u_sta",
     ["did you mean 'u_star'?"]),
    (replace("k_max = 1.0", "sin = 1.0"), "parameters.sin", ["cannot name a parameter"]),
    (replace("k_max = 1.0", 'k_max = "1.0"'), "parameters.k_max", ['found string "1.0"']),
    (replace("k_max = 1.0", "k_max = { uniform = [-1, 1] }"), "parameters.k_max",
     ["k_max must be >= 0", "allows -1"]),
    (replace("seed = 7", "seed = true"), "case.seed", ["found boolean true", "integer"]),
    (replace("members = 5", "members = 5.0"), "surrogate.members", ["found number 5.0"]),
    (replace('model = "fno-ensemble"', 'model = "unet"'), "surrogate.model", ["fno-ensemble"]),
    (replace("members = 5", 'members = 5\nparameter_inputs = ["u_sta"]'),
     "surrogate.parameter_inputs", ["u_sta is not a parameter", "u_star"]),
    (replace("members = 5", 'members = 5\nparameter_inputs = "u_star"'),
     "surrogate.parameter_inputs", ['found string "u_star"', "a list of strings"]),
    (replace('"softc", "global"', '"hard", "global"'), "constraints.compare",
     ['found "hard"', "did you mean 'hardc'?"]),
    (replace("sigma = 0.0", "sigma = -1.0"), "constraints.sigma", [">= 0"]),
    (CONTRACT + '[boundary.other]\nvalue = "1"\n', "boundary.other.type", ["missing"]),
]


@pytest.mark.parametrize("text, key, fragments", ERRORS, ids=[e[1] for e in ERRORS])
def test_each_mistake_gives_one_clear_message(write_case, text, key, fragments):
    with pytest.raises(CaseError) as raised:
        load_case(write_case(text))
    message = str(raised.value)
    assert message.startswith(f"case.toml: {key}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message


def test_vector_value_needs_navier_stokes(write_case):
    with pytest.raises(CaseError, match=r"boundary\.left\.value: found a list; family gpme"):
        load_case(write_case(replace('value = "1"', 'value = ["1", "0"]')))


def test_boundary_missing_from_generated_mesh(write_case):
    text = GENERATED.replace("[boundary.right]", "[boundary.rigth]").replace(
        'partner = "right"', 'partner = "rigth"')
    with pytest.raises(CaseError) as raised:
        load_case(write_case(text))
    assert str(raised.value) == ("case.toml: boundary.rigth: the mesh has no boundary 'rigth' "
                                 "(did you mean 'right'?); it has: bottom, left, right, top")


def test_check_boundary_names_lists_the_mesh_names(write_case):
    case = load_case(write_case())
    case.check_boundary_names(["left", "right", "top"])
    with pytest.raises(CaseError, match="the mesh has no boundary 'right'.*it has: inlet, left"):
        case.check_boundary_names(["inlet", "left"])


def test_toml_syntax_error_has_line(write_case):
    with pytest.raises(CaseError, match=r"^case\.toml: TOML syntax error: .*line 3"):
        load_case(write_case("[time]\nt_end = 1\ndt = \n"))


def test_missing_case_toml(tmp_path):
    with pytest.raises(CaseError, match=f"no case.toml in {tmp_path}"):
        load_case(tmp_path)


def test_navier_stokes_reynolds_number(write_case):
    text = '''
[mesh]
generate = { shape = "rectangle" }
[pde]
family = "navier-stokes"
[parameters]
re = { uniform = [100, 200] }
[boundary.top]
type = "dirichlet"
value = ["1", "0"]
[time]
t_end = 1
dt = 0.01
'''
    case = load_case(write_case(text))
    assert case.coefficient_names == ("nu", "rho")
    params = case.scenario("train", 3)
    assert params["nu"] == pytest.approx(1 / params["re"]) and params["rho"] == 1.0
    assert len(case.boundaries["top"].value) == 2
    u0 = initial_values(case, np.zeros((4, 2)), params)
    assert u0.shape == (4, 2)
    with pytest.raises(CaseError, match="give nu or re, not both"):
        load_case(write_case(text.replace('"navier-stokes"', '"navier-stokes"\nnu = 0.1')))


def test_sampling_is_deterministic_and_independent_of_order(write_case):
    case = load_case(write_case())
    fifth_alone = case.scenario("train", 5)
    train = case.scenarios("train")
    assert len(train) == 200 and train[5] == fifth_alone
    assert load_case(case.dir).scenarios("train") == train  # reload: same draws
    u_star = np.array([s["u_star"] for s in train])
    assert u_star.min() >= 0.55 and u_star.max() <= 0.7 and len(set(u_star)) == 200
    assert all(s["k_max"] == 1.0 and s["k_min"] == 0.0 and s["smoothing"] == 0.005 for s in train)
    assert set(train[0]) == {"u_star", "k_max", "k_min", "smoothing"}
    # same seed, split, index -> same generator, whatever rank draws it
    reference = np.random.default_rng(np.random.SeedSequence([7, 0, 5])).uniform(0.55, 0.7)
    assert fifth_alone["u_star"] == reference
    other_seed = load_case(write_case(replace("seed = 7", "seed = 8")))
    assert other_seed.scenario("train", 5) != fifth_alone


def test_test_split_uses_overrides(write_case):
    case = load_case(write_case())
    test = case.scenarios("test")
    assert len(test) == 20
    assert {s["u_star"] for s in test} == {0.5, 0.6}
    assert all(s["k_max"] == 1.0 for s in test)
    # without overrides the test split draws from [parameters], with its own streams
    plain = load_case(write_case(replace("[parameters.test]\nu_star = { choice = [0.6, 0.5] }",
                                         "")))
    plain_test = [s["u_star"] for s in plain.scenarios("test")]
    assert all(0.55 <= u <= 0.7 for u in plain_test)
    assert plain_test[0] != plain.scenario("train", 0)["u_star"]


def test_override_of_a_pde_coefficient(write_case):
    text = replace("[parameters.test]", "[parameters.test]\nsmoothing = 0.01")
    case = load_case(write_case(text))
    assert case.scenario("train", 0)["smoothing"] == 0.005
    assert case.scenario("test", 0)["smoothing"] == 0.01


def test_hash_tracks_exactly_its_sections(write_case, tmp_path):
    case = load_case(write_case())
    assert case.hash("pde", "parameters") == load_case(case.dir).hash("pde", "parameters")
    figures_off = load_case(write_case(replace("figures = true", "figures = false")))
    assert figures_off.hash("pde", "parameters") == case.hash("pde", "parameters")
    assert figures_off.hash() != case.hash()
    # an explicit default hashes like the default
    explicit = load_case(write_case(replace("outputs = 20", "outputs = 20\ntheta = 1.0")))
    assert explicit.hash("time") == case.hash("time")
    before = case.hash("mesh")
    (tmp_path / "meshes" / "interval-400.msh").write_text("$MeshFormat\n4.1 0 8\n"
                                                          "$EndMeshFormat\n\n")
    assert case.hash("mesh") != before
    with pytest.raises(ValueError):
        case.hash("nonsense")


def test_scenario_rng_streams_are_independent():
    a = scenario_rng(7, "train", 3, "initial").standard_normal(4)
    assert np.array_equal(a, scenario_rng(7, "train", 3, "initial").standard_normal(4))
    for other in [scenario_rng(7, "test", 3, "initial"), scenario_rng(7, "train", 4, "initial"),
                  scenario_rng(7, "train", 3, "noise"), scenario_rng(8, "train", 3, "initial")]:
        assert not np.array_equal(a, other.standard_normal(4))


def _naive_field(points, rng, alpha, tau, sigma, mean, modes):
    k = wave_vectors(points.shape[1], modes).astype(float)
    a = (tau ** 2 + 4 * np.pi ** 2 * (k ** 2).sum(axis=1)) ** (-alpha / 2)
    a *= sigma / np.sqrt((a ** 2).sum())
    xi, eta = rng.standard_normal((2, len(k)))
    theta = 2 * np.pi * points @ k.T
    return mean + np.cos(theta) @ (a * xi) + np.sin(theta) @ (a * eta)


@pytest.mark.parametrize("dimension", [1, 2, 3])
def test_random_field_matches_its_formula(dimension):
    points = np.random.default_rng(1).random((50, dimension))
    points[0], points[1] = 0.0, 1.0  # the box is the unit cube
    field = gaussian_random_field(points, np.random.default_rng(2), alpha=2.5, tau=7.0, sigma=1.5,
                                  mean=0.3, modes=4)
    naive = _naive_field(points, np.random.default_rng(2), 2.5, 7.0, 1.5, 0.3, 4)
    np.testing.assert_allclose(field, naive, rtol=0, atol=1e-12)


def test_random_field_statistics_and_mesh_independence():
    x = np.linspace(0.0, 1.0, 101)[:, None]
    draws = np.array([gaussian_random_field(x, np.random.default_rng(i), alpha=2.5, tau=7.0,
                                            sigma=2.0, mean=1.0) for i in range(1000)])
    # pointwise variance sigma^2 = 4 (1000 draws: 3 standard errors ~ 0.55)
    assert abs(draws.var(axis=0).mean() - 4.0) < 0.3
    assert abs(draws.mean() - 1.0) < 0.1
    fine = gaussian_random_field(x, np.random.default_rng(5), alpha=2.5, tau=7.0, sigma=1.0)
    coarse = gaussian_random_field(x[::10], np.random.default_rng(5), alpha=2.5, tau=7.0, sigma=1.0)
    np.testing.assert_allclose(fine[::10], coarse, atol=1e-12)
    assert fine[0] == pytest.approx(fine[-1], abs=1e-12)  # periodic on the box


def test_grf_initial_condition_from_case(write_case):
    text = replace('[initial]\nvalue = "0"', '[initial]\nkind = "grf"\nsigma = 0.5\nmean = 0.2')
    case = load_case(write_case(text))
    assert (case.initial.kind, case.initial.alpha, case.initial.tau) == ("grf", 2.5, 7.0)
    x = np.linspace(0, 1, 64)[:, None]
    u0 = initial_values(case, x, case.scenario("train", 0),
                        scenario_rng(case.seed, "train", 0, "initial"))
    again = initial_values(case, x, case.scenario("train", 0),
                           scenario_rng(case.seed, "train", 0, "initial"))
    assert u0.shape == (64,) and np.array_equal(u0, again) and u0.std() > 0.05


def test_describe_keys_documents_every_key():
    text = describe_keys()
    for name in TOP_LEVEL:
        section = SECTIONS["boundary.NAME" if name == "boundary" else name]
        assert f"[{section.name}]" in text
        for key in section.keys:
            assert f"`{key.name}`" in text
    for key in ("shape", "cells", "jitter", "radius", "uniform", "choice", "normal", "erfc",
                "where"):
        assert key in text


NESTED_CASES = sorted(CASES.glob("*/*/case.toml"))


@pytest.mark.parametrize("path", NESTED_CASES,
                         ids=[f"{p.parent.parent.name}/{p.parent.name}" for p in NESTED_CASES])
def test_paper_and_large_cases_load(path):
    """The cases outside the suite's every-case runs (cases/paper, cases/large) are valid as
    shipped: they load, and each is named after its folder (their results go to its own place)."""
    from hybrid.case import load_case
    case = load_case(path)
    assert case.name == path.parent.name
    if path.parent.parent.name == "paper":   # the papers' data sizes (BOON: 1000 / 200)
        assert int(case.data["train"]) == 1000
