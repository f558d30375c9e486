// The check that an image directory exists, with its one error text; kept
// apart from imagedir.ts so a command can make it before loading the image
// codecs (the lazy-pages daemon checks its directory before it listens).
import { stat } from 'node:fs/promises';
import { UserError } from '../errors.js';

/** Resolves if `dir` is a directory; else a UserError naming it and the errno. */
export async function checkImageDir(dir: string): Promise<void> {
  let st;
  try {
    st = await stat(dir);
  } catch (e) {
    throw new UserError(`${dir}: cannot open image directory: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
  if (!st.isDirectory()) throw new UserError(`${dir}: not a directory (ENOTDIR)`);
}
