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
for package in transforms runtime_facts reliability dags e2e; do
    echo "== tests/$package"
    run "tests/$package"
    status=$?
    if [ "$status" -ne 0 ]; then
        failed+=("tests/$package (exit $status)")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "!! failed: ${failed[*]}" >&2
    exit 1
fi
echo "all test packages passed"
