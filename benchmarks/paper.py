"""The papers' experiments at the papers' settings: the cases of ``cases/paper`` through
``mpirun -n 2 hybrid predict``, side by side with the published figures.

    .venv/bin/python benchmarks/paper.py [--cases NAME ...] [--work DIR] [--out DIR]

BOON's three 1-D problems (``boon-*``) compare, on the same dataset: the FNO without zero
padding (the ``unpadded`` variant: BOON's published FNO1d baseline declares a padding and never
applies it), our FNO (the ``raw`` variant: zero padding of a non-periodic grid), BOON's
boundary-corrected FNO (``boon``) and the constraint variants of our FNO. ProbConserv's three
GPME problems (``probconserv-*``) compare the raw ensemble, ProbConserv's update with one
global row per output interval (``global``), ours per cell (+ boundary) and, for Stefan, the
paper's own setting with the closed-form total mass (``known-mass``).

Each case is copied to ``WORK/NAME`` (its case.toml only; results stay there, so a finished
case is not rerun). Writes ``OUT/paper.md`` (both tables; default OUT: ``docs/figures``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from case_copies import ROOT, predict  # noqa: E402

# final test relative L2 of BOON in the notebooks of amazon-science/boon (1000 training and 200
# test trajectories, modes 12, width 32, 500 epochs)
PUBLISHED_BOON = {"boon-stokes-1d": 0.0123, "boon-heat-1d": 0.0215, "boon-burgers-1d": 8.9e-4}
ENSEMBLES = {"raw": "", "unpadded": "unpadded", "boon": "boon"}   # variant: its train/ folder
VARIANT_COLUMNS = ("raw", "global", "per-cell", "per-cell+boundary", "known-mass")


def _copy(name: str, work: Path) -> Path:
    src = ROOT / "cases" / "paper" / name / "case.toml"
    case = work / name
    case.mkdir(parents=True, exist_ok=True)
    target = case / "case.toml"
    if not target.exists() or target.read_text() != src.read_text():
        target.write_text(src.read_text())
    return case


def _seconds_per_epoch(case: Path, folder: str) -> float | None:
    """The mean over members of seconds per epoch of one ensemble (its stage.json)."""
    stage = case / "results" / "train" / folder / "stage.json"
    if not stage.exists():
        return None
    members = json.loads(stage.read_text())["members"]
    values = [m["seconds_per_epoch"] for m in members.values()] if isinstance(members, dict) else []
    return sum(values) / len(values) if values else None


def _boundary_error(v: dict) -> float | None:
    """The largest of a variant's Dirichlet and normal-derivative errors (None: no such rows)."""
    found = [v[k] for k in ("dirichlet_error", "normal_derivative_error") if v.get(k) is not None]
    return max(found) if found else None


def _ratio(a, b):
    return None if a is None or b is None else a / b


def _fmt(value, spec: str = ".4f") -> str:
    return "–" if value is None else f"{value:{spec}}"


def _boon_table(results: dict) -> str:
    lines = ["| case | grid | train / test | epochs | BOON published | unpadded FNO | our FNO | "
             "BOON | per-cell + boundary | BOON / unpadded | BOON / our FNO | BOON / published | "
             "boundary error: unpadded, ours, BOON, p.c.+b. | "
             "s per member-epoch: ours, unpadded, BOON |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, (case, m) in results.items():
        v = m["variants"]
        rel = {k: v[k]["rel_l2"] if k in v else None
               for k in ("raw", "unpadded", "boon", "per-cell+boundary")}
        # a periodic grid has no padding: there our FNO is the unpadded one
        unpadded = rel["unpadded"] if rel["unpadded"] is not None else rel["raw"]
        errors = ", ".join(_fmt(_boundary_error(v[k]), ".1e") if k in v else "–"
                           for k in ("unpadded", "raw", "boon", "per-cell+boundary"))
        seconds = ", ".join(_fmt(_seconds_per_epoch(case, f), ".2f") for f in ENSEMBLES.values())
        lines.append(f"| {name} | {m['grid']} | {m['train']} / {m['test']} | {m['epochs']} | "
                     f"{PUBLISHED_BOON[name]:.2g} | {_fmt(rel['unpadded'])} | {_fmt(rel['raw'])} | "
                     f"{_fmt(rel['boon'])} | {_fmt(rel['per-cell+boundary'])} | "
                     f"{_fmt(_ratio(rel['boon'], unpadded), '.2f')}× | "
                     f"{_fmt(_ratio(rel['boon'], rel['raw']), '.2f')}× | "
                     f"{_fmt(_ratio(rel['boon'], PUBLISHED_BOON[name]), '.2f')}× | {errors} | "
                     f"{seconds} |")
    return "\n".join(lines) + "\n"


def _probconserv_table(results: dict) -> str:
    lines = ["| case | train / test | raw | global | per-cell | per-cell + boundary | known mass | "
             "MSE / raw: global, per-cell + boundary, known mass | coverage raw → p.c.+b. | "
             "nearest / ensemble (in / out of range) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, (_, m) in results.items():
        v = m["variants"]
        rel = {k: _fmt(v[k]["rel_l2"]) if k in v else "–" for k in VARIANT_COLUMNS}
        mse = {k: _fmt(v[k]["mse"] / max(v["raw"]["mse"], 1e-300), ".3f") if k in v else "–"
               for k in VARIANT_COLUMNS}
        by = m.get("by_range", {})
        ranges = " / ".join(_fmt((by.get(r) or {}).get("nearest_over_ensemble"), ".2f")
                            for r in ("in_range", "out_of_range"))
        lines.append(f"| {name} | {m['train']} / {m['test']} | {rel['raw']} | {rel['global']} | "
                     f"{rel['per-cell']} | {rel['per-cell+boundary']} | {rel['known-mass']} | "
                     f"{mse['global']}, {mse['per-cell+boundary']}, {mse['known-mass']} | "
                     f"{v['raw']['coverage90']:.2f} → {v['per-cell+boundary']['coverage90']:.2f} | "
                     f"{ranges} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = sorted(p.name for p in (ROOT / "cases" / "paper").iterdir()
                   if (p / "case.toml").exists())
    ap.add_argument("--cases", nargs="+", default=names, choices=names)
    ap.add_argument("--work", type=Path, default=Path("/tmp/hybrid-paper"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = ap.parse_args()
    import tomllib

    boon, probconserv = {}, {}
    for name in args.cases:
        case = _copy(name, args.work)
        metrics = predict(case)
        toml = tomllib.loads((case / "case.toml").read_text())
        metrics.update(grid=toml["surrogate"]["grid"], epochs=toml["surrogate"]["epochs"],
                       train=toml["data"]["train"], test=toml["data"]["test"])
        (boon if name.startswith("boon-") else probconserv)[name] = (case, metrics)
        print(f"{name}: " + ", ".join(f"{k} {v['rel_l2']:.4g}"
                                      for k, v in metrics["variants"].items()), flush=True)
    text = ""
    if boon:
        text += ("BOON's problems (test relative L2, in distribution):\n\n"
                 + _boon_table(boon) + "\n")
    if probconserv:
        text += "ProbConserv's problems (test relative L2):\n\n" + _probconserv_table(probconserv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paper.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
