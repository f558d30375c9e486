#!/usr/bin/env bash
# Builds everything: the Node-API addon (node-gyp), the helper C programs
# (native/helpers -> build/bin), the TypeScript (tsc -> dist) and the CLI
# bundle (esbuild -> dist/plugin/bundle, scripts/bundle.sh).
# --no-addon skips node-gyp (npm's install step already ran it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != "--no-addon" ]]; then
  npx --no-install node-gyp rebuild --loglevel=error >/dev/null
fi
make -s -C native/helpers OUT="$PWD/build/bin"
npx --no-install tsc -p tsconfig.json
bash scripts/bundle.sh
# The parsed .proto schemas as JSON (build/proto-schema.json): every command
# loads that instead of parsing proto/ at start-up (plugin/images/codec.ts).
node --input-type=module -e "import('./dist/plugin/images/codec.js').then((m) => m.protoSchema())"
