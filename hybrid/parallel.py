"""MPI helpers: who does which scenario, and one progress bar for all ranks on rank 0."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator

from mpi4py import MPI

from hybrid.errors import EXIT_GRACE_SECONDS, CaseError

__all__ = ["my_indices", "ScenarioProgress", "root_print", "collective"]

_PROGRESS_TAG = 7301


def root_print(*args, comm: MPI.Comm = MPI.COMM_WORLD, **kwargs) -> None:
    """``print`` on rank 0 of ``comm`` only, flushed."""
    if comm.rank == 0:
        print(*args, **kwargs, flush=True)


@contextlib.contextmanager
def collective(comm: MPI.Comm) -> Iterator[None]:
    """Every rank runs the block (often ``if comm.rank == 0:`` and a write inside), then the
    ranks agree on its outcome, so that no rank waits forever for one that failed: a
    :class:`CaseError` (a :class:`~hybrid.errors.WriteError` too) raised on any rank is raised on
    every rank, the lowest rank's first; any other failure is raised where it happened and
    becomes a RuntimeError elsewhere. The block must hold no collective call of its own that
    only some ranks reach. It ends with what amounts to a barrier. Should the block hold one
    after all (a distributed solve that one rank left with an error), the failed rank waits
    EXIT_GRACE_SECONDS for the others and then raises its error, so that the CLI ends the job
    instead of every rank waiting forever."""
    if comm.size == 1:
        yield
        return
    outcome, failure = None, None
    _arrival_comm(comm)
    try:
        yield
    except KeyboardInterrupt:   # every rank gets the signal (mpirun sends SIGTERM to each)
        raise
    except CaseError as error:   # travels as itself (its message; a WriteError stays one)
        outcome, failure = ("case", error), error
    except Exception as error:
        outcome, failure = ("bug", f"{type(error).__name__}: {error}"), error
    arrived = _arrival_comm(comm).Ibarrier()   # not on comm: a rank may still be
                                               # in one of its collective calls
    if failure is None:
        arrived.Wait()
    else:
        deadline = time.monotonic() + EXIT_GRACE_SECONDS
        while not arrived.Test():
            if time.monotonic() > deadline:   # the others are inside a collective call of the block
                raise failure
            time.sleep(0.01)
    outcomes = comm.allgather(outcome)
    if failure is not None:
        raise failure
    for rank, found in enumerate(outcomes):
        if found is not None:
            if found[0] == "case":
                raise found[1]
            raise RuntimeError(f"rank {rank} failed: {found[1]}")


_ARRIVALS: dict = {}


def _arrival_comm(comm: MPI.Comm) -> MPI.Comm:
    """A duplicate of ``comm`` kept for :func:`collective`'s arrival check (made on the first
    block over ``comm``, which every rank enters)."""
    key = MPI._handleof(comm)
    if key not in _ARRIVALS:
        _ARRIVALS[key] = comm.Dup()
    return _ARRIVALS[key]


def my_indices(n: int, comm: MPI.Comm) -> list[int]:
    """Round-robin share of ``n`` independent tasks (scenario j on rank j mod P)."""
    return list(range(comm.rank, n, comm.size))


class ScenarioProgress:
    """A progress bar on rank 0 that counts tasks finished on every rank.

    Other ranks send a small message per finished task; rank 0 reads them whenever it
    updates, so the bar is right without any collective call in the work loop.
    """

    def __init__(self, comm: MPI.Comm, total: int, desc: str, enabled: bool = True,
                 unit: str = "scenario"):
        self.comm, self.total = comm, total
        self.count = 0
        self.bar = None
        self._requests = []
        if comm.rank == 0 and enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                            dynamic_ncols=True, disable=None)

    def __enter__(self) -> "ScenarioProgress":
        return self

    def __exit__(self, kind, error, trace) -> None:
        """Closed collectively after the work succeeded, discarded after it failed (pair it with
        :func:`collective` inside, so that every rank knows when one failed)."""
        if kind is None:
            self.close()
        else:
            self.discard()

    def postfix(self, **values) -> None:
        """Show values (rank 0's own work) next to the bar."""
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def done(self, n: int = 1) -> None:
        """Count ``n`` more tasks finished on this rank (rank 0: the bar moves now; another
        rank: a message that rank 0 reads at its next update)."""
        if n <= 0:
            return
        if self.comm.rank == 0:
            self._advance(n)
            self._drain(block=False)
        else:
            self._requests.append(self.comm.isend(n, dest=0, tag=_PROGRESS_TAG))

    def _advance(self, n: int) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)

    def _drain(self, block: bool) -> None:
        status = MPI.Status()
        while self.count < self.total:
            if not block and not self.comm.iprobe(source=MPI.ANY_SOURCE, tag=_PROGRESS_TAG,
                                                  status=status):
                return
            self._advance(self.comm.recv(source=MPI.ANY_SOURCE, tag=_PROGRESS_TAG))

    def discard(self) -> None:
        """Close the bar without waiting for other ranks (when the work failed somewhere)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        """Collective: rank 0 waits for every rank's count, then closes the bar."""
        if self.comm.rank == 0:
            self._drain(block=True)
            if self.bar is not None:
                self.bar.close()
        else:
            MPI.Request.waitall(self._requests)
        self.comm.Barrier()
