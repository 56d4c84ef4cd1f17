"""One exception type for every mistake in a user's input.

The CLI prints ``str(error)`` (one message, no traceback) and exits with code 2.
"""

from __future__ import annotations

import os
import re
import signal

__all__ = ["CaseError", "WriteError", "EXIT_BAD_INPUT", "EXIT_GRACE_SECONDS", "catch_interrupts",
           "raise_if_interrupted"]

EXIT_BAD_INPUT = 2
# how long a failed rank waits for the others before it ends the job (environment:
# HYBRID_EXIT_GRACE)
EXIT_GRACE_SECONDS = float(os.environ.get("HYBRID_EXIT_GRACE", "30"))


class CaseError(Exception):
    """A mistake in a case directory or in a command line.

    The message names the file, the section and key (``time.dt``, ``boundary.left.type``),
    what was found and what is allowed: ``case.toml: time.dt: 0.5 is larger than t_end = 0.1``.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        where = (f"{file}: " if file else "") + (f"{key}: " if key else "")
        super().__init__(where + message)


class WriteError(CaseError):
    """A result file could not be written (full disk, quota, file-size limit, no permission).

    Raised by :func:`hybrid.files.atomic_path` in place of the OSError (:meth:`failed`); the
    final name still holds what it held before. The CLI prints the message and exits with
    code 2 on every rank.
    """

    @classmethod
    def failed(cls, path, error: BaseException) -> "WriteError":
        """The error for ``path`` whose write failed with ``error`` (an OSError, or HDF5's or
        torch's RuntimeError)."""
        return cls(f"cannot be written: {describe_write_error(error)}; whatever was under this "
                   "name before is unchanged (free space or choose another [output] dir, then run "
                   "again)",
                   file=str(path))


def describe_write_error(error: BaseException) -> str:
    """'No space left on device (errno 28)' from an OSError, or from HDF5's or torch's long
    messages that carry the errno in their text."""
    number = getattr(error, "errno", None)
    if not isinstance(number, int):
        found = re.search(r"errno = (\d+)", str(error))
        number = int(found.group(1)) if found else None
    if isinstance(number, int) and number > 0:
        return f"{os.strerror(number)} (errno {number})"
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def is_write_failure(error: BaseException) -> bool:
    """An error of the operating system while writing (h5py and torch report some as
    RuntimeError)."""
    return isinstance(error, OSError) or (isinstance(error, RuntimeError)
                                          and "write failed" in str(error))


_interrupted = False


def _on_interrupt(signum, frame):
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def catch_interrupts() -> None:
    """Remember Ctrl-C as well as raising it: an interrupt that lands inside a PETSc callback
    (Newton's residual) comes back as a failed solve, which the solver would otherwise retry.
    SIGTERM is taken the same way: it is what ``mpirun`` sends every rank when it gets Ctrl-C."""
    signal.signal(signal.SIGINT, _on_interrupt)
    signal.signal(signal.SIGTERM, _on_interrupt)


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C or SIGTERM came since :func:`catch_interrupts`
    (called after a PETSc solve, whose callbacks swallow it)."""
    if _interrupted:
        raise KeyboardInterrupt
