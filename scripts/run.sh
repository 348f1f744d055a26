#!/usr/bin/env bash
# The main job: sets everything up, then runs kiln's pipeline end to end on embedded defaults.
# The registry and the container engine stay up afterwards (the deployed model is served
# from them); `scripts/infra.sh down` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
infra_env="$(scripts/infra.sh up)"  # an assignment, so a failure stops the script
eval "$infra_env"
kiln run "$@"
