// Loads the compiled Node-API addon (ESM cannot import .node files directly).
// The typed surface lives in ./types.ts; every area adds its part there.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NativeAddon } from './types.js';

const require = createRequire(import.meta.url);

/** The project root: dist/plugin/native/addon.js -> three levels up. */
export const projectRoot: string = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Directory holding helper programs built from native/helpers. */
export const helperBinDir: string = join(projectRoot, 'build', 'bin');

export function helperPath(name: string): string {
  const p = join(helperBinDir, name);
  if (!existsSync(p)) throw new Error(`helper program ${p} is missing: run npm run build`);
  return p;
}

function load(): NativeAddon {
  for (const flavour of ['Release', 'Debug']) {
    const p = join(projectRoot, 'build', flavour, 'lazy_restore.node');
    if (existsSync(p)) return require(p) as NativeAddon;
  }
  throw new Error(`native addon not built (looked in ${join(projectRoot, 'build')}): run npm run build`);
}

export const addon: NativeAddon = load();
