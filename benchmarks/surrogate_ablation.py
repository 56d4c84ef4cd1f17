"""Why the sharp-front and wave surrogates barely beat the nearest training scenario: one
change at a time to the shipped surrogate settings, scored inside and outside the training
parameters' span.

    .venv/bin/python benchmarks/surrogate_ablation.py [--cases stefan-1d wave-1d] [--work DIR]
                                                      [--out DIR]

Each variant is a copy of the shipped case with one ``[surrogate]`` (or ``[data]``) change,
``compare`` reduced to raw and per-cell, run through ``mpirun -n 2 hybrid predict``; the
test scenarios are the shipped ones. Writes ``OUT/surrogate_ablation.md`` (default OUT:
``docs/figures``): the raw ensemble's relative L2 over all test scenarios, inside and outside
the training span, the nearest training scenario's, their ratio, and the training seconds, with
the members' mean best validation relative L2 (what ``[surrogate] time = "select"`` compares).
Rows of variants not rerun are kept from the earlier file.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from case_copies import ROOT, copy_case, predict  # noqa: E402

VARIANTS = {
    "as shipped": {},
    "grid 256": {("surrogate", "grid"): "256"},
    "modes 32": {("surrogate", "modes"): "32"},
    "width 64": {("surrogate", "width"): "64"},
    "6 layers": {("surrogate", "layers"): "6"},
    "lr 3e-3": {("surrogate", "lr"): "3e-3"},
    "3x epochs": None,   # filled per case: three times its epochs and patience
    "4x scenarios": None,
    # one step t_n -> t_(n+1) rolled out (hybrid/surrogates/rollout.py); 40 passes over every
    # (scenario, step) pair cost about as much as 200 one-shot epochs on a 20-output 1-D case;
    # relative: each step's loss over its own increment (the default before rollout_loss)
    "autoregressive": None,
    # its loss over the increments' typical size instead (scaled, the default since)
    "autoregressive, scaled": None,
    "autoregressive, scaled, 80 epochs": None,
    # each step also seeing the last increment (a second-order equation's velocity)
    "autoregressive, 2 levels": None,
    "autoregressive, 2 levels, scaled": None,
    "autoregressive, 2 levels, scaled, 80 epochs": None,
    # the parameters left to the initial-state channel ([surrogate] parameter_inputs = []): for
    # a case whose parameters only shape the initial state, such as heat-boon-1d's omega
    "no parameter inputs": {("surrogate", "parameter_inputs"): "[]"},
    "autoregressive, scaled, no parameter inputs": None,
}

BLIND = ", no parameter inputs"


def _stepping(name: str) -> dict:
    """The edits of an "autoregressive[, 2 levels][, scaled][, N epochs]" variant."""
    epochs = next((w.split()[0] for w in name.split(", ") if w.endswith(" epochs")), "40")
    return {("surrogate", "time"): '"autoregressive"', ("surrogate", "rollout_epochs"): epochs,
            ("surrogate", "rollout_history"): "2" if "2 levels" in name else "1",
            ("surrogate", "rollout_loss"): '"scaled"' if "scaled" in name else '"relative"'}


def _edits(name: str, text: str) -> dict:
    import re

    if name.endswith(BLIND) and name != BLIND[2:]:
        return {**_edits(name[:-len(BLIND)], text), **VARIANTS[BLIND[2:]]}
    if name.startswith("autoregressive"):
        return _stepping(name)

    if name == "3x epochs":
        epochs = int(re.search(r"^epochs = (\d+)", text, flags=re.M).group(1))
        patience = int(re.search(r"^patience = (\d+)", text, flags=re.M).group(1))
        return {("surrogate", "epochs"): str(3 * epochs),
                ("surrogate", "patience"): str(3 * patience)}
    if name == "4x scenarios":
        return {("data", "train"): str(4 * int(re.search(r"^train = (\d+)", text,
                                                         flags=re.M).group(1)))}
    return VARIANTS[name]


def _row(case: str, name: str, m: dict) -> str:
    br = m.get("by_range") or {}

    def part(key: str) -> str:
        r = br.get(key)
        if not r:
            return "– | –"
        return f"{r['rel_l2_mean']:.4f} | {r['rel_l2_nearest_train'] / r['rel_l2_mean']:.2f}×"
    seconds = m["train_stage"].get("training_seconds")
    members = m["train_stage"].get("members") or {}
    validation = (np.mean([v["best_validation_rel_l2"] for v in members.values()]) if members
                  else None)
    return (f"| {case} | {name} | {'–' if validation is None else f'{validation:.4f}'} | "
            f"{m['rel_l2_mean']:.4f} | {m['rel_l2_nearest_train'] / m['rel_l2_mean']:.2f}× | "
            f"{part('in_range')} | {part('out_of_range')} | {m['coverage90']:.2f} | "
            f"{'–' if seconds is None else f'{seconds:.0f}'} |")


def _merged(path: Path, rows: list[str]) -> list[str]:
    """The table's rows: this run's, and the earlier file's for (case, variant) pairs not rerun."""
    key = lambda row: tuple(cell.strip() for cell in row.split("|")[1:3])
    new = {key(r): r for r in rows}
    old = path.read_text().splitlines()[2:] if path.exists() else []
    kept = [r for r in old if r.startswith("|") and key(r) not in new]
    return sorted(kept + rows, key=lambda r: key(r)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["stefan-1d", "wave-1d"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--work", type=Path, default=Path("/tmp/hybrid-surrogate-ablation"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = ap.parse_args()
    head = ["| case | surrogate | validation rel. L2 | rel. L2 | nearest / ensemble | in range | "
            "nearest / ensemble | out of range | nearest / ensemble | coverage | training s |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines = []
    for case in args.cases:
        src = ROOT / "cases" / case
        text = (src / "case.toml").read_text()
        for name in args.variants:
            slug = name.replace(" ", "-").replace("(", "").replace(")", "")
            m = predict(copy_case(src, args.work, f"{case}-{slug}", _edits(name, text)))
            lines.append(_row(case, name, m))
            print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table = head + _merged(args.out / "surrogate_ablation.md", lines)
    (args.out / "surrogate_ablation.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
