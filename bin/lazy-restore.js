#!/usr/bin/env node
// The CLI. A CommonJS script (bin/package.json): an ES module entry costs
// node its ESM loader (several ms of CPU) before anything of ours runs.
// Runs the bundle (dist/plugin/bundle/main.cjs, scripts/bundle.sh: one
// script instead of ~140 ES modules) when it is at least as new as the
// compiled modules (a `tsc` run after the build leaves it stale), else the
// compiled modules (always with LR_CLI_NO_BUNDLE=1: real file names in stack
// traces). The bundle is compiled with a V8 code cache, one per
// command name (dist/plugin/bundle/cache/NAME.v8): a command's first
// successful run writes it at exit (or rewrites it when V8 rejects it:
// another bundle or node), later runs skip compiling what that run compiled
// (~20 ms CPU of every command). A failed run writes none: it stopped early
// and its cache would leave the rest of the command to compile every time.
// A cache that cannot be written (read-only install) only costs that time.
'use strict';
const { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } = require('node:fs');
const { dirname, join } = require('node:path');

const dist = join(__dirname, '..', 'dist', 'plugin');
const modules = join(dist, 'cli', 'main.js');
const bundle = join(dist, 'bundle', 'main.cjs');
let useBundle = false;
try {
  useBundle = process.env.LR_CLI_NO_BUNDLE !== '1' && statSync(bundle).mtimeMs >= statSync(modules).mtimeMs;
} catch { /* no bundle */ }

/** The CLI's commands (each gets its own code cache; anything else shares one). */
const COMMANDS = new Set(['show', 'inspect', 'encode', 'dump', 'pre-dump', 'restore', 'lazy-pages', 'page-server', 'migrate',
  'migrate-receive', 'check', 'stats', 'swrk', 'service', 'help']);

if (useBundle) {
  const { Script } = require('node:vm');
  const name = process.argv.slice(2).find((a) => COMMANDS.has(a)) ?? 'other';
  const cacheDir = join(dirname(bundle), 'cache');
  const cacheFile = join(cacheDir, `${name}.v8`);
  let cachedData;
  try {
    cachedData = readFileSync(cacheFile);
  } catch { /* first run of this command */ }
  // Read as latin1: the bundle is ASCII (esbuild escapes the rest; scripts/bundle.mjs
  // checks), and latin1 is a plain copy where utf8 is decoded (~1 ms for 0.7 MB).
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${readFileSync(bundle, 'latin1')}\n})`, { filename: bundle, cachedData });
  // Which start-up path ran (LR_PHASES=1 prints it: plugin/phases.ts).
  globalThis.__lrStartup = cachedData === undefined ? 'bundle, no code cache yet' : script.cachedDataRejected ? 'bundle, code cache rejected' : 'bundle, code cache';
  if (cachedData === undefined || script.cachedDataRejected) {
    process.once('exit', (code) => {
      if (code !== 0) return;
      try {
        mkdirSync(cacheDir, { recursive: true });
        const tmp = `${cacheFile}.${process.pid}.tmp`;
        writeFileSync(tmp, script.createCachedData());
        renameSync(tmp, cacheFile);
      } catch { /* read-only: no cache */ }
    });
  }
  const module = { exports: {} };
  script.runInThisContext()(module.exports, require('node:module').createRequire(bundle), module, bundle, dirname(bundle));
} else {
  globalThis.__lrStartup = 'modules';
  import(require('node:url').pathToFileURL(modules).href);
}
