#!/usr/bin/env bash
# Bundles the compiled CLI (dist/plugin/cli/main.js) with esbuild into
# dist/plugin/bundle: the entry plus shared chunks (code splitting keeps the
# per-command modules loaded on demand), instead of ~140 ES modules that node
# resolves and compiles one by one at every command's start-up.
# bin/lazy-restore.js runs the bundle when it is at least as new as the
# compiled modules, else the modules themselves.
# The chunks sit at the same depth below dist/ as the modules (dist/plugin/X/),
# so paths made from import.meta.url (project root, proto/, build/) hold.
# CommonJS dependencies (protobufjs) require node's built-ins (`buffer`...),
# which an ES module bundle can only do through a real `require`: the banner
# makes one (createRequire).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist/plugin/bundle
npx --no-install esbuild dist/plugin/cli/main.js --bundle --splitting --format=esm --platform=node --target=node20 \
  --outdir=dist/plugin/bundle --entry-names='[name]' --chunk-names='c-[hash]' \
  --minify-whitespace --minify-syntax --log-level=warning \
  --banner:js="import { createRequire as __lrCreateRequire } from 'node:module'; const require = __lrCreateRequire(import.meta.url);"
