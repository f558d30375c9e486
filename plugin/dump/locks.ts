// File locks held by a process about to be dumped. CRIU refuses a tree that
// holds file locks unless --file-locks allows it, and then dumps them to
// file-lock images. We do not restore file locks: a dump that would lose them
// is refused either way, with a message that says which (the locks are read
// from the "lock:" lines of /proc/PID/fdinfo/FD).
import { readdirSync, readFileSync } from 'node:fs';

export interface HeldLock {
  fd: number;
  /** e.g. "FLOCK ADVISORY WRITE", "POSIX ADVISORY READ", "OFDLCK ADVISORY WRITE". */
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
    for (const line of text.split('\n')) {
      // "lock:\t1: FLOCK  ADVISORY  WRITE 1234 00:2e:5678 0 EOF"
      const m = /^lock:\s+\d+:\s+(\S+)\s+(\S+)\s+(\S+)/.exec(line);
      if (m) out.push({ fd: Number(name), kind: `${m[1]} ${m[2]} ${m[3]}` });
    }
  }
  return out;
}

/** Problems for the dump's refusal list: one per locked fd. */
export function fileLockProblems(pid: number, allowed: boolean): string[] {
  return heldLocks(pid).map((l) => allowed
    ? `pid ${pid}: fd ${l.fd} holds a file lock (${l.kind}): --file-locks is accepted but file locks are not restored by lazy-restore`
    : `pid ${pid}: fd ${l.fd} holds a file lock (${l.kind}); CRIU dumps those only with --file-locks, which lazy-restore does not restore either`);
}
