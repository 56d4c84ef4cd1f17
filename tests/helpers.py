"""Shared test utilities: small copies of the shipped cases and the real ``hybrid`` command.

``small_case`` copies a shipped ``case.toml`` into a temporary directory with few scenarios
and optional edits (text substitution of ``key = value`` lines inside a section), so that a
test runs the case as a user would, only smaller. ``run_cli`` runs ``.venv/bin/hybrid`` (or
``mpirun -n P hybrid``) as a subprocess and captures its output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "cases"
MESHES = ROOT / "meshes"
SHIPPED_CASES = sorted(p.name for p in CASES.iterdir() if (p / "case.toml").is_file())
# the cases with a scalar unknown and control-volume balance rows (navier-stokes cases have
# velocity vectors and face fluxes at the output times: tests/test_navier_stokes.py)
SCALAR_CASES = [n for n in SHIPPED_CASES
                if tomllib.loads((CASES / n / "case.toml").read_text())["pde"]["family"]
                != "navier-stokes"]

__all__ = ["ROOT", "CASES", "MESHES", "SHIPPED_CASES", "SCALAR_CASES", "hybrid_command", "mpi_env",
           "mpirun_prefix", "edit_toml", "small_case", "run_cli", "popen_cli"]

_HEADER = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")


def hybrid_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m hybrid``."""
    script = Path(sys.executable).parent / "hybrid"
    if script.exists():
        return [str(script)]
    venv = ROOT / ".venv" / "bin" / "hybrid"
    if venv.exists():
        return [str(venv)]
    return [sys.executable, "-m", "hybrid"]


def mpi_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: root-safe Open MPI, not inside a test's MPI job."""
    # a child started from inside an MPI rank must not think it belongs to that job
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONUNBUFFERED="1")
    env.pop("HYBRID_MPI_CHILD", None)
    env.update(extra or {})
    return env


def mpirun_prefix(ranks: int) -> list[str]:
    cmd = ["mpirun", "-n", str(ranks)]
    if (os.cpu_count() or 1) < ranks:
        cmd.append("--oversubscribe")
    return cmd


def edit_toml(text: str, section: str, key: str, value: str) -> str:
    """Set ``key = value`` (``value`` is TOML text) in ``[section]``: replace the line when
    the key is there, add it under the header when not, add the section when it is missing."""
    lines = text.splitlines()
    current, header_at, end_at = None, None, None
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if m:
            if current == section and end_at is None:
                end_at = i
            current = m.group(1).strip()
            if current == section:
                header_at = i
            continue
        if current == section and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    if header_at is None:
        lines += ["", f"[{section}]", f"{key} = {value}"]
    else:
        lines.insert(header_at + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def small_case(src_case_dir: str | Path, tmp_path: str | Path, train: int = 2, test: int = 2,
               name: str | None = None, **overrides: dict) -> Path:
    """Copy a shipped case to ``tmp_path/<name>/case.toml`` with ``train``/``test`` scenarios.

    ``overrides`` map a section to ``{key: TOML text}``, e.g.
    ``small_case("stefan-1d", tmp, time={"t_end": "0.02", "outputs": "4"})``; a section name
    with a dot (``"boundary.left"``) is passed as ``**{"boundary.left": {...}}``. The mesh
    file is rewritten to an absolute path so the copy works from anywhere.
    """
    src = Path(src_case_dir)
    if not src.is_absolute() and not src.exists():
        src = CASES / src
    text = (src / "case.toml").read_text()
    text = edit_toml(text, "data", "train", str(train))
    text = edit_toml(text, "data", "test", str(test))
    for section, keys in overrides.items():
        for key, value in keys.items():
            text = edit_toml(text, section, key, value)

    def absolute(m: re.Match) -> str:
        return f'{m.group(1)}"{(src / m.group(2)).resolve()}"'
    text = re.sub(r'^(\s*file\s*=\s*)"([^"]+)"', absolute, text, flags=re.M)
    dest = Path(tmp_path) / (name or src.name)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "case.toml").write_text(text)
    return dest


def _command(args: list[str], ranks: int) -> list[str]:
    cmd = hybrid_command() + [str(a) for a in args]
    return (mpirun_prefix(ranks) + cmd) if ranks > 1 else cmd


def run_cli(args: list[str], ranks: int = 1, cwd: str | Path | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``hybrid ARGS`` (under ``mpirun -n ranks`` when ranks > 1); output captured as text."""
    return subprocess.run(_command(args, ranks), cwd=cwd or ROOT, env=mpi_env(env),
                          capture_output=True, text=True, timeout=timeout)


def popen_cli(args: list[str], ranks: int = 1, cwd: str | Path | None = None) -> subprocess.Popen:
    """Start ``hybrid ARGS`` without waiting (for interrupting it); its own process group."""
    return subprocess.Popen(_command(args, ranks), cwd=cwd or ROOT, env=mpi_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
