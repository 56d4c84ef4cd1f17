"""Writing results safely and knowing when a stage can be reused.

Every result file is written under a temporary name in the same directory and renamed
into place, so an interrupted or failed run never leaves a half-written file under its
final name. A stage records the hash of the case sections it read and the sha256 of
every output it vouches for in ``stage.json`` (written last); the stage is reused when
both still hold and ``--force`` is not given, so an output that a failed or killed later
run replaced, a corrupted one or one copied in from elsewhere makes the stage stale, while
outputs a killed run left untouched stay current.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

from hybrid.errors import WriteError, is_write_failure

__all__ = ["atomic_path", "replace_file", "stage_is_current", "mark_stage_done", "file_digest"]


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success only.

    An error of the operating system while writing (full disk, quota, file-size limit, no
    permission) becomes a :class:`WriteError` naming ``path``; ``path`` keeps what it had."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(path)
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:
        if not is_write_failure(error):
            raise
        raise WriteError.failed(path, error) from error
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


def replace_file(source: Path | str, path: Path | str) -> None:
    """Rename ``source`` onto ``path`` (one atomic step); a failure is a :class:`WriteError`."""
    try:
        os.replace(source, path)
    except OSError as error:
        raise WriteError.failed(path, error) from error


def _remove_orphans(path: Path) -> None:
    """Delete temporary files of ``path`` left by processes that no longer run (kill -9)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except ValueError:
            continue
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                tmp.unlink()
        except PermissionError:   # alive, another user's
            continue


def file_digest(path: Path | str) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage_is_current(directory: Path, digest: str, required: list[str]) -> bool:
    """True when ``directory/stage.json`` records ``digest``, every required file exists, and
    every output the stamp vouches for still has the bytes it had when the stage finished (a
    later failed run, a corrupted or a copied-in file makes the stage stale)."""
    stamp = Path(directory) / "stage.json"
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    if recorded.get("hash") != digest or not all((Path(directory) / f).exists() for f in required):
        return False
    try:
        return all(file_digest(Path(directory) / name) == sha for name, sha in recorded.get("outputs", {}).items())
    except OSError:
        return False


def mark_stage_done(directory: Path, digest: str, outputs: list[str] | tuple[str, ...] = (), **info) -> None:
    """Write ``stage.json``: the case hash and the sha256 of each output file it vouches for."""
    directory = Path(directory)
    sums = {name: file_digest(directory / name) for name in outputs}
    with atomic_path(directory / "stage.json") as tmp:
        tmp.write_text(json.dumps({"hash": digest, "outputs": sums, **info}, indent=2, default=str) + "\n")
