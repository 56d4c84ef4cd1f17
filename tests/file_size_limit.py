"""``python file_size_limit.py BYTES ARGS...``: the ``hybrid`` command with a file-size limit
set after MPI has started (before, Open MPI's own files would fail), so that the command's
first large write fails with EFBIG, as it would with ENOSPC on a full disk. Python ignores
SIGXFSZ, so the write returns the error instead of killing the process."""

import resource
import sys

from mpi4py import MPI  # noqa: F401 - MPI starts here, with no limit

resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))

from hybrid.cli import main  # noqa: E402

sys.exit(main(sys.argv[2:]))
