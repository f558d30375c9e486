// File locks (filelocks.img, CRIU's --file-locks): each lock is taken again
// inside the process that held it, on the fd it was held through, right
// after that process's fds are installed (CRIU: prepare_file_locks after
// prepare_fds). flock → flock(2); POSIX → fcntl(F_SETLK); OFD →
// fcntl(F_OFD_SETLK). Non-blocking, unlike CRIU (which waits with F_SETLKW
// and a blocking flock): a lock someone else holds now fails the restore
// with a clear error instead of hanging it.
// As CRIU, locks are restored only when restore is given --file-locks too;
// without it an image's locks are left out (one warning line).
import { ImageError, UserError } from '../errors.js';
import { KIND, type FileLockEntry, type ImageDir } from '../images/index.js';
import { log } from '../log.js';
import { SCR_EVENT_ARGS } from './fds/eventfd.js';
import { InjectedSyscallError, NR, type RemoteTask } from './task.js';

const FL_POSIX = 1;
const FL_FLOCK = 2;
const FL_OFD = 4;
const FL_LEASE = 8;
const F_RDLCK = 0;
const F_WRLCK = 1;
const F_SETLK = 6;
const F_OFD_SETLK = 37;
const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const SEEK_SET = 0;

function describe(e: FileLockEntry): string {
  const style = e.flag === FL_POSIX ? 'POSIX' : e.flag === FL_FLOCK ? 'FLOCK' : e.flag === FL_OFD ? 'OFD' : `flag ${e.flag}`;
  const range = e.flag === FL_FLOCK ? '' : ` bytes ${e.start}-${e.len === 0n ? 'EOF' : String(e.start + e.len - 1n)}`;
  return `${style} ${e.type === F_WRLCK ? 'WRITE' : 'READ'}${range}`;
}

export class FileLockRestorer {
  private constructor(private readonly byPid: Map<number, FileLockEntry[]>) {}

  /** No locks (a restore without --file-locks, or an image without filelocks.img). */
  static none(): FileLockRestorer {
    return new FileLockRestorer(new Map());
  }

  /**
   * Reads filelocks.img and checks every entry names a process of the tree
   * and one of its fds (`fdsOf`), with a style and type we take again.
   */
  static async load(dir: ImageDir, enabled: boolean, fdsOf: (pid: number) => readonly number[] | undefined,
    warn: (line: string) => void = (l) => log.warn(l)): Promise<FileLockRestorer> {
    const image = `${dir.dir}/filelocks.img`;
    const entries = await dir.readEntries<FileLockEntry>(KIND.fileLocks);
    if (!enabled) {
      if (entries.length) warn(`${image}: ${entries.length} file locks are not restored without --file-locks (as CRIU)`);
      return FileLockRestorer.none();
    }
    const byPid = new Map<number, FileLockEntry[]>();
    for (const e of entries) {
      const fds = fdsOf(e.pid);
      if (!fds) throw new ImageError(image, undefined, `a lock of pid ${e.pid}, which is not in pstree.img`);
      if (!fds.includes(e.fd)) throw new ImageError(image, undefined, `pid ${e.pid}: a lock on fd ${e.fd}, which the process does not have`);
      if (e.flag === FL_LEASE) throw new UserError(`pid ${e.pid}: fd ${e.fd} holds a file lease, which restore does not support`);
      if (e.flag !== FL_POSIX && e.flag !== FL_FLOCK && e.flag !== FL_OFD) throw new ImageError(image, undefined, `pid ${e.pid}: fd ${e.fd}: unknown lock flag ${e.flag}`);
      if (e.type !== F_RDLCK && e.type !== F_WRLCK) throw new ImageError(image, undefined, `pid ${e.pid}: fd ${e.fd}: lock type ${e.type} is not F_RDLCK or F_WRLCK`);
      if (e.start < 0n || e.len < 0n) throw new ImageError(image, undefined, `pid ${e.pid}: fd ${e.fd}: bad lock range ${e.start}+${e.len}`);
      let l = byPid.get(e.pid);
      if (!l) byPid.set(e.pid, (l = []));
      l.push(e);
    }
    return new FileLockRestorer(byPid);
  }

  get size(): number {
    let n = 0;
    for (const l of this.byPid.values()) n += l.length;
    return n;
  }

  /** Takes the locks of `pid` again inside it (its fds are installed). */
  restore(t: RemoteTask, pid: number, log: (line: string) => void = () => {}): void {
    for (const e of this.byPid.get(pid) ?? []) {
      const what = describe(e);
      let r: bigint;
      if (e.flag === FL_FLOCK) {
        r = t.raw(NR.flock, e.fd, (e.type === F_WRLCK ? LOCK_EX : LOCK_SH) | LOCK_NB);
      } else {
        const fl = Buffer.alloc(32);
        fl.writeInt16LE(e.type, 0);
        fl.writeInt16LE(SEEK_SET, 2);
        fl.writeBigInt64LE(e.start, 8);
        fl.writeBigInt64LE(e.len, 16);
        t.write(t.scratch + SCR_EVENT_ARGS, fl);
        r = t.raw(NR.fcntl, e.fd, e.flag === FL_POSIX ? F_SETLK : F_OFD_SETLK, t.scratch + SCR_EVENT_ARGS);
      }
      if (r === -11n) throw new UserError(`pid ${pid}: fd ${e.fd}: the file lock (${what}) is held by another process now (EAGAIN)`);
      if (r < 0n && r > -4096n) throw new InjectedSyscallError(pid, `lock fd ${e.fd} (${what})`, Number(-r));
      log(`pid ${pid}: fd ${e.fd}: ${what} lock taken`);
    }
  }
}
