"""The ablation table of small copies of shipped cases, pinned to its printed digits: a refactor
that changes any number a user reads (relative L2, MSE / raw, coverage, λ) fails here.

The pinned tables are in ``tests/pinned/``. After a change that is meant to alter results,
regenerate them with ``HYBRID_REPIN=1 .venv/bin/python -m pytest tests/test_pinned_tables.py``
and say so in the commit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import small_case
from mpi4py import MPI

from hybrid.case import load_case

PINNED = Path(__file__).resolve().parent / "pinned"
TINY = dict(surrogate={"members": "2", "epochs": "4", "grid": "32", "modes": "8", "width": "8",
                       "layers": "2", "batch": "4"},
            time={"t_end": "0.4", "outputs": "4"})
CASES = {
    "stokes-1d": dict(train=10, test=3,
                      constraints={"compare": '["raw", "hardc", "global", "per-cell"]'}),
    "burgers-1d": dict(train=10, test=3, time={"t_end": "0.1", "outputs": "4"},
                       constraints={"compare": '["raw", "global", "per-cell"]'}),
}


def _table(metrics: dict) -> str:
    """The README's ablation columns at their printed precision."""
    raw = metrics["variants"]["raw"]["mse"]
    lines = [f"rel_l2 {metrics['rel_l2_mean']:.4g} nearest {metrics['rel_l2_nearest_train']:.4g} "
             f"lambda {metrics['flux_inflation']:g} prior {metrics['prior_inside_training_span']}"]
    for name, v in metrics["variants"].items():
        exact = v["max_balance_residual"] is not None and v["max_balance_residual"] <= 1e-10
        lines.append(f"{name:18s} rel_l2 {v['rel_l2']:.4f} mse/raw {v['mse'] / raw:.3f} "
                     f"coverage {v['coverage90']:.2f} balanced {exact}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_ablation_table_is_pinned(tmp_path, name):
    from hybrid.stages.predict import run_predict

    settings = {**TINY, **CASES[name]}
    case = small_case(name, tmp_path, **settings)
    run_predict(load_case(case), comm=MPI.COMM_SELF, progress=False, announce=False)
    table = _table(json.loads((case / "results/predict/metrics.json").read_text()))
    pinned = PINNED / f"{name}.txt"
    if os.environ.get("HYBRID_REPIN"):
        pinned.parent.mkdir(exist_ok=True)
        pinned.write_text(table)
    assert pinned.exists(), f"no pinned table {pinned}: run with HYBRID_REPIN=1 once"
    assert table == pinned.read_text()
