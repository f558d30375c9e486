#!/usr/bin/env bash
# Bundles the compiled CLI (dist/plugin/cli/main.js) with esbuild into one
# CommonJS script, dist/plugin/bundle/main.cjs, instead of ~140 ES modules
# that node resolves and compiles one by one at every command's start-up.
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
npx --no-install esbuild dist/plugin/cli/main.js --bundle --format=cjs --platform=node --target=node20 \
  --outfile=dist/plugin/bundle/main.cjs --minify-whitespace --minify-syntax --log-level=warning \
  --define:import.meta.url=__lrImportMetaUrl \
  --banner:js="const __lrImportMetaUrl = require('node:url').pathToFileURL(__filename).href;"
# esbuild keeps import() of node's built-ins; a script run from a code cache
# has no dynamic-import callback, so they become require() (already loaded, synchronous).
sed -i -E 's/import\("(node:[a-z_/]+)"\)/Promise.resolve(require("\1"))/g' dist/plugin/bundle/main.cjs
if grep -q 'import(' dist/plugin/bundle/main.cjs; then
  echo "bundle.sh: dist/plugin/bundle/main.cjs still has a dynamic import():" >&2
  grep -o '.\{60\}import(.\{40\}' dist/plugin/bundle/main.cjs >&2
  exit 1
fi
