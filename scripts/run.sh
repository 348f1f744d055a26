#!/usr/bin/env bash
# The main job: sets everything up, then runs kiln's pipeline end to end on embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
kiln train "$@"
