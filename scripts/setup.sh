#!/usr/bin/env bash
# Installs kiln and everything its pipeline and tests use on a fresh Debian/Ubuntu machine.
# Idempotent: safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
