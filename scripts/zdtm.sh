#!/usr/bin/env bash
# Runs CRIU's own test suite (zdtm.py, from a CRIU source tree with its tests
# built: `make criu lib crit && make -C test/zdtm`) against lazy-restore and,
# for reference, against that tree's criu, and writes a pass table
# (test x mode, ours vs CRIU) to docs/ZDTM.md.
#
#   scripts/zdtm.sh [CRIU_SRC]            (or CRIU_SRC=/path scripts/zdtm.sh)
#
# Environment (all optional):
#   ZDTM_TESTS    test names (zdtm/static/NAME) to run; default: scripts/zdtm-tests.txt
#   ZDTM_MODES    any of: plain lazy remote-lazy pre2 (default: all four)
#   ZDTM_TOOLS    any of: ours criu (default: both)
#   ZDTM_JOBS     runs at a time (default 2; each tool has its own copy of test/)
#   ZDTM_TIMEOUT  seconds per run (default 240)
#   ZDTM_OUT      the table (default docs/ZDTM.md); ZDTM_RUN_DIR keeps logs (default: a temp dir, kept)
#   ZDTM_REUSE    an earlier run directory: every result not run now (tool, mode, test) is taken
#                 from it, and the table then covers all tests of the list that have a result
#                 (e.g. ZDTM_TOOLS=ours ZDTM_REUSE=/tmp/zdtm-run.X keeps that run's CRIU column;
#                 ZDTM_TESTS="a b" ZDTM_REUSE=... reruns a and b and keeps the rest)
#   ZDTM_TABLE_ONLY=1  run nothing: write the table from ZDTM_REUSE's results
#
# The CRIU tree is only read: its test/ directory is copied (one copy per
# tool, so the same test can run for both at once) and the other top-level
# directories are symlinked beside it. In the copies every test's .desc gets
# the flag `suid` (merged into existing flags): zdtm runs tests as an
# unprivileged uid otherwise, and root here lacks CAP_SYS_RESOURCE. Each
# zdtm.py run gets its own network namespace (loopback up), so the page
# server port zdtm always uses (12345) cannot clash with other runs.
# zdtm needs Debian's /usr/bin/python3 first on PATH.
#
# Modes, as zdtm.py options, each with `-f h` (host flavour; a test whose
# line in scripts/zdtm-tests.txt names another flavour, e.g. `shm ns`, runs
# in that one):
#   plain        (none)
#   lazy         --lazy-pages         (lazy-pages daemon + restore --lazy-pages)
#   remote-lazy  --remote-lazy-pages  (page-server --lazy-pages + lazy-pages --page-server)
#   pre2         --pre 2              (two pre-dumps, then dump --prev-images-dir ../N --track-mem)
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
src="${1:-${CRIU_SRC:-}}"
if [[ -z "$src" ]]; then
  echo "usage: $0 CRIU_SRC (a CRIU source tree with criu, lib, crit and test/zdtm built)" >&2
  exit 2
fi
src="$(cd "$src" && pwd)" || exit 2
for f in criu/criu test/zdtm.py test/zdtm/static/env00 lib/pycriu; do
  if [[ ! -e "$src/$f" ]]; then
    echo "$0: $src/$f is missing: build CRIU and its tests first (make criu lib crit && make -C test/zdtm)" >&2
    exit 2
  fi
done
if [[ ! -x "$here/bin/lazy-restore.js" || ! -d "$here/dist" ]]; then
  echo "$0: build lazy-restore first (npm run build)" >&2
  exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "$0: zdtm needs root" >&2
  exit 2
fi

read -r -a modes <<<"${ZDTM_MODES:-plain lazy remote-lazy pre2}"
read -r -a tools <<<"${ZDTM_TOOLS:-ours criu}"
if [[ -n "${ZDTM_TESTS:-}" ]]; then
  read -r -a tests <<<"$ZDTM_TESTS"
else
  mapfile -t tests < <(grep -v '^\s*\(#\|$\)' "$here/scripts/zdtm-tests.txt" | awk '{print $1}')
fi
jobs="${ZDTM_JOBS:-2}"
tmo="${ZDTM_TIMEOUT:-240}"
out="${ZDTM_OUT:-$here/docs/ZDTM.md}"
run="${ZDTM_RUN_DIR:-$(mktemp -d /tmp/zdtm-run.XXXXXX)}"
mkdir -p "$run/logs"
# The table's rows: the tests run now, or with ZDTM_REUSE every test of the list
# (and any run now that it lacks) that has a result.
table_tests=("${tests[@]}")
table_modes=("${modes[@]}")
if [[ -n "${ZDTM_REUSE:-}" ]]; then
  # Results run now overwrite these as they finish.
  cp "$ZDTM_REUSE"/logs/*.res "$ZDTM_REUSE"/logs/*.log "$run/logs/" 2>/dev/null || true
  mapfile -t table_tests < <( { grep -v '^\s*\(#\|$\)' "$here/scripts/zdtm-tests.txt" | awk '{print $1}'; printf '%s\n' "${tests[@]}"; } | awk '!seen[$0]++')
  table_modes=(plain lazy remote-lazy pre2)
fi
echo "zdtm: ${#tests[@]} tests x ${#modes[@]} modes x ${#tools[@]} tools; logs in $run" >&2

# The tree each tool runs in: test/ copied, the rest symlinked.
for tool in "${tools[@]}"; do
  [[ -n "${ZDTM_TABLE_ONLY:-}" ]] && break
  t="$run/tree-$tool"
  if [[ ! -d "$t/test" ]]; then
    mkdir -p "$t"
    for e in "$src"/*; do
      [[ "$(basename "$e")" == test ]] || ln -s "$e" "$t/$(basename "$e")"
    done
    cp -a "$src/test" "$t/test"
    rm -rf "$t/test/dump"
    # suid merged into each test's .desc (an empty or missing desc becomes {'flags': 'suid'}).
    /usr/bin/python3 - "$t/test/zdtm/static" "${tests[@]}" <<'EOF'
import os, sys
d = sys.argv[1]
for name in sys.argv[2:]:
    p = os.path.join(d, name + '.desc')
    desc = {}
    if os.path.exists(p) and os.path.getsize(p) > 0:
        with open(p) as f:
            desc = eval(f.read())
    flags = desc.get('flags', '').split()
    if 'suid' not in flags:
        flags.append('suid')
    desc['flags'] = ' '.join(flags)
    with open(p, 'w') as f:
        f.write(repr(desc) + '\n')
EOF
  fi
done
mkdir -p "$run/bin"
ln -sf "$here/bin/lazy-restore.js" "$run/bin/criu"

mode_args() {
  case "$1" in
    plain) ;;
    lazy) echo --lazy-pages ;;
    remote-lazy) echo --remote-lazy-pages ;;
    pre2) echo --pre 2 ;;
    *) echo "unknown mode $1" >&2; return 1 ;;
  esac
}

# The flavour a test runs in: the list's second column (e.g. "ns" for tests
# zdtm runs only in their own namespaces), else h.
flavor() {
  local f
  f="$(awk -v t="$1" '$1 == t { print $2 }' "$here/scripts/zdtm-tests.txt" | head -1)"
  echo "${f:-h}"
}

# One zdtm.py run: writes "tool mode test result stage seconds" to its .res file.
one() {
  local tool="$1" mode="$2" test="$3"
  local bin log res t0 rc result stage
  if [[ "$tool" == ours ]]; then bin="$run/bin/criu"; else bin="$src/criu/criu"; fi
  log="$run/logs/$tool.$mode.$test.log"
  res="$run/logs/$tool.$mode.$test.res"
  t0=$(date +%s)
  # shellcheck disable=SC2046
  (cd "$run/tree-$tool/test" && PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH timeout -k 10 "$tmo" \
    unshare -n bash -c 'ip link set lo up && exec "$@"' zdtm \
    ./zdtm.py run -t "zdtm/static/$test" -f "$(flavor "$test")" --criu-bin "$bin" $(mode_args "$mode")) >"$log" 2>&1
  rc=$?
  if grep -q "^Skipping zdtm/\|# SKIP" "$log"; then result=skip
  elif [[ $rc -eq 0 ]] && grep -q "Test zdtm/static/$test PASS" "$log"; then result=pass
  elif [[ $rc -eq 124 || $rc -eq 137 ]]; then result=timeout
  else result=fail
  fi
  stage="$(grep -o 'FAIL at .*[^ #]' "$log" | head -1 | sed 's/^FAIL at //; s/ *#*$//')"
  [[ "$result" == skip ]] && stage="$(grep -m1 -o "Skipping zdtm.*\|# SKIP.*" "$log" | head -c 80)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$mode" "$test" "$result" "${stage:--}" "$(($(date +%s) - t0))" >"$res"
  echo "zdtm: $tool $mode $test: $result${stage:+ ($stage)}" >&2
}
export -f one mode_args flavor
export run src tmo here

# Runs: mode by mode, both tools interleaved, $jobs at a time.
[[ -n "${ZDTM_TABLE_ONLY:-}" ]] && modes=()
for mode in "${modes[@]}"; do
  for test in "${tests[@]}"; do
    for tool in "${tools[@]}"; do
      printf '%s %s %s\n' "$tool" "$mode" "$test"
    done
  done
done | xargs -P "$jobs" -L 1 bash -c 'one "$@"' one

cat "$run"/logs/*.res >"$run/results.tsv" 2>/dev/null

# The table.
/usr/bin/python3 - "$run/results.tsv" "$out" "$src" "${table_modes[*]}" "${tools[*]}" "${table_tests[*]}" <<'EOF'
import sys, datetime, collections
res_path, out, src, modes, tools, tests = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5].split(), sys.argv[6].split()
r = {}
for line in open(res_path):
    tool, mode, test, result, stage, secs = line.rstrip('\n').split('\t')
    r[(tool, mode, test)] = (result, stage)
# Only tests with a result (a reused run may predate some of the list).
tests = [x for x in tests if any(k[2] == x for k in r)]
modes = [m for m in modes if any(k[1] == m for k in r)]
# Tools whose results are here (run now or reused), ours first.
tools = [t for t in ('ours', 'criu') if any(k[0] == t for k in r)]
mark = {'pass': 'pass', 'fail': 'FAIL', 'timeout': 'TIMEOUT', 'skip': 'skip'}
def cell(tool, mode, test):
    v = r.get((tool, mode, test))
    if v is None:
        return ''
    result, stage = v
    s = mark.get(result, result)
    if result in ('fail', 'timeout') and stage != '-':
        s += ' (' + stage + ')'
    return s
now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
lines = []
lines.append('# CRIU\'s zdtm static tests: lazy-restore vs CRIU 4.2')
lines.append('')
lines.append('Written by `scripts/zdtm.sh` (%s, CRIU tree %s): `zdtm.py run -t zdtm/static/NAME -f h` (or `-f ns` for the tests scripts/zdtm-tests.txt marks `ns`, which zdtm runs only in namespaces of their own) with `--criu-bin` a `criu` symlink to `bin/lazy-restore.js` ("ours") or the tree\'s own `criu/criu` ("CRIU"), each test\'s `.desc` with the `suid` flag added, one network namespace per run. Modes: plain, `--lazy-pages`, `--remote-lazy-pages`, `--pre 2`. A failure names the step zdtm reported (its "FAIL at ..."); logs are kept in the run directory the script prints.' % (now, src))
lines.append('')
lines.append('## Summary')
lines.append('')
hdr = '| mode |' + ''.join(' %s passes |' % ('ours' if t == 'ours' else 'CRIU') for t in tools)
if 'ours' in tools and 'criu' in tools:
    hdr += ' ours passes of those CRIU passes |'
lines.append(hdr)
lines.append('|' + '---|' * (hdr.count('|') - 1))
for m in modes:
    row = '| %s |' % m
    for t in tools:
        n = sum(1 for x in tests if r.get((t, m, x), ('',))[0] == 'pass')
        row += ' %d / %d |' % (n, len(tests))
    if 'ours' in tools and 'criu' in tools:
        c = [x for x in tests if r.get(('criu', m, x), ('',))[0] == 'pass']
        o = [x for x in c if r.get(('ours', m, x), ('',))[0] == 'pass']
        row += ' %d / %d |' % (len(o), len(c))
    lines.append(row)
lines.append('')
lines.append('## Per test')
lines.append('')
cols = [(m, t) for m in modes for t in tools]
lines.append('| test |' + ''.join(' %s %s |' % (m, 'ours' if t == 'ours' else 'CRIU') for m, t in cols))
lines.append('|---|' + '---|' * len(cols))
for x in tests:
    lines.append('| %s |' % x + ''.join(' %s |' % cell(t, m, x) for m, t in cols))
lines.append('')
marker = '<!-- end of the generated tables: what follows is kept when scripts/zdtm.sh rewrites this file -->'
kept = ''
try:
    old = open(out).read()
    if marker in old:
        kept = old.split(marker, 1)[1]
except FileNotFoundError:
    pass
lines.append(marker)
open(out, 'w').write('\n'.join(lines) + (kept if kept else '\n'))
print('zdtm: table written to %s' % out, file=sys.stderr)
EOF
echo "zdtm: results in $run/results.tsv" >&2
