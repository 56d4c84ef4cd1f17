"""The ``case.toml`` sections each stage's results depend on: what its digest in
``stage.json`` hashes (:meth:`~hybrid.case.config.Case.hash`), so that a change to any of them
redoes the stage."""

from __future__ import annotations

__all__ = ["SOLVE_SECTIONS", "TRAIN_SECTIONS"]

SOLVE_SECTIONS = ("case", "mesh", "pde", "parameters", "initial", "boundary", "time", "solver",
                  "data")
TRAIN_SECTIONS = SOLVE_SECTIONS + ("surrogate",)
