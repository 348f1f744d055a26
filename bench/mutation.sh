#!/usr/bin/env bash
# Mutation testing of the Kubernetes target (flows/rollout/kubernetes.py: the wait, apply,
# candidate smoke test and restore) against the emulated suite. Too slow for
# scripts/test.sh: run it by hand after changing the target or the emulator.
#
#   bench/mutation.sh            # prints mutmut's summary and every surviving mutant
#
# It works in a scratch copy of the repository (mutmut writes a mutants/ tree next to
# the code), with mutmut from PyPI installed into the active virtualenv if missing.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/kiln-mutation-XXXXXX)"
trap 'rm -rf "$work"' EXIT

python3 -c "import mutmut" 2>/dev/null || python3 -m pip install -q "mutmut==3.8.1"
git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | (cd "$repo" && xargs -0 cp --parents -t "$work")
cd "$work"
cat > setup.cfg <<'CFG'
[mutmut]
source_paths=flows/
only_mutate=flows/rollout/kubernetes.py
also_copy=k8s/
    tests/
pytest_add_cli_args=-p no:cacheprovider -q -x -m "not slow and not e2e and not cluster"
pytest_add_cli_args_test_selection=tests/k8s/test_rollout_emulated.py
    tests/k8s/test_emulator.py
    tests/flows/test_rollout.py
CFG
start=$(date +%s)
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" || true
echo "mutation run took $(( $(date +%s) - start )) s"
mutmut results --all true | tee "$work/results.txt" | awk '{print $NF}' | sort | uniq -c
echo "survivors:"
grep -E "survived|no tests" "$work/results.txt" || echo "  none"
for mutant in $(grep -E "survived" "$work/results.txt" | awk -F: '{print $1}'); do
    mutmut show "$mutant"
done
