#!/usr/bin/env bash
# Bundles the compiled CLI (dist/plugin/cli/main.js) with esbuild into one
# CommonJS script, dist/plugin/bundle/main.cjs, instead of ~140 ES modules
# that node resolves and compiles one by one at every command's start-up
# (scripts/bundle.mjs does it: esbuild's API, for what its command line
# cannot do).
# bin/lazy-restore.js runs it with a V8 code cache (compiled functions kept
# between runs; node 20 has no module compile cache) when it is at least as
# new as the compiled modules, else the modules themselves.
# CommonJS, not an ES module, because only a script can take a code cache
# (vm.Script); modules reached by a dynamic import() are still evaluated
# only when imported (esbuild wraps them). The bundle sits at the same depth
# below dist/ as the modules (dist/plugin/X/), so paths made from
# import.meta.url (project root, proto/, build/) hold: import.meta.url is
# the bundle's own file URL (--define + banner).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist/plugin/bundle
node scripts/bundle.mjs
