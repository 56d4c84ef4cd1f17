#!/usr/bin/env bash
# The test suite: set up if needed, then pytest (serial tests, and MPI tests re-launched
# under mpirun by tests/conftest.py). Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$root/scripts/setup.sh"
"$root/scripts/setup-paraview.sh"
cd "$root"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1
exec "$root/.venv/bin/python" -m pytest -q -ra "$@"
