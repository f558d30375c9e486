// Bundles the compiled CLI (dist/plugin/cli/main.js) with esbuild into one
// CommonJS script, dist/plugin/bundle/main.cjs (run by scripts/bundle.sh;
// see there and bin/lazy-restore.js for why and how it is run).
// Start-up cost is what this file is about, so two things are done here
// that esbuild's command line cannot do:
// - node built-ins that node's own bootstrap has not loaded (child_process,
//   net, tls, readline, os, fs/promises, dns/promises) are loaded on first
//   use, not when a module naming them is evaluated: commander requires
//   child_process (with net, dgram and streams) only to spawn executable
//   subcommands we never use, and many of our modules import one for a
//   rarely taken path. Each costs ~0.5-4 ms of CPU at every command's start.
//   The bundle gets, per such built-in, a stand-in object whose properties
//   (every export name of the real module, read here at build time) are
//   getters that load the real module once.
// - node built-ins reached by a dynamic import() become require() (already
//   loaded or loaded synchronously): a script run from a code cache has no
//   dynamic-import callback.
import { build } from 'esbuild';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const out = 'dist/plugin/bundle/main.cjs';
const require = createRequire(import.meta.url);

/** Built-ins loaded on first use (node:process is the global process: never a stand-in). */
const LAZY_BUILTINS = new Set(['child_process', 'net', 'tls', 'readline', 'os', 'fs/promises', 'dns/promises', 'dgram', 'worker_threads', 'crypto', 'zlib', 'http', 'https', 'stream', 'stream/promises']);

const lazyBuiltins = {
  name: 'lazy-builtins',
  setup(b) {
    b.onResolve({ filter: /^(node:)?[a-z_/]+$/ }, (args) => {
      if (args.namespace === 'lr-lazy-builtin') return { path: args.path, external: true }; // the stand-in's own require
      const name = args.path.replace(/^node:/, '');
      return LAZY_BUILTINS.has(name) ? { path: name, namespace: 'lr-lazy-builtin' } : undefined;
    });
    b.onLoad({ filter: /.*/, namespace: 'lr-lazy-builtin' }, (args) => {
      const names = Object.keys(require(`node:${args.path}`)).filter((k) => /^[A-Za-z_$][\w$]*$/.test(k));
      return {
        contents: `let m; const real = () => m ??= require(${JSON.stringify(`node:${args.path}`)});\n` +
          `module.exports = {${names.map((k) => `get ${k}() { return real().${k}; }`).join(', ')}};\n`,
        loader: 'js',
      };
    });
  },
};

await build({
  entryPoints: ['dist/plugin/cli/main.js'],
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  outfile: out,
  minifyWhitespace: true,
  minifySyntax: true,
  charset: 'ascii',
  logLevel: 'warning',
  // Paths made from import.meta.url (project root, proto/, build/) hold: the
  // bundle sits at the same depth below dist/ as the modules (dist/plugin/X/).
  define: { 'import.meta.url': '__lrImportMetaUrl' },
  // A plain path's file URL is "file://" + the path (node's pathToFileURL,
  // for paths that need escaping, costs ~0.5 ms at every start).
  banner: { js: "const __lrImportMetaUrl = /^[\\w./-]+$/.test(__filename) ? 'file://' + __filename : require('node:url').pathToFileURL(__filename).href;" },
  plugins: [lazyBuiltins],
});

let text = readFileSync(out, 'utf8');
text = text.replace(/import\("(node:[a-z_/]+)"\)/g, 'Promise.resolve(require("$1"))');
const left = text.match(/.{0,60}import\(.{0,40}/);
if (left) {
  process.stderr.write(`bundle.mjs: ${out} still has a dynamic import(): ${left[0]}\n`);
  process.exit(1);
}
// bin/lazy-restore.js reads the bundle as latin1 (cheaper than utf8): it must be ASCII.
const wide = text.match(/.{0,40}[^\x00-\x7f].{0,40}/);
if (wide) {
  process.stderr.write(`bundle.mjs: ${out} is not ASCII: ${wide[0]}\n`);
  process.exit(1);
}
writeFileSync(out, text);
