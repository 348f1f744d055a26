#!/usr/bin/env bash
# Mutation testing of the Kubernetes target (kiln/rollout/kubernetes/target.py: the wait, apply,
# candidate smoke test and restore) and of what decides the rollback target
# (kiln/rollout/orchestrator.py) against the emulated suite, with mutmut from PyPI.
# Too slow for scripts/test.sh (its dated figures: docs/testing.md): run it by hand after
# changing the target or the emulator.
#
#   bench/mutation.sh              # every mutant of both files
#   bench/mutation.sh wait-restore # only the wait and restore logic (the issue's goal)
#   bench/mutation.sh 'PATTERN'... # mutmut's own mutant-name patterns
#
# It prints mutmut's counts, then killed/surviving per function, then the diff of every survivor.
#
# It works in a scratch copy of the repository (mutmut writes a mutants/ tree next to
# the code). MUTMUT_CHILDREN sets the parallel workers (default 2).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/kiln-mutation-XXXXXX)"
[ -n "${KEEP_MUTANTS:-}" ] || trap 'rm -rf "$work"' EXIT
echo "work directory: $work"

python3 -c "import mutmut" 2>/dev/null || python3 -m pip install -q "mutmut==3.8.1"
git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 cp -P --parents -t "$work")
cd "$work"
# mutmut copies kiln/ without following symlinks: make the shipped resources real copies.
for link in kiln/infra/resources/*; do
    if [ -L "$link" ]; then cp -rL "$link" "$link.real" && rm "$link" && mv "$link.real" "$link"; fi
done
cat > setup.cfg <<'CFG'
[mutmut]
source_paths=kiln/
only_mutate=kiln/rollout/kubernetes/target.py
    kiln/rollout/orchestrator.py
also_copy=k8s/
    serving/
    flows/
    tests/
pytest_add_cli_args=-p
    no:cacheprovider
    -W
    ignore::pytest.PytestUnraisableExceptionWarning
    -m
    not slow and not e2e and not cluster
pytest_add_cli_args_test_selection=tests/rollout/kubernetes/test_rollout_emulated.py
    tests/rollout/kubernetes/test_emulator.py
    tests/rollout/test_orchestrator.py::test_rollout_status_follows_the_deployment_controller
    tests/rollout/test_orchestrator.py::test_rollout_status_reports_a_replica_failure_and_a_pause
    tests/rollout/test_orchestrator.py::test_rollout_status_reports_the_progress_deadline
    tests/rollout/test_orchestrator.py::test_only_transient_failures_are_retried
    tests/rollout/test_refusal.py
CFG
# The wait (rollout_status and its poll loop), the restore (the JSON patch, what the
# Deployment runs now) and what decides the rollback target, and what the orchestrator
# does with it.
k8s="kiln.rollout.kubernetes.target"
orchestrator="kiln.rollout.orchestrator"
wait_restore=(
    "$k8s.x_rollout_status__mutmut_*"
    "$k8s.x__deployed__mutmut_*"
    "$k8s.xǁKubernetesTargetǁwait_rolled_out__mutmut_*"
    "$k8s.xǁKubernetesTargetǁrestore__mutmut_*"
    "$k8s.xǁKubernetesTargetǁ_patch_template__mutmut_*"
    "$orchestrator.x_rollback_target__mutmut_*"
    "$orchestrator.x__restore__mutmut_*"
    "$orchestrator.x__record_rollback__mutmut_*"
    "$orchestrator.x__refuse_rolled_back__mutmut_*"
    "$orchestrator.x__failed_smoke_test__mutmut_*"
)
patterns=("$@")
if [ "${1:-}" = wait-restore ]; then patterns=("${wait_restore[@]}"); fi
start=$(date +%s)
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "${patterns[@]}" > run.log 2>&1 || true
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
