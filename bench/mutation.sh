#!/usr/bin/env bash
# Mutation testing of the Kubernetes target (flows/rollout/kubernetes.py: the wait, apply,
# candidate smoke test and restore) against the emulated suite, with mutmut from PyPI.
# Too slow for scripts/test.sh (673 mutants, about 45 minutes here): run it by hand after changing the
# target or the emulator.
#
#   bench/mutation.sh      # mutmut's counts, then killed/surviving per function,
#                          # then the diff of every survivor
#
# It works in a scratch copy of the repository (mutmut writes a mutants/ tree next to
# the code). MUTMUT_CHILDREN sets the parallel workers (default 2).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/kiln-mutation-XXXXXX)"
trap 'rm -rf "$work"' EXIT

python3 -c "import mutmut" 2>/dev/null || python3 -m pip install -q "mutmut==3.8.1"
git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 cp --parents -t "$work")
cd "$work"
cat > setup.cfg <<'CFG'
[mutmut]
source_paths=flows/
only_mutate=flows/rollout/kubernetes.py
also_copy=k8s/
    tests/
pytest_add_cli_args=-p no:cacheprovider -q -x -W ignore::pytest.PytestUnraisableExceptionWarning -m "not slow and not e2e and not cluster"
pytest_add_cli_args_test_selection=tests/k8s/test_rollout_emulated.py
    tests/k8s/test_emulator.py
    tests/flows/test_rollout.py::test_rollout_status_follows_the_deployment_controller
    tests/flows/test_rollout.py::test_rollout_status_reports_a_replica_failure_and_a_pause
    tests/flows/test_rollout.py::test_rollout_status_reports_the_progress_deadline
    tests/flows/test_rollout.py::test_only_transient_failures_are_retried
CFG
start=$(date +%s)
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" > run.log 2>&1 || true
echo "mutation run took $(( $(date +%s) - start )) s"
mutmut results --all true > results.txt
python3 - <<'PY'
import collections, re
per_function = collections.defaultdict(collections.Counter)
total = collections.Counter()
for line in open("results.txt"):
    match = re.match(r"\s*(\S+)__mutmut_\d+: (.+)$", line)
    if match:
        function = match[1].split(".")[-1].replace("xǁKubernetesTargetǁ", "KubernetesTarget.")
        per_function[function][match[2]] += 1
        total[match[2]] += 1
print("all mutants:", dict(total))
for function, counts in sorted(per_function.items()):
    print(f"  {function:40} {dict(counts)}")
PY
echo "survivors:"
grep -E ": survived" results.txt | sed 's/:.*//' | while read -r mutant; do
    mutmut show "$mutant"
done
