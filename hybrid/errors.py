"""One exception type for every mistake in a user's input.

The CLI prints ``str(error)`` (one message, no traceback) and exits with code 2.
"""

from __future__ import annotations

import signal

__all__ = ["CaseError", "EXIT_BAD_INPUT", "catch_interrupts", "raise_if_interrupted"]

EXIT_BAD_INPUT = 2


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


_interrupted = False


def _on_interrupt(signum, frame):
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def catch_interrupts() -> None:
    """Remember Ctrl-C as well as raising it: an interrupt that lands inside a PETSc callback
    (Newton's residual) comes back as a failed solve, which the solver would otherwise retry."""
    signal.signal(signal.SIGINT, _on_interrupt)


def raise_if_interrupted() -> None:
    if _interrupted:
        raise KeyboardInterrupt
