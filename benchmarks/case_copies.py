"""Copies of shipped cases with edited keys, run through ``mpirun -n 2 hybrid predict``: the
benchmarks that retrain a case (data efficiency, the surrogate ablation) share these."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def set_key(text: str, section: str, key: str, value: str) -> str:
    """case.toml text with ``key = value`` in ``[section]`` (replaced, or added at its top)."""
    head = re.search(rf"^\[{re.escape(section)}\][^\n]*\n", text, flags=re.M)
    if head is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    end = re.search(r"^\[", text[head.end():], flags=re.M)
    stop = head.end() + (end.start() if end else len(text) - head.end())
    body = text[head.end():stop]
    if re.search(rf"^{re.escape(key)}\s*=", body, flags=re.M):
        body = re.sub(rf"^{re.escape(key)}\s*=.*$", f"{key} = {value}", body, count=1, flags=re.M)
    else:
        body = f"{key} = {value}\n" + body
    return text[:head.end()] + body + text[stop:]


def copy_case(src: Path, work: Path, name: str, edits: dict) -> Path:
    """WORK/cases/NAME: the case at ``src`` with ``edits`` ({(section, key): TOML value}) and its
    ``compare`` reduced to raw and per-cell (no SoftC or BOON ensembles). WORK/meshes links the
    shipped meshes, so a case's ``../../meshes/`` path still resolves. An unchanged copy keeps
    its results, so an interrupted study resumes."""
    (work / "cases").mkdir(parents=True, exist_ok=True)
    meshes = work / "meshes"
    if not meshes.exists():
        meshes.symlink_to(ROOT / "meshes")
    case = work / "cases" / name
    case.mkdir(exist_ok=True)
    text = set_key((src / "case.toml").read_text(), "constraints", "compare", '["raw", "per-cell"]')
    for (section, key), value in edits.items():
        text = set_key(text, section, key, value)
    target = case / "case.toml"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return case


def predict(case: Path) -> dict:
    """``mpirun -n 2 hybrid predict`` of the copy; its predict metrics and training stamp."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    subprocess.run(["mpirun", "-n", "2", str(ROOT / ".venv" / "bin" / "hybrid"), "predict",
                    str(case), "--quiet"],
                   check=True, env=env)
    metrics = json.loads((case / "results" / "predict" / "metrics.json").read_text())
    metrics["train_stage"] = json.loads((case / "results" / "train" / "stage.json").read_text())
    return metrics
