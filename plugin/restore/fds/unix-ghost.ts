// Ghost unix sockets, as CRIU 4.2 restores them (its bind_on_deleted): a
// socket whose path name was unlinked at dump time (unix_sk_entry.deleted),
// maybe with directories of that path removed too. Before the bind the
// missing directories are created (mode 0755) and a file now at the path
// (another socket bound to the same name since) is renamed aside to
// <path>.criu-sk-ghost; right after the bind the bound
// file is kept open by the restorer (O_PATH), so sockets connecting to the
// name later (datagram clients of a ghost server) connect through
// /proc/<restorer>/fd/<n> once the name is gone; after the bind (and the
// queue) the name is unlinked again, the file renamed aside is put back and
// the directories made for it are removed, deepest first. The kept files are closed when every
// description exists.
import { closeSync, openSync } from 'node:fs';
import { UserError } from '../../errors.js';
import type { UnixSkEntry } from '../../images/index.js';
import { InjectedSyscallError, NR, type RemoteTask } from '../task.js';

const AT_FDCWD = -100;
const AT_REMOVEDIR = 0x200;
const O_PATH = 0o10000000;
const O_CLOEXEC = 0o2000000;
const EEXIST = 17;
const ENOENT = 2;
/** CRIU's name for a file parked while a ghost socket binds its path (UNIX_GHOST_FMT). */
const PARKED = (path: string): string => `${path}.criu-sk-ghost`;

export class UnixGhosts {
  /** Socket inode → the restorer's O_PATH fd of its bound (now unlinked) file. */
  private readonly kept = new Map<number, number>();
  /** Socket inode → directories made for its name, shallowest first. */
  private readonly made = new Map<number, string[]>();
  /** Socket inode → the path whose file was renamed aside for its bind. */
  private readonly parked = new Map<number, string>();

  /** putPath(task, s, slot): `s` in the task's scratch memory (slots 0 and 1 are distinct). */
  constructor(private readonly putPath: (task: RemoteTask, s: string, slot?: 0 | 1) => bigint) {}

  /** Before the bind of a deleted path name: creates the directories of its path that are missing. */
  prepare(task: RemoteTask, e: UnixSkEntry, path: string, what: string): void {
    const parts = path.split('/');
    parts.pop();
    const made: string[] = [];
    let prefix = path.startsWith('/') ? '' : '.';
    for (const p of parts) {
      if (!p) continue;
      prefix = prefix === '.' ? p : `${prefix}/${p}`;
      const r = task.raw(NR.mkdirat, AT_FDCWD, this.putPath(task, prefix), 0o755);
      if (r === 0n) made.push(prefix);
      else if (r !== BigInt(-EEXIST)) {
        throw new UserError(`${what}: cannot create directory ${prefix} for the unlinked socket name ${path}: ${new InjectedSyscallError(task.pid, 'mkdir', Number(-r)).code}`);
      }
    }
    if (made.length) this.made.set(e.ino, made);
    const r = task.raw(NR.renameat, AT_FDCWD, this.putPath(task, path, 0), AT_FDCWD, this.putPath(task, PARKED(path), 1));
    if (r === 0n) this.parked.set(e.ino, path);
    else if (r !== BigInt(-ENOENT)) {
      throw new UserError(`${what}: cannot rename ${path} aside to bind the unlinked socket name: ${new InjectedSyscallError(task.pid, 'rename', Number(-r)).code}`);
    }
  }

  /** After the bind: keeps the bound file so peers can still reach it once unlinked. */
  keep(task: RemoteTask, e: UnixSkEntry, path: string, what: string): void {
    const at = path.startsWith('/') ? `/proc/${task.pid}/root${path}` : `/proc/${task.pid}/cwd/${path}`;
    try {
      this.kept.set(e.ino, openSync(at, O_PATH | O_CLOEXEC));
    } catch (err) {
      throw new UserError(`${what}: cannot keep the bound file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
    }
  }

  /** After the name is unlinked again: removes the directories made for it. */
  cleanup(task: RemoteTask, e: UnixSkEntry, what: string): void {
    const path = this.parked.get(e.ino);
    if (path !== undefined) {
      this.parked.delete(e.ino);
      const r = task.raw(NR.renameat, AT_FDCWD, this.putPath(task, PARKED(path), 0), AT_FDCWD, this.putPath(task, path, 1));
      if (r < 0n) throw new UserError(`${what}: cannot put ${path} back from ${PARKED(path)}: ${new InjectedSyscallError(task.pid, 'rename', Number(-r)).code}`);
    }
    const made = this.made.get(e.ino);
    if (!made) return;
    this.made.delete(e.ino);
    for (const d of [...made].reverse()) {
      const r = task.raw(NR.unlinkat, AT_FDCWD, this.putPath(task, d), AT_REMOVEDIR);
      if (r < 0n) throw new UserError(`${what}: cannot remove directory ${d} made for the unlinked socket name: ${new InjectedSyscallError(task.pid, 'rmdir', Number(-r)).code}`);
    }
  }

  /** What a socket connecting to `peer` uses instead of its unlinked name (undefined: the name). */
  connectPath(peer: UnixSkEntry): string | undefined {
    const fd = this.kept.get(peer.ino);
    return fd === undefined ? undefined : `/proc/${process.pid}/fd/${fd}`;
  }

  close(): void {
    for (const fd of this.kept.values()) closeSync(fd);
    this.kept.clear();
    this.made.clear();
    this.parked.clear();
  }
}
