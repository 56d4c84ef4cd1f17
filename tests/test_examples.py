"""The literate scripts in ``examples/`` run as a user would run them: serially and under
``mpirun -n 2``, on a small copy of a shipped case, using only the public API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, mpi_env, mpirun_prefix, small_case

EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
SMALL = dict(train=6, test=2, time={"t_end": "0.01", "outputs": "3"},
             constraints={"compare": '["raw", "global", "per-cell", "per-cell+boundary"]'},
             surrogate={"members": "2", "epochs": "3", "grid": "32", "modes": "8", "width": "8",
                        "layers": "2", "batch": "4", "time": '"one-shot"'})


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(tmp_path, script, ranks):
    case = small_case("stefan-1d", tmp_path, **SMALL)
    command = [sys.executable, str(script), str(case)]
    if ranks > 1:
        command = mpirun_prefix(ranks) + command
    proc = subprocess.run(command, cwd=ROOT, env=mpi_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    if script.stem == "external_model":
        metrics = json.loads((case / "results/external/mlp/metrics.json").read_text())["variants"]
        assert metrics["per-cell+boundary"]["max_balance_residual"] <= 1e-10
        assert metrics["per-cell+boundary"]["dirichlet_error"] <= 1e-12
        assert proc.stdout.count("MLP ensemble MSE") == 1   # printed by rank 0 only
    if script.stem == "pipeline":
        assert proc.stdout.count("ParaView series, e.g.") == 1   # printed by rank 0 only
        assert (case / "results/validate/report.md").is_file()
        assert len(list((case / "results/export").glob("test-*.xdmf"))) == 2


def test_examples_use_only_the_public_api():
    for script in EXAMPLES:
        imports = [line for line in script.read_text().splitlines()
                   if line.startswith(("import hybrid", "from hybrid"))]
        assert imports and all(line in ("from hybrid.stages import api",)
                               for line in imports), (script, imports)
    assert Path(ROOT / "hybrid" / "stages" / "api.py").is_file()
