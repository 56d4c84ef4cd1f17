"""Writing results safely and knowing when a stage can be reused.

Every result file is written under a temporary name in the same directory and renamed
into place, so an interrupted or failed run never leaves a half-written file under its
final name. A stage records the hash of the case sections it read in ``stage.json``
(written last); the stage is reused when that hash is unchanged and ``--force`` is not
given.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "stage_is_current", "mark_stage_done", "stage_dir"]


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def stage_dir(output_dir: Path, stage: str) -> Path:
    return Path(output_dir) / stage


def stage_is_current(directory: Path, digest: str, required: list[str]) -> bool:
    """True when ``directory/stage.json`` records ``digest`` and every required file exists."""
    stamp = Path(directory) / "stage.json"
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("hash") == digest and all((Path(directory) / f).exists() for f in required)


def mark_stage_done(directory: Path, digest: str, **info) -> None:
    with atomic_path(Path(directory) / "stage.json") as tmp:
        tmp.write_text(json.dumps({"hash": digest, **info}, indent=2, default=str) + "\n")
