#!/usr/bin/env bash
# The main job: set up if needed, then `hybrid run` on a case under mpirun.
#   ./run.sh                       # cases/stefan-1d on 2 ranks
#   ./run.sh cases/pme-1d 4        # another case, 4 ranks
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$root/scripts/setup.sh"
case_dir=${1:-cases/stefan-1d}
ranks=${2:-2}
shift $(( $# > 2 ? 2 : $# )) || true
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
extra=""
[ "$(nproc)" -lt "$ranks" ] && extra="--oversubscribe"
exec mpirun -n "$ranks" $extra "$root/.venv/bin/hybrid" run "$case_dir" "$@"
