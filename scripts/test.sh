#!/usr/bin/env bash
# The test command: sets everything up, then runs the whole suite: the fast tests on
# KILN_TEST_WORKERS processes (2; each test is independent), then the end-to-end tests one
# at a time (some stop and start the shared registry). Pass pytest arguments to run
# exactly those instead, e.g. scripts/test.sh -m "not e2e" -n 2.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
ruff check kiln flows serving tests bench docs/hooks
ruff format --check kiln flows serving tests bench docs/hooks
mypy kiln flows serving
lint-imports
# The docs site, with its generated settings and CLI references: a broken link, a setting
# without a description or a command without help fails here.
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet

# The local registry and container engine for the e2e tests. On exit, stop exactly the
# services this run started (never ones that were already up, which others may be using);
# KILN_KEEP_INFRA=1 keeps them. Tests never rely on leftovers: each uses its own
# repositories, ports and containers.
started="$(mktemp)"
stop_started() {
    if [[ "${KILN_KEEP_INFRA:-0}" != 1 && -s "$started" ]]; then
        # shellcheck disable=SC2046
        scripts/infra.sh down $(sort -u "$started")
    fi
    rm -f "$started"
}
trap stop_started EXIT
infra_env="$(KILN_INFRA_STARTED="$started" scripts/infra.sh up)"  # assignment: failure stops
eval "$infra_env"

if (($#)); then
    python3 -m pytest "$@"
    exit
fi
status=0
python3 -m pytest -m "not e2e" -n "${KILN_TEST_WORKERS:-2}" || status=$?
python3 -m pytest -m e2e || status=$?
exit "$status"
