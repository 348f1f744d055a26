#!/usr/bin/env bash
# The test command: sets everything up, then runs the whole suite (unit and end-to-end).
# Pass pytest arguments to narrow it, e.g. scripts/test.sh -m "not e2e".
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
ruff check flows serving tests bench

# The local registry and container engine for the e2e tests. Services this run started are
# stopped on exit (set KILN_KEEP_INFRA=1 to keep them); ones that were already up stay up.
# Tests never rely on leftovers: each uses its own repositories, ports and containers.
if [[ "${KILN_KEEP_INFRA:-0}" != 1 ]] && ! scripts/infra.sh status >/dev/null 2>&1; then
    trap 'scripts/infra.sh down' EXIT
fi
infra_env="$(scripts/infra.sh up)"  # an assignment, so a failure stops the script
eval "$infra_env"

python3 -m pytest "$@"
