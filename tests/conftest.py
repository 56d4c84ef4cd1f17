"""Test configuration.

``@pytest.mark.parallel(nprocs=N)`` runs a test under ``mpirun -n N`` (as Firedrake's tests
do): in the ordinary serial pytest process the test is re-launched as a subprocess
``mpirun -n N python -m pytest FILE::TEST`` and passes when every rank passes. Inside the
MPI job (``HYBRID_MPI_CHILD=1``) the test body runs on every rank and ends with a barrier.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MPI_CHILD = os.environ.get("HYBRID_MPI_CHILD") == "1"


def mpirun_command(nprocs: int) -> list[str]:
    """The ``mpirun`` prefix for this machine (root-safe, oversubscribed when cores are few)."""
    cmd = ["mpirun", "-n", str(nprocs)]
    if (os.cpu_count() or 1) < nprocs:
        cmd.append("--oversubscribe")
    return cmd


def mpi_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONUNBUFFERED="1")
    env.pop("HYBRID_MPI_CHILD", None)
    return env


def pytest_runtest_call(item: pytest.Item) -> None:
    marker = item.get_closest_marker("parallel")
    if marker is None or MPI_CHILD:
        return
    nprocs = int(marker.kwargs.get("nprocs", marker.args[0] if marker.args else 2))
    env = mpi_env()
    env["HYBRID_MPI_CHILD"] = "1"
    nodeid = item.nodeid
    cmd = mpirun_command(nprocs) + [sys.executable, "-m", "pytest", "-q", "-x",
                                     "-p", "no:cacheprovider", "--rootdir", str(ROOT), nodeid]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"{nodeid} failed under mpirun -n {nprocs} (exit {proc.returncode}):\n"
                    f"{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}", pytrace=False)
    # the body ran under MPI; skip the serial call of it
    item.runtest = lambda: None  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _mpi_barrier():
    """Collective end of every test under MPI, so that ranks leave tests together."""
    yield
    if MPI_CHILD:
        from mpi4py import MPI
        MPI.COMM_WORLD.Barrier()


@pytest.fixture
def comm():
    from mpi4py import MPI
    return MPI.COMM_WORLD
