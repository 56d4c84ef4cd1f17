#!/usr/bin/env bash
# Set up everything hybrid needs, once; later calls return at once.
#
#  1. Debian packages: DOLFINx (with PETSc, petsc4py, mpi4py, OpenMPI), h5py, gmsh, scipy,
#     meshio (Debian's: it uses Debian's h5py, which DOLFINx needs), venv.
#  2. A virtual environment .venv made from Debian's /usr/bin/python3 with
#     --system-site-packages (so it sees DOLFINx), holding hybrid itself (editable)
#     and the pip dependencies of pyproject.toml (torch==2.13.0, numpy<2, ...).
#
# On a machine that is not Debian 12/13 it says what it found and tries to go on with a
# python3 that already imports dolfinx (e.g. a conda environment); otherwise it stops.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.hybrid-setup"
want=$(cat "$root/pyproject.toml" "$root/scripts/setup.sh" | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
say() { printf 'setup: %s\n' "$*" >&2; }

python=/usr/bin/python3
debian=$(cat /etc/debian_version 2>/dev/null || echo none)
case "$debian" in
  12.*|12|13.*|13|trixie*)
    pkgs="python3-dolfinx-real python3-dolfinx python3-venv python3-h5py python3-gmsh python3-scipy python3-meshio openmpi-bin"
    missing=""
    for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
      say "Debian $debian: installing$missing (about a minute)"
      if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
        say "need root or sudo to install:$missing"; exit 1; fi
      export DEBIAN_FRONTEND=noninteractive
      $sudo apt-get update -qq
      $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
    ;;
  *)
    say "found /etc/debian_version = '$debian': not Debian 12 or 13, so no Debian packages are installed."
    say "trying a python3 on PATH that already imports dolfinx, petsc4py, mpi4py, h5py, gmsh, scipy and meshio"
    python=$(command -v python3 || true)
    if [ -z "$python" ] || ! "$python" -c "import dolfinx, petsc4py, mpi4py, h5py, gmsh, scipy, meshio" 2>/dev/null; then
      say "no such python3: install DOLFINx 0.5-0.9 with PETSc, then run this again"; exit 1
    fi
    ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv from $python (--system-site-packages)"
  "$python" -m venv --system-site-packages "$venv"
fi
say "installing hybrid and its pip dependencies into .venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root" "numpy<2"
"$venv/bin/python" -c "import dolfinx, torch, hybrid; print('setup: ready: DOLFINx', dolfinx.__version__, '| torch', torch.__version__)" >&2
echo "$want" > "$stamp"
