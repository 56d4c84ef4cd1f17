#!/usr/bin/env bash
# ParaView for the test suite (tests/test_export.py and tests/test_navier_stokes.py open the
# exported series with ParaView's own reader under pvbatch, and render a screenshot).
# Debian 12: paraview python3-paraview xvfb xauth, 73 MB to download, 540 MB installed,
# about 30 s to install (measured on a 2-core machine with the Debian mirror at hand).
# Returns at once when pvbatch and xvfb-run are already there; on a machine that is not
# Debian, or without root or sudo, it says so and the ParaView tests skip.
set -euo pipefail
if command -v pvbatch >/dev/null && command -v xvfb-run >/dev/null; then
  exit 0
fi
say() { printf 'setup-paraview: %s\n' "$*" >&2; }
if ! command -v apt-get >/dev/null; then
  say "no apt-get: install ParaView (pvbatch) and xvfb-run yourself; the ParaView tests skip until then"
  exit 0
fi
if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
  say "need root or sudo to install ParaView; the ParaView tests skip until then"; exit 0; fi
say "installing paraview python3-paraview xvfb xauth (73 MB download, about 30 s)"
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends paraview python3-paraview xvfb xauth >/dev/null
say "ParaView installed in $(( $(date +%s) - start )) s"
