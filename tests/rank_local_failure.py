"""``mpirun -n 2 python rank_local_failure.py ARGS...``: the ``hybrid`` command with a mistake
found on rank 1 alone, at the start of training (no stage raises one there today: this stands
for any that a future stage might)."""

import sys

from mpi4py import MPI

import hybrid.stages.train as train
from hybrid.errors import CaseError

original = train.training_set


def failing(case, *args, **kwargs):
    if MPI.COMM_WORLD.rank == 1:
        raise CaseError("a mistake only rank 1 sees", file=str(case.display_file),
                        key="surrogate.grid")
    return original(case, *args, **kwargs)


train.training_set = failing

from hybrid.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
