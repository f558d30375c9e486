#!/usr/bin/env bash
# Runs the test suite with node's test runner on the compiled tests.
# Usage: scripts/test.sh [unit|integration|FILE...]
# Test files run one after another (they start real processes with fixed
# PIDs and ptrace them); tests inside a file may run concurrently.
# Prints how many tests were skipped (and which); exits non-zero when
# integration tests were asked for and none of them ran.
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
want_integration=0
for f in "${files[@]}"; do [[ $f == *integration/* ]] && want_integration=1; done
counts=$(mktemp /tmp/lr-test-counts.XXXXXX)
trap 'rm -f "$counts"' EXIT
status=0
node --test --test-concurrency=1 --test-timeout=300000 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=./scripts/test-counts.mjs --test-reporter-destination="$counts" \
  "${files[@]}" || status=$?
read -r ip ifl isk usk < <(node -e '
  const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  for (const s of c.skipped) console.error("skipped: " + s);
  console.log(c.integration.pass, c.integration.fail, c.integration.skip, c.unit.skip);
' "$counts") || { echo "test.sh: the test runner reported no counts" >&2; exit 1; }
echo "skipped: $((isk + usk)) (integration $isk, unit $usk)"
if ((want_integration)) && ((ip + ifl == 0)); then
  echo "test.sh: integration tests were asked for but none ran ($isk skipped; they need root)" >&2
  status=1
fi
exit "$status"
