#!/usr/bin/env bash
# Runs the test suite with node's test runner on the compiled tests.
# Usage: scripts/test.sh [unit|integration|FILE...]
# Test files run one after another (they start real processes with fixed
# PIDs and ptrace them); tests inside a file may run concurrently.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob globstar
case "${1:-all}" in
  unit) files=(dist/test/unit/**/*.test.js) ;;
  integration) files=(dist/test/integration/**/*.test.js) ;;
  all) files=(dist/test/unit/**/*.test.js dist/test/integration/**/*.test.js) ;;
  *) files=("$@") ;;
esac
if ((${#files[@]} == 0)); then echo "no test files found" >&2; exit 1; fi
exec node --test --test-concurrency=1 --test-timeout=300000 --test-reporter=spec "${files[@]}"
