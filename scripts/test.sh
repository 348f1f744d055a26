#!/usr/bin/env bash
# The test command: sets everything up, then runs the whole suite (unit and end-to-end).
# Pass pytest arguments to narrow it, e.g. scripts/test.sh -m "not e2e".
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
ruff check flows serving tests bench
python3 -m pytest "$@"
