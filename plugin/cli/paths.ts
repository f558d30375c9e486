import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Project root, from dist/plugin/cli/paths.js. */
export const projectRoot: string = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
