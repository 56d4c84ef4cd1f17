"""MPI helpers: who does which scenario, and one progress bar for all ranks on rank 0."""

from __future__ import annotations

import sys

from mpi4py import MPI

__all__ = ["my_indices", "ScenarioProgress", "is_root", "root_print"]

_PROGRESS_TAG = 7301


def is_root(comm: MPI.Comm = MPI.COMM_WORLD) -> bool:
    return comm.rank == 0


def root_print(*args, comm: MPI.Comm = MPI.COMM_WORLD, **kwargs) -> None:
    if comm.rank == 0:
        print(*args, **kwargs, flush=True)


def my_indices(n: int, comm: MPI.Comm) -> list[int]:
    """Round-robin share of ``n`` independent tasks (scenario j on rank j mod P)."""
    return list(range(comm.rank, n, comm.size))


class ScenarioProgress:
    """A progress bar on rank 0 that counts tasks finished on every rank.

    Other ranks send a small message per finished task; rank 0 reads them whenever it
    updates, so the bar is right without any collective call in the work loop.
    """

    def __init__(self, comm: MPI.Comm, total: int, desc: str, enabled: bool = True, unit: str = "scenario"):
        self.comm, self.total = comm, total
        self.count = 0
        self.bar = None
        self._requests = []
        if comm.rank == 0 and enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                            dynamic_ncols=True, disable=None)

    def postfix(self, **values) -> None:
        """Show values (rank 0's own work) next to the bar."""
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def done(self, n: int = 1) -> None:
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
            if not block and not self.comm.iprobe(source=MPI.ANY_SOURCE, tag=_PROGRESS_TAG, status=status):
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
