// inotify → file_entry.ify: each watch (wd, mask, inode, file handle) from
// fdinfo's "inotify wd:" lines. The handle is opened (open_by_handle_at on
// the watched file's filesystem) to find the watched path, which restore
// uses with inotify_add_watch; the path is kept in f_handle.path, as CRIU
// does for the files it can name. A watch whose file has no path left
// (deleted) is refused.
import { closeSync, openSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { FdType, type FownEntry, type InotifyFileEntry, type InotifyWdEntry } from '../../images/index.js';
import { ZERO_FOWN } from './common.js';
import type { DumpFdKind } from './types.js';
import { addon } from '../../native/addon.js';

const FH_MIN_WORDS = 16;

export interface InotifyWatch {
  wd: number;
  ino: bigint;
  sdev: number;
  mask: number;
  ignoredMask: number;
  handleType: number;
  handle: Buffer;
}

export function parseInotifyFdinfo(text: string): InotifyWatch[] {
  const out: InotifyWatch[] = [];
  const re = /^inotify wd:([0-9a-f]+) ino:([0-9a-f]+) sdev:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+)(?: fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]*))?/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    out.push({
      wd: parseInt(m[1]!, 16), ino: BigInt(`0x${m[2]}`), sdev: parseInt(m[3]!, 16), mask: parseInt(m[4]!, 16),
      ignoredMask: parseInt(m[5]!, 16), handleType: m[7] ? parseInt(m[7], 16) : 0,
      handle: Buffer.from(m[8] ?? '', 'hex'),
    });
  }
  return out;
}

/** A mount point of the filesystem with kernel dev_t `sdev` (major << 20 | minor), from mountinfo. */
function mountPointOf(pid: number, sdev: number): string | undefined {
  const want = `${sdev >>> 20}:${sdev & 0xfffff}`;
  let best: string | undefined;
  for (const line of readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[2] !== want) continue;
    const mp = f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (f[3] === '/') return mp;
    best ??= mp;
  }
  return best;
}

/** The path of a watched file, or a problem. */
function watchedPath(pid: number, w: InotifyWatch): string | { problem: string } {
  const mp = mountPointOf(pid, w.sdev);
  if (mp === undefined) return { problem: `watch ${w.wd}: no mount of device ${w.sdev.toString(16)} found` };
  const mfd = openSync(mp, 'r');
  let fd = -1;
  try {
    fd = addon.openByHandle(mfd, w.handleType, w.handle);
    const path = readlinkSync(`/proc/self/fd/${fd}`);
    if (path.endsWith(' (deleted)') || !path.startsWith('/')) return { problem: `watch ${w.wd}: the watched file has no path (${path})` };
    const st = statSync(path, { bigint: true });
    if (st.ino !== w.ino) return { problem: `watch ${w.wd}: ${path} now names another file` };
    return path;
  } catch (e) {
    return { problem: `watch ${w.wd}: cannot open the watched file by handle (${(e as { code?: string }).code ?? String(e)})` };
  } finally {
    if (fd >= 0) closeSync(fd);
    closeSync(mfd);
  }
}

function handleWords(h: Buffer): bigint[] {
  const words: bigint[] = [];
  const padded = Buffer.alloc(Math.max(FH_MIN_WORDS * 8, Math.ceil(h.length / 8) * 8));
  h.copy(padded);
  for (let i = 0; i < padded.length; i += 8) words.push(padded.readBigUInt64LE(i));
  return words;
}

export function describeInotify(pid: number, id: number, flags: number, fown: FownEntry, fdinfo: string): InotifyFileEntry | string {
  const wd: InotifyWdEntry[] = [];
  for (const w of parseInotifyFdinfo(fdinfo)) {
    const path = watchedPath(pid, w);
    if (typeof path !== 'string') return path.problem;
    wd.push({
      id, i_ino: w.ino, mask: w.mask, ignored_mask: w.ignoredMask, s_dev: w.sdev, wd: w.wd,
      f_handle: { bytes: w.handle.length, type: w.handleType, handle: handleWords(w.handle), path },
    });
  }
  return { id, flags, fown, wd };
}

export function inotifyKind(): DumpFdKind<null> {
  return {
    name: 'inotify',
    claim(f) {
      if (f.target !== 'anon_inode:inotify') return undefined;
      const e = describeInotify(f.pid, 0, f.flags, ZERO_FOWN, f.fdinfo);
      return typeof e === 'string' ? `${f.where}: ${e}` : { data: null };
    },
    describe(_ctx, id, p) {
      const e = describeInotify(p.pid, id, p.flags, p.fown, p.fdinfo);
      if (typeof e === 'string') throw new Error(`${p.where}: ${e}`);
      return { type: FdType.INOTIFY, id, ify: e };
    },
  };
}
