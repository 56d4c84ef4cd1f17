"""Which error dominates a trained surrogate: fitting, validation or extrapolation.

    .venv/bin/python benchmarks/surrogate_errors.py CASE_DIR [CASE_DIR ...] [--out FILE]

For each case that has been through ``hybrid train`` (its ``results/`` next to its
``case.toml``), the ensemble that predicts is run on three sets of scenarios and scored
by the relative L2 of its mean over t_1..t_T (volume-weighted, as ``hybrid predict``):

* its fitting scenarios (what the members trained on),
* its validation scenarios (never trained on, drawn like the fitting ones), against the
  nearest *fitting* scenario's trajectory,
* the test scenarios, against the nearest training scenario, inside and outside the training
  parameters' span,

and the grid's floor (:meth:`~hybrid.surrogates.transfer.Transfer.fit_floor` of the fitting
scenarios' last increments). Fitting ≈ validation ≫ floor says the network underfits; a
validation ratio well above the test one says the test's out-of-range scenarios (the
extrapolation) dominate. Prints a Markdown table (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

from hybrid.case import load_case
from hybrid.constraints.selection import within_training_span
from hybrid.dataset import read_dataset
from hybrid.metrics import relative_l2
from hybrid.problems import problem_for
from hybrid.validation.scores import nearest_training_baseline
from hybrid.stages.train import case_transfer, chosen_members, load_members, split_indices
from hybrid.surrogates.ensemble import predict_ensemble


def _scores(case_dir: Path) -> str:
    case = load_case(case_dir)
    data = read_dataset(Path(case.output_dir) / "solve" / "dataset.h5")
    cv, transfer = case_transfer(case, data)
    data = problem_for(case).view(data)
    M = int(case.surrogate["members"])
    chosen = chosen_members(case, Path(case.output_dir) / "train")
    members = load_members(chosen.folder, M, list(range(M)), chosen.digest)
    fit_idx, val_idx = split_indices(case, data.train.count)
    fit, val, test = data.train.take(fit_idx), data.train.take(val_idx), data.test

    def rel(split):
        pred, _ = predict_ensemble(members, M, transfer, cv, data.with_splits(test=split),
                                   MPI.COMM_SELF)
        w = np.tile(cv.volume, split.u.shape[-1] // cv.num_cvs)
        return relative_l2(pred["u_mean"][:, 1:], split.u[:, 1:], w), w

    def nearest(ref, split, w):
        return relative_l2(ref.u[nearest_training_baseline(ref, split)][:, 1:], split.u[:, 1:], w)

    e_fit, w = rel(fit)
    e_val, _ = rel(val)
    e_test, _ = rel(test)
    n_val, n_test = nearest(fit, val, w), nearest(data.train, test, w)
    inside = within_training_span(data.train.params, test.params)
    increments = (fit.u[:8, -1] - fit.u[:8, 0]).reshape(-1, cv.num_cvs)
    floor = transfer.fit_floor(increments, cv.volume)

    def ratio(a, b, chosen_):
        return f"{b[chosen_].mean() / a[chosen_].mean():.2f}×" if chosen_.any() else "–"
    everything = np.ones(len(e_val), bool)
    return (f"| {case.name} | {chosen.time} | {floor:.4f} | {e_fit.mean():.4f} | "
            f"{e_val.mean():.4f} | "
            f"{n_val.mean():.4f} | {ratio(e_val, n_val, everything)} | {e_test.mean():.4f} | "
            f"{ratio(e_test, n_test, inside)} | {ratio(e_test, n_test, ~inside)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lines = ["| case | members | grid floor | fitting rel. L2 | validation rel. L2 | nearest "
             "fitting scenario | "
             "nearest / ensemble | test rel. L2 | nearest / ensemble in range | out of range |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for case_dir in args.cases:
        lines.append(_scores(case_dir))
        print(lines[-1], file=sys.stderr, flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
