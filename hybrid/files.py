"""Writing results safely and knowing when a stage can be reused.

Every result file is written under a temporary name in the same directory and renamed
into place, so an interrupted or failed run never leaves a half-written file under its
final name. A stage records the hash of the case sections it read and the sha256 of
every output it vouches for in ``stage.json`` (written last); the stage is reused when
both still hold, and the stamps of the stages it read from (their ``stage.json``) are the ones
it read, and ``--force`` is not given: a stage redone upstream (``hybrid train --force``)
makes every stage after it stale; an output that a failed or killed later
run replaced, a corrupted one or one copied in from elsewhere makes the stage stale, while
outputs a killed run left untouched stay current.

A stage commits its outputs together (:func:`committed_together`): while it runs, each
finished file waits under ``.NAME.pending-PID``; when the stage ends well they are renamed
into place one after the other, ``stage.json`` last, and when it fails they are deleted, so
a failed stage leaves every earlier output as it was. Only a kill during those renames (a
few milliseconds) can leave some outputs replaced, and then ``stage.json``'s hashes make the
stage stale.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

from hybrid.errors import WriteError, is_write_failure

__all__ = ["atomic_path", "replace_file", "stage_is_current", "mark_stage_done", "file_digest",
           "input_stamps",
           "committed_together", "commits_together", "commit_pending"]

_frames: list[list[tuple[Path, Path]]] = []   # per stage being run (nested: a
                                              # stage runs its inputs' stages)


@contextlib.contextmanager
def committed_together() -> Iterator[None]:
    """The files this process writes through :func:`atomic_path` inside the block are renamed
    into place when the block ends without an exception, and deleted when it raises."""
    _frames.append([])
    try:
        yield
        commit_pending()
    except BaseException:   # the block failed, or a rename did: what still waits is deleted
        for pending, _ in _frames[-1]:
            with contextlib.suppress(OSError):
                pending.unlink()
        raise
    finally:
        _frames.pop()


def commits_together(stage: Callable) -> Callable:
    """A stage function whose outputs are committed together (:func:`committed_together`).

    Every rank commits its own files, then the ranks agree (``collective`` over the stage's
    ``comm`` keyword, COMM_WORLD by default) before any returns: a rank that goes on to the
    next stage finds this stage's files in place, whichever rank wrote them."""
    @functools.wraps(stage)
    def run(*args, **kwargs):
        from mpi4py import MPI

        from hybrid.parallel import collective

        with committed_together():
            result = stage(*args, **kwargs)
            with collective(kwargs.get("comm") or MPI.COMM_WORLD):
                commit_pending()
        return result
    return run


def commit_pending() -> None:
    """Rename this process's waiting files of the current stage into place now (before another
    rank reads or hashes them; call it on every rank, then agree, e.g. with ``collective``)."""
    if not _frames:
        return
    frame = _frames[-1]
    frame.sort(key=lambda item: item[1].name == "stage.json")   # stable: stage.json last
    for _, path in frame:   # what would stop a rename, found before any is done
        if path.is_dir():
            raise WriteError.failed(path, IsADirectoryError(21, "Is a directory"))
    while frame:
        pending, path = frame[0]
        replace_file(pending, path)
        frame.pop(0)


def _location(path: Path) -> Path:
    """Where ``path``'s newest bytes are: its waiting file in this stage, or itself."""
    path = Path(os.path.abspath(path))
    for frame in reversed(_frames):
        for pending, final in frame:
            if final == path:
                return pending
    return path


@contextlib.contextmanager
def atomic_path(path: Path | str, immediate: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success only
    (inside :func:`committed_together`, at the stage's end, unless ``immediate``: a training
    checkpoint must be in place at once).

    An error of the operating system while writing (full disk, quota, file-size limit, no
    permission) becomes a :class:`WriteError` naming ``path``; ``path`` keeps what it had."""
    path = Path(os.path.abspath(path))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(path)
        yield tmp
        if _frames and not immediate:   # waits for the stage's end
            pending = path.with_name(f".{path.name}.pending-{os.getpid()}")
            os.replace(tmp, pending)
            frame = _frames[-1]
            frame[:] = [(p, f) for p, f in frame if f != path] + [(pending, path)]
        else:
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
    """Delete temporary and waiting files of ``path`` left by processes that no longer run
    (kill -9)."""
    for tmp in [*path.parent.glob(f".{path.name}.tmp-*"),
                *path.parent.glob(f".{path.name}.pending-*")]:
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


def input_stamps(directories) -> list[str]:
    """The sha256 of each directory's ``stage.json`` ("" where there is none), in the order
    given: what a stage records of the stages it read from."""
    stamps = []
    for directory in directories:
        stamp = _location(Path(directory) / "stage.json")
        stamps.append(file_digest(stamp) if stamp.is_file() else "")
    return stamps


def stage_is_current(directory: Path, digest: str, required: list[str],
                     inputs: list | tuple = ()) -> bool:
    """True when ``directory/stage.json`` records ``digest``, every required file exists,
    every output the stamp vouches for still has the bytes it had when the stage finished (a
    later failed run, a corrupted or a copied-in file makes the stage stale), and the stage
    directories it read from (``inputs``) still have the stamps they had then."""
    stamp = Path(directory) / "stage.json"
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    if recorded.get("hash") != digest or not all((Path(directory) / f).exists() for f in required):
        return False
    try:
        if inputs and recorded.get("inputs") != input_stamps(inputs):
            return False
        return all(file_digest(Path(directory) / name) == sha
                   for name, sha in recorded.get("outputs", {}).items())
    except OSError:
        return False


def mark_stage_done(directory: Path, digest: str, outputs: list[str] | tuple[str, ...] = (),
                    inputs: list | tuple = (), **info) -> None:
    """Write ``stage.json``: the case hash, the sha256 of each output file it vouches for, and
    the stamps of the stage directories it read from (``inputs``: :func:`input_stamps`)."""
    directory = Path(directory)
    sums = {name: file_digest(_location(directory / name)) for name in outputs}
    record = {"hash": digest, "outputs": sums, **info}
    if inputs:
        record["inputs"] = input_stamps(inputs)
    with atomic_path(directory / "stage.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
