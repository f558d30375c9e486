#!/usr/bin/env node
// The CLI. Runs the bundle (dist/plugin/bundle, scripts/bundle.sh: a few
// files instead of ~140 modules, faster start-up) when it is at least as new
// as the compiled modules (a `tsc` run after the build leaves it stale), else
// the compiled modules.
import { statSync } from 'node:fs';

const modules = new URL('../dist/plugin/cli/main.js', import.meta.url);
const bundle = new URL('../dist/plugin/bundle/main.js', import.meta.url);
let useBundle = false;
try {
  useBundle = statSync(bundle).mtimeMs >= statSync(modules).mtimeMs;
} catch { /* no bundle */ }
await import(useBundle ? bundle.href : modules.href);
