#!/usr/bin/env bash
# Run the whole test suite. -X faulthandler prints the Python tracebacks of every thread if
# the process dies of a native crash; a crash fails the run like any test failure.
set -u
exec .venv/bin/python -X faulthandler -m pytest "$@"
