// Regular files, directories and "mem" character devices (/dev/null,
// /dev/zero, ...): reopened by path at restore (reg_file_entry). A regular
// file deleted while open (nlink 0) is a ghost file: its contents are dumped
// (plugin/dump/ghost.ts) and the entry keeps the path it had; one still
// linked elsewhere gets a link-remap name (--link-remap, plugin/dump/link-remap.ts).
import { statSync, type BigIntStats } from 'node:fs';
import { FdType, type RegFileEntry } from '../../images/index.js';
import { buildIdWords, readBuildId } from '../../images/build-id.js';
import { O_ACCMODE, O_APPEND, O_WRONLY, ZERO_FOWN, isMemDevice } from './common.js';
import { deletedPath, ghostProblem, isLinkRemap } from '../ghost.js';
import type { DumpFdKind } from './types.js';

/**
 * reg_file_entry as CRIU writes it: size checked at restore (not for
 * appenders or directories), mode, and with `buildId` the ELF build-id of a
 * regular file whose size is recorded (CRIU's default --file-validation
 * buildid), read through `source` (default: `name`; a file there that is not
 * the inode of `st` gives none).
 */
export function regEntry(id: number, name: string, flags: number, pos: bigint, st: BigIntStats | undefined,
  validation?: { buildId: boolean; source?: string }): RegFileEntry {
  const r: RegFileEntry = { id, flags, pos, fown: ZERO_FOWN, name, build_id: [] };
  if (st) {
    const appender = (flags & O_ACCMODE) === O_WRONLY && (flags & O_APPEND) !== 0;
    if (st.isFile() && !appender) {
      r.size = st.size;
      if (validation?.buildId) r.build_id = buildIdOf(validation.source ?? name, st);
    }
    r.mode = Number(st.mode);
  }
  return r;
}

function buildIdOf(path: string, st: BigIntStats): number[] {
  if (st.size < 5n) return [];
  try {
    const id = readBuildId(path, { dev: st.dev, ino: st.ino });
    return id ? buildIdWords(id) : [];
  } catch {
    return []; // unreadable here: validated by size only, as CRIU for a file without one
  }
}

export function regKind(): DumpFdKind<{ st: BigIntStats; ghost?: string; linked?: string }> {
  return {
    name: 'regular file',
    claim(f) {
      if (!f.target.startsWith('/')) return undefined;
      const deleted = deletedPath(f.target);
      if (deleted !== undefined) {
        // Deleted but open: a ghost file (plugin/dump/ghost.ts), carried with its contents.
        if (!f.st) return `${f.where}: cannot stat (${f.statError ?? 'error'})`;
        if (!(f.st.isFile() || f.st.isDirectory() || f.st.isCharacterDevice())) return undefined;
        const problem = ghostProblem(f.where, deleted, f.st, f.ghostLimit, f.linkRemap);
        if (problem) return problem;
        // Still linked elsewhere: a link remap (plugin/dump/link-remap.ts), else a ghost with its contents.
        return { data: isLinkRemap(f.st) ? { st: f.st, linked: deleted } : { st: f.st, ghost: deleted } };
      }
      const st = f.st;
      if (!st) return `${f.where}: cannot stat (${f.statError ?? 'error'})`;
      if (!(st.isFile() || st.isDirectory() || (st.isCharacterDevice() && isMemDevice(st)))) return undefined;
      try {
        // As the process sees it (its mount namespace and root).
        const now = statSync(`/proc/${f.pid}/root${f.target}`, { bigint: true });
        if (now.ino !== st.ino || now.dev !== st.dev) return `${f.where}: the path now names a different file`;
      } catch (e) {
        return `${f.where}: file is not reachable by its path (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
      }
      return { data: { st } };
    },
    describe(ctx, id, p) {
      if (p.data.linked !== undefined) {
        ctx.linkedFile(id, p.where, `/proc/${p.pid}/fd/${p.fd}`, p.data.linked);
        return { type: FdType.REG, id, reg: regEntry(id, p.data.linked, p.flags, p.pos, p.data.st, { buildId: ctx.options.buildIds === true, source: `/proc/${p.pid}/fd/${p.fd}` }) };
      }
      if (p.data.ghost !== undefined) {
        ctx.ghostFile(id, `/proc/${p.pid}/fd/${p.fd}`, p.data.st);
        return { type: FdType.REG, id, reg: regEntry(id, p.data.ghost, p.flags, p.pos, p.data.st, { buildId: ctx.options.buildIds === true, source: `/proc/${p.pid}/fd/${p.fd}` }) };
      }
      return { type: FdType.REG, id, reg: regEntry(id, p.target, p.flags, p.pos, p.data.st, { buildId: ctx.options.buildIds === true, source: `/proc/${p.pid}/fd/${p.fd}` }) };
    },
  };
}
