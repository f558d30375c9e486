// File locks held by the tree being dumped (CRIU's --file-locks). The
// kernel lists them in the "lock:" lines of /proc/PID/fdinfo/FD, each on the
// open file description it was taken through:
//   lock:	1: FLOCK  ADVISORY  READ 1234 fe:00:5678 0 EOF
//   lock:	1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 5 14
//   lock:	1: OFDLCK ADVISORY  WRITE -1 fe:00:5678 20 EOF
// Without --file-locks a tree holding one is refused (as CRIU). With it,
// each lock becomes a file_lock_entry in filelocks.img naming the owning
// process (as the tree sees it) and one of its fds; restore takes it again
// in that process (plugin/restore/locks.ts).
//
// Who holds what: a flock or OFD lock belongs to the open file description
// (shared by dup and fork: every fd on it shows the same lock), so it is
// written once per description, for the first fd that has it, as CRIU does.
// A POSIX lock belongs to the process (shown only on the description it
// was set through, and only in that process), so it is written once per
// process and description (CRIU would drop a child's POSIX lock taken
// through a description its parent also has: it dedups all kinds by
// description).
import { readdirSync, readFileSync } from 'node:fs';
import type { FileLockEntry, ImageDir } from '../images/index.js';
import { KIND } from '../images/index.js';

/** file_lock_entry.flag values (CRIU's FL_*). */
export const FL = { POSIX: 1, FLOCK: 2, OFD: 4, LEASE: 8 } as const;
/** file_lock_entry.type values (fcntl's). */
export const F_RDLCK = 0;
export const F_WRLCK = 1;

export interface LockLine {
  /** "FLOCK", "POSIX", "OFDLCK", "LEASE", "DELEG" ... */
  style: string;
  /** "ADVISORY", "MSNFS", "BREAKING", "ACTIVE" ... */
  mode: string;
  /** "READ", "WRITE", "UNLCK", "RW" ... */
  access: string;
  start: bigint;
  /** Last byte locked, or undefined for EOF. */
  end: bigint | undefined;
  /** "FLOCK ADVISORY WRITE": for messages. */
  text: string;
}

/** Parses the text after "lock:\t" (undefined if empty: an owner our pid namespace cannot see). */
export function parseLockLine(s: string): LockLine | undefined {
  const m = /^\s*\d+:\s+(\S+)\s+(\S+)\s+(\S+)\s+-?\d+\s+[0-9a-f]+:[0-9a-f]+:\d+\s+(\d+)\s+(\d+|EOF)\s*$/.exec(s);
  if (!m) return undefined;
  return {
    style: m[1]!, mode: m[2]!, access: m[3]!, start: BigInt(m[4]!), end: m[5] === 'EOF' ? undefined : BigInt(m[5]!),
    text: `${m[1]} ${m[2]} ${m[3]}`,
  };
}

/** The lock lines of one fdinfo text. Lines we cannot parse are returned as `bad`. */
export function lockLines(fdinfo: string): { locks: LockLine[]; bad: string[] } {
  const locks: LockLine[] = [];
  const bad: string[] = [];
  for (const line of fdinfo.split('\n')) {
    if (!line.startsWith('lock:')) continue;
    const rest = line.slice(5);
    if (rest.trim() === '') continue;
    const l = parseLockLine(rest);
    if (l) locks.push(l);
    else bad.push(rest.trim());
  }
  return { locks, bad };
}

export interface HeldLock {
  fd: number;
  /** e.g. "FLOCK ADVISORY WRITE". */
  kind: string;
}

/** Locks visible in the fdinfo of each open fd of `pid` (an fd closed meanwhile is skipped). */
export function heldLocks(pid: number): HeldLock[] {
  const out: HeldLock[] = [];
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fdinfo`);
  } catch {
    return out;
  }
  for (const name of fds) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/fdinfo/${name}`, 'utf8');
    } catch {
      continue;
    }
    const { locks, bad } = lockLines(text);
    for (const l of locks) out.push({ fd: Number(name), kind: l.text });
    for (const b of bad) out.push({ fd: Number(name), kind: b });
  }
  return out;
}

/** Why a lock cannot be dumped, or undefined if it can. */
function unsupported(l: LockLine): string | undefined {
  if (l.style === 'LEASE' || l.style === 'DELEG') return 'leases are not supported';
  if (l.style !== 'FLOCK' && l.style !== 'POSIX' && l.style !== 'OFDLCK') return 'unknown kind of lock';
  if (l.mode !== 'ADVISORY') return 'only advisory locks are supported';
  if (l.access !== 'READ' && l.access !== 'WRITE') return 'unknown lock type';
  return undefined;
}

/** Problems for the dump's refusal list (the tree frozen): one per locked fd that cannot be dumped. */
export function fileLockProblems(pid: number, allowed: boolean): string[] {
  const out: string[] = [];
  for (const l of heldLocks(pid)) {
    if (!allowed) {
      out.push(`pid ${pid}: fd ${l.fd} holds a file lock (${l.kind}); use --file-locks to dump it (as CRIU)`);
      continue;
    }
    const p = parseLockLine(`1: ${l.kind} 0 00:00:0 0 EOF`);
    const why = p ? unsupported(p) : 'unreadable lock line';
    if (why) out.push(`pid ${pid}: fd ${l.fd} holds a file lock (${l.kind}): ${why}`);
  }
  return out;
}

/** One fd of a dumped process, with its files.img id and the fdinfo read while frozen. */
export interface LockedFdFacts {
  fd: number;
  id: number;
  fdinfo: string;
}

/** Collects filelocks.img for the whole tree (pids as the tree sees them). */
export class FileLockTable {
  readonly entries: FileLockEntry[] = [];
  /** Descriptions whose flock/OFD locks are written already. */
  private readonly described = new Set<number>();
  /** "pid:id": descriptions whose POSIX locks of that process are written already. */
  private readonly describedPosix = new Set<string>();

  /** Adds the locks of one process's fds (in fd order, as in its fdinfo image). */
  add(vpid: number, fds: readonly LockedFdFacts[]): void {
    for (const f of fds) {
      const { locks } = lockLines(f.fdinfo);
      const firstOfDescription = !this.described.has(f.id);
      const posixKey = `${vpid}:${f.id}`;
      const firstPosix = !this.describedPosix.has(posixKey);
      this.described.add(f.id);
      this.describedPosix.add(posixKey);
      for (const l of locks) {
        if (unsupported(l)) continue; // refused before the dump (fileLockProblems)
        const flag = l.style === 'POSIX' ? FL.POSIX : l.style === 'FLOCK' ? FL.FLOCK : FL.OFD;
        if (flag === FL.POSIX ? !firstPosix : !firstOfDescription) continue;
        this.entries.push({
          flag, type: l.access === 'WRITE' ? F_WRLCK : F_RDLCK, pid: vpid, fd: f.fd, start: l.start,
          len: l.end === undefined ? 0n : l.end + 1n - l.start,
        });
      }
    }
  }

  async write(dir: ImageDir): Promise<void> {
    await dir.writeImage(KIND.fileLocks, undefined, this.entries);
  }
}
