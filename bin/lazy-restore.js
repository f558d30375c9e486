#!/usr/bin/env node
// The CLI. Runs the bundle (dist/plugin/bundle/main.cjs, scripts/bundle.sh:
// one script instead of ~140 ES modules) when it is at least as new as the
// compiled modules (a `tsc` run after the build leaves it stale), else the
// compiled modules. The bundle is compiled with a V8 code cache, one per
// command name (dist/plugin/bundle/cache/NAME.v8): a command's first run
// writes it at exit (or rewrites it when V8 rejects it: another bundle or
// node), later runs skip compiling what that run compiled (~20 ms CPU of
// every command). A cache that cannot be written (read-only install) only
// costs that time.
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';

const modules = new URL('../dist/plugin/cli/main.js', import.meta.url);
const bundle = fileURLToPath(new URL('../dist/plugin/bundle/main.cjs', import.meta.url));
let useBundle = false;
try {
  useBundle = statSync(bundle).mtimeMs >= statSync(modules).mtimeMs;
} catch { /* no bundle */ }

/** The CLI's commands (each gets its own code cache; anything else shares one). */
const COMMANDS = new Set(['show', 'inspect', 'encode', 'dump', 'pre-dump', 'restore', 'lazy-pages', 'page-server', 'migrate',
  'migrate-receive', 'check', 'stats', 'swrk', 'service', 'help']);

if (useBundle) {
  const name = process.argv.slice(2).find((a) => COMMANDS.has(a)) ?? 'other';
  const cacheDir = join(dirname(bundle), 'cache');
  const cacheFile = join(cacheDir, `${name}.v8`);
  let cachedData;
  try {
    cachedData = readFileSync(cacheFile);
  } catch { /* first run of this command */ }
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${readFileSync(bundle, 'utf8')}\n})`, { filename: bundle, cachedData });
  if (cachedData === undefined || script.cachedDataRejected) {
    process.once('exit', () => {
      try {
        mkdirSync(cacheDir, { recursive: true });
        const tmp = `${cacheFile}.${process.pid}.tmp`;
        writeFileSync(tmp, script.createCachedData());
        renameSync(tmp, cacheFile);
      } catch { /* read-only: no cache */ }
    });
  }
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(bundle), module, bundle, dirname(bundle));
} else {
  await import(modules.href);
}
