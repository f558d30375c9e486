// Is a file the image names still the file that was dumped? As CRIU 4.2's
// validate_file: it must exist; a regular file must have the size the image
// recorded, and, where the image recorded an ELF build-id (CRIU's default
// --file-validation buildid; ours too), the same build-id, if it has one
// now (a file without one is judged by its size, as CRIU); and the mode
// where recorded. Checked from the restorer by path, before anything runs,
// so a replaced executable, library or data file fails the restore with
// one line naming the process and the file.
import { statSync } from 'node:fs';
import { UserError } from '../errors.js';
import { buildIdBytes, buildIdWords, readBuildId, type FileValidation } from '../images/build-id.js';
import type { RegFileEntry } from '../images/index.js';

/** `what` names the use ("fd 3:", "mapped file", "executable"). */
export function checkRegFile(r: RegFileEntry, what: string, pid: number, validation: FileValidation = 'buildid'): void {
  let st;
  try {
    st = statSync(r.name);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    throw new UserError(`pid ${pid}: ${what} ${r.name} cannot be opened: ${code}`, { cause: e });
  }
  // A regular file replaced or truncated since the dump.
  if (r.size !== undefined && r.size !== null && st.isFile() && BigInt(st.size) !== BigInt(r.size)) {
    throw new UserError(`pid ${pid}: ${what} ${r.name} has size ${st.size}, the image recorded ${r.size}: the file changed since the dump`);
  }
  if (validation === 'buildid' && st.isFile() && r.size !== undefined && r.size !== null && r.build_id && r.build_id.length > 0) {
    let now: Buffer | undefined;
    try {
      now = readBuildId(r.name);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'error';
      throw new UserError(`pid ${pid}: ${what} ${r.name} cannot be opened: ${code}`, { cause: e });
    }
    if (now) {
      const want = buildIdBytes(r.build_id);
      const have = buildIdBytes(buildIdWords(now));
      if (!have.equals(want)) {
        throw new UserError(`pid ${pid}: ${what} ${r.name} has build-id ${hexId(now)}, the image recorded ${hexId(want)}: the file changed since the dump`);
      }
    }
  }
  if (r.mode !== undefined && r.mode !== null && r.mode !== 0 && (st.mode & 0o170777) !== (r.mode & 0o170777)) {
    throw new UserError(`pid ${pid}: ${what} ${r.name} has mode 0${st.mode.toString(8)}, the image recorded 0${r.mode.toString(8)}`);
  }
}

/** The build-id in hex (trailing zero padding of the image's words dropped). */
function hexId(b: Buffer): string {
  let end = b.length;
  while (end > 0 && b[end - 1] === 0) end--;
  return b.subarray(0, Math.max(end, 1)).toString('hex');
}
