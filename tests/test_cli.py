"""Bad input through the real ``hybrid`` command: one message, no traceback, exit code 2.

Each message must name the file (``case.toml``), the section and key, what was found and
what is allowed (the "Errors" section of the case contract), and a bad case must leave the
output directory untouched.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import edit_toml, run_cli, small_case

TINY = {"time": {"t_end": "0.0025", "outputs": "1"}}


def _set_mesh_file(case: Path, file: str) -> None:
    toml = case / "case.toml"
    toml.write_text(re.sub(r'^file\s*=\s*".*"$', f'file = "{file}"', toml.read_text(), flags=re.M))


def _garbage_mesh(case: Path) -> None:
    (case / "broken.msh").write_text("$MeshFormat\n4.1 0 8\n$EndMeshFormat\n$Nodes\nnot numbers\n")
    _set_mesh_file(case, "broken.msh")


def _missing_mesh(case: Path) -> None:
    _set_mesh_file(case, "no-such-mesh.msh")


# name: (case edits, extra step, the key, fragments every message must contain)
BAD_CASES = {
    "unknown-key": ({"time": {"outptus": "5"}}, None, "time.outptus",
                    ["unknown key", "'outputs'", "t_end", "dt"]),
    "boundary-not-in-mesh": ({"boundary.lft": {"type": '"neumann"', "flux": '"0"'}}, None,
                             "boundary.lft", ["'lft'", "left, right"]),
    "dirichlet-and-neumann": ({"boundary.left": {"flux": '"0"'}}, None, "boundary.left.flux",
                              ["Dirichlet and Neumann", "dirichlet", "value"]),
    "low-above-high": ({"parameters": {"u_star": "{ uniform = [0.7, 0.55] }"}}, None,
                       "parameters.u_star.uniform", ["0.7", "0.55", "low", "high"]),
    "dt-above-t_end": ({"time": {"dt": "0.5"}}, None, "time.dt", ["0.5", "t_end = 0.1"]),
    "mesh-missing": ({}, _missing_mesh, "mesh.file", ["no-such-mesh.msh", "does not exist"]),
    "mesh-garbage": ({}, _garbage_mesh, "mesh.file", ["broken.msh", "cannot read"]),
    "expression-token": ({"boundary.left": {"value": '"__import__(\'os\')"'}}, None,
                         "boundary.left.value", ["__import__", "allowed", "sin", "u_star"]),
    "unknown-family": ({"pde": {"family": '"heat"'}}, None, "pde.family",
                       ['"heat"', "allowed", "gpme", "navier-stokes"]),
}


def _bad_case(tmp_path: Path, name: str) -> Path:
    edits, step, _, _ = BAD_CASES[name]
    case = small_case("stefan-1d", tmp_path, train=1, test=1, name=name, **{**TINY, **edits})
    if step:
        step(case)
    return case


def _assert_one_message(proc, key: str, fragments: list[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    err = proc.stderr
    assert "Traceback" not in err and "Traceback" not in proc.stdout
    messages = [line for line in err.splitlines() if line.startswith("hybrid: error:")]
    assert len(messages) == 1, err
    message = messages[0]
    assert "case.toml" in message and f"{key}:" in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"
    return message


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_bad_case_is_one_message_and_exit_2(tmp_path, name):
    case = _bad_case(tmp_path, name)
    proc = run_cli(["solve", case], cwd=tmp_path, timeout=120)
    _, _, key, fragments = BAD_CASES[name]
    _assert_one_message(proc, key, fragments)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr   # nothing else on stderr
    assert f"{name}/case.toml" in proc.stderr                       # the file, as the user names it
    assert not (case / "results").exists(), sorted(p.name for p in case.rglob("*"))


@pytest.mark.parametrize("name", ["mesh-garbage", "boundary-not-in-mesh"])
def test_bad_case_under_mpirun_is_one_message(tmp_path, name):
    """Errors found while reading the mesh (rank 0) must not hang or repeat on other ranks."""
    case = _bad_case(tmp_path, name)
    proc = run_cli(["solve", case], ranks=2, cwd=tmp_path, timeout=120)
    _, _, key, fragments = BAD_CASES[name]
    _assert_one_message(proc, key, fragments)
    assert not (case / "results").exists()


def test_failed_run_leaves_earlier_results_intact(tmp_path):
    case = small_case("stefan-1d", tmp_path, train=1, test=1, **TINY)
    assert run_cli(["solve", case, "--quiet"]).returncode == 0
    solve = case / "results" / "solve"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in solve.iterdir()}
    toml = case / "case.toml"
    toml.write_text(edit_toml(toml.read_text(), "time", "dt", "0.5"))
    proc = run_cli(["solve", case, "--quiet", "--force"])
    assert proc.returncode == 2 and "time.dt" in proc.stderr
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in solve.iterdir()}
    assert after == before


def test_missing_case_directory_exits_2(tmp_path):
    for args in (["solve", tmp_path / "nowhere"], ["export", tmp_path / "nowhere"],
                 ["solve", tmp_path / "nowhere" / "case.toml"]):
        proc = run_cli(args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "nowhere" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli(["solve", empty], cwd=tmp_path)
    assert proc.returncode == 2 and "no case.toml" in proc.stderr
    assert list(empty.iterdir()) == []


def test_toml_syntax_error_exits_2(tmp_path):
    case = tmp_path / "broken"
    case.mkdir()
    (case / "case.toml").write_text("[time]\nt_end = = 1\n")
    proc = run_cli(["solve", case], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "case.toml" in proc.stderr and "TOML" in proc.stderr


def test_keys_lists_every_section():
    proc = run_cli(["keys"])
    assert proc.returncode == 0, proc.stderr
    for fragment in ("control_volumes", "[mesh]", "[time]", "t_end", "outputs", "epochs",
                     "[output]"):
        assert fragment in proc.stdout, fragment
    assert proc.stderr.strip() == ""


def test_usage_errors_exit_2():
    proc = run_cli([])
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = run_cli(["solv", "cases/stefan-1d"])
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
