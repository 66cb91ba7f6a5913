#!/usr/bin/env bash
# Run the whole test suite: one pytest process per test package (transforms, runtime_facts,
# reliability, dags, e2e), as production runs each Airflow task in a fresh process, so native
# threads and allocator state of one package's tests never leak into another's. With
# arguments, one process runs exactly those. -X faulthandler prints the Python tracebacks of
# every thread if a process dies of a native crash; a crash fails the run like any failure
# (docs/reliability.md, "Open"), and is never retried.
set -u
run() { .venv/bin/python -X faulthandler -m pytest "$@"; }
if [ "$#" -gt 0 ]; then
    run "$@"
    exit $?
fi
failed=()
passed_total=0 failed_total=0 skipped_total=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
count() { grep -oE "[0-9]+ $1" "$log" | tail -1 | grep -oE "[0-9]+" || echo 0; }
for package in transforms runtime_facts reliability dags e2e; do
    echo "== tests/$package"
    run "tests/$package" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    summary=$(grep -E "(passed|failed|error|no tests ran).* in [0-9.]+s" "$log" | tail -1)
    log_summary() { printf '%s\n' "$summary" > "$log"; }
    log_summary
    passed_total=$((passed_total + $(count passed)))
    failed_total=$((failed_total + $(count failed) + $(count error)))
    skipped_total=$((skipped_total + $(count skipped)))
    if [ "$status" -ne 0 ]; then
        failed+=("tests/$package (exit $status)")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "!! failed: ${failed[*]}" >&2
    [ "$failed_total" -gt 0 ] || failed_total=${#failed[@]}
fi
echo "tests: $passed_total passed, $failed_total failed, $skipped_total skipped"
[ "${#failed[@]}" -eq 0 ]
