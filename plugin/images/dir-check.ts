// The check that an image directory exists, with its one error text; kept
// apart from imagedir.ts so a command can make it before loading the image
// codecs (the lazy-pages daemon checks its directory before it listens).
import { statSync } from 'node:fs';
import { UserError } from '../errors.js';

/** Returns if `dir` is a directory; else throws a UserError naming it and the errno. */
export function checkImageDir(dir: string): void {
  let st;
  try {
    st = statSync(dir);
  } catch (e) {
    throw new UserError(`${dir}: cannot open image directory: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
  if (!st.isDirectory()) throw new UserError(`${dir}: not a directory (ENOTDIR)`);
}
