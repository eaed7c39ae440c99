#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every check: ruff, mypy, the import layers
# (lint-imports, contracts in pyproject.toml), the whole pytest suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k probe).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== ruff" >&2
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy" >&2
.venv/bin/mypy
echo "== lint-imports" >&2
.venv/bin/lint-imports --no-cache
echo "== pytest" >&2
.venv/bin/python -m pytest "$@"
