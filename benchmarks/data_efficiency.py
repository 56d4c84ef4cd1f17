"""Data efficiency: relative L2 of the raw ensemble and of the per-cell + boundary variant
against the number of training scenarios, where constraints should matter most.

    .venv/bin/python benchmarks/data_efficiency.py [--cases stefan-1d burgers-1d heat-2d]
        [--counts 10 25 50 100 400] [--largest-2d 100] [--work DIR] [--out DIR]

For each case and count n, a copy of the shipped case with ``[data] train = n`` (everything
else as shipped, except that ``compare`` is reduced to raw and per-cell: no SoftC or BOON
ensembles) goes through ``mpirun -n 2 hybrid predict`` (solve, train, predict). The test
scenarios do not depend on n (every scenario has its own seed), so each column of the table
scores the same test set. 2-D and 3-D cases (names ending in -2d, -3d) stop at
``--largest-2d`` scenarios: their training grows
linearly with n, and 400 heat-2d scenarios would take about 23 minutes of training alone on
two cores. Copies whose results are current are reused (``--work`` keeps them), so an
interrupted study resumes.

Writes ``OUT/data_efficiency.md`` (the table) and ``OUT/data_efficiency.png`` (the figure):
per case, raw and constrained relative L2 against n on log axes, and the nearest-training-
scenario baseline's. Default OUT: ``docs/figures``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from case_copies import ROOT, copy_case, predict  # noqa: E402


def _run(src: Path, work: Path, n: int) -> dict:
    metrics = predict(copy_case(src, work, f"{src.name}-n{n}", {("data", "train"): str(n)}))
    v = metrics["variants"]
    main = "per-cell+boundary" if "per-cell+boundary" in v else "per-cell"
    return {"raw": v["raw"]["rel_l2"], "constrained": v[main]["rel_l2"], "variant": main,
            "mse_ratio": v[main]["mse"] / max(v["raw"]["mse"], 1e-300),
            "nearest": metrics["rel_l2_nearest_train"], "coverage_raw": v["raw"]["coverage90"],
            "coverage": v[main]["coverage90"],
            "training_seconds": metrics["train_stage"].get("training_seconds")}


def _figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items()):
        n = sorted(rows)
        ax.loglog(n, [rows[k]["raw"] for k in n], "o-", label="raw ensemble")
        ax.loglog(n, [rows[k]["constrained"] for k in n], "s-", label=rows[n[0]]["variant"])
        ax.loglog(n, [rows[k]["nearest"] for k in n], "^:", color="grey",
                  label="nearest training scenario")
        ax.set_title(name)
        ax.set_xlabel("training scenarios")
        ax.set_ylabel("test relative L2")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _table(results: dict) -> str:
    lines = ["| case | training scenarios | raw rel. L2 | constrained rel. L2 | MSE / raw | "
             "nearest rel. L2 | nearest / raw | coverage raw → constrained | training s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        for n in sorted(rows):
            r = rows[n]
            seconds = "–" if r["training_seconds"] is None else f"{r['training_seconds']:.0f}"
            lines.append(f"| {name} | {n} | {r['raw']:.4f} | {r['constrained']:.4f} | "
                         f"{r['mse_ratio']:.3f} | {r['nearest']:.4f} | "
                         f"{r['nearest'] / r['raw']:.2f}× | {r['coverage_raw']:.2f} → "
                         f"{r['coverage']:.2f} | {seconds} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["stefan-1d", "burgers-1d", "heat-2d"])
    ap.add_argument("--counts", nargs="+", type=int, default=[10, 25, 50, 100, 400])
    ap.add_argument("--largest-2d", type=int, default=100)
    ap.add_argument("--work", type=Path, default=Path("/tmp/hybrid-data-efficiency"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = ap.parse_args()
    results = {}
    for name in args.cases:
        src = ROOT / "cases" / name
        two_d = name.endswith(("-2d", "-3d"))   # the shipped cases' naming
        results[name] = {}
        for n in args.counts:
            if two_d and n > args.largest_2d:
                continue
            results[name][n] = _run(src, args.work, n)
            r = results[name][n]
            print(f"{name} n={n}: raw {r['raw']:.4f}, {r['variant']} {r['constrained']:.4f} "
                  f"(MSE ×{r['mse_ratio']:.3f}), nearest {r['nearest']:.4f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table = _table(results)
    (args.out / "data_efficiency.md").write_text(table)
    _figure(results, args.out / "data_efficiency.png")
    print(table)


if __name__ == "__main__":
    main()
