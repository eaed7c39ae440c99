#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on this machine: what the host
# is, proof that it runs guests, and the whole nested procedure in a lab VM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
nv=.venv/bin/nestvirt
run() { printf '\n$ nestvirt %s\n' "$*"; "$nv" "$@" || true; }
run status --host-only
run probe
run lab
