// Open files of the dumped tree → files.img / fdinfo-<id>.img entries.
// Supported: regular files and directories (path, flags, position, size,
// mode), character devices of the "mem" family (/dev/null, /dev/zero, ...);
// with --shell-job also stdio (fds 0-2) on a pty or a pipe, like CRIU's
// shell jobs. Any other descriptor fails the dump, naming pid and fd.
// One file_entry per open file description: descriptors that share one
// (dup, fork) are found with kcmp(KCMP_FILE) and get the same id.
import { statSync, type BigIntStats } from 'node:fs';
import {
  FdType, TtyType, type FdinfoEntry, type FileEntry, type FownEntry, type RegFileEntry, type TcpStreamEntry, type TtyInfoEntry,
} from '../images/index.js';
import { UserError } from '../errors.js';
import { KCMP, kcmpSame } from '../inject/index.js';
import {
  describeObject, planObject, TcpRepairHold, type InetDumpOptions, type ObjectContext, type ObjectKind,
} from './fds/objects.js';
import { listFds, readFdinfo } from './proc.js';

const O_ACCMODE = 3;
const O_WRONLY = 1;
const O_APPEND = 0o2000;
const O_LARGEFILE = 0o100000;
const O_CLOEXEC = 0o2000000;
const FD_CLOEXEC = 1;

const ZERO_FOWN: FownEntry = { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 };

export interface PlannedFd {
  fd: number;
  /** How to describe it (filled once ids are assigned). */
  kind: 'reg' | 'pipe' | 'tty' | ObjectKind;
  target: string;
  flags: number; // status flags without O_CLOEXEC
  cloexec: boolean;
  pos: bigint;
  st?: BigIntStats;
  pipeIno?: number;
}

function isMemDevice(st: BigIntStats): boolean {
  return Number(st.rdev >> 8n) === 1; // major 1: null, zero, full, random, urandom...
}

function isPty(st: BigIntStats): boolean {
  const major = Number((st.rdev >> 8n) & 0xfffn);
  return major >= 136 && major <= 143;
}

/**
 * Looks at every fd of `pid` without touching the process. Returns the
 * planned fds, or the list of problems (one per unsupported fd).
 */
export function planFds(pid: number, shellJob: boolean, objOpts: InetDumpOptions = { tcpEstablished: false }): { fds: PlannedFd[]; problems: string[] } {
  const fds: PlannedFd[] = [];
  const problems: string[] = [];
  const all = listFds(pid);
  const ctx: ObjectContext = { opts: objOpts, fds: new Set(all.map((x) => x.fd)) };
  for (const { fd, target } of all) {
    const where = `pid ${pid}: fd ${fd} (${target})`;
    let info;
    try {
      info = readFdinfo(pid, fd);
    } catch {
      continue; // closed meanwhile; the post-freeze check sees the final table
    }
    const base = { fd, target, flags: info.flags & ~O_CLOEXEC, cloexec: (info.flags & O_CLOEXEC) !== 0, pos: info.pos };
    const stdio = fd <= 2;
    const pipe = /^pipe:\[(\d+)\]$/.exec(target);
    if (pipe) {
      if (stdio && shellJob) fds.push({ ...base, kind: 'pipe', pipeIno: Number(pipe[1]) });
      else problems.push(`${where}: pipes are not supported${stdio ? ' (use --shell-job for stdio)' : ''}`);
      continue;
    }
    if (target.startsWith('socket:') || target.startsWith('anon_inode:')) {
      const k = planObject(pid, fd, target, ctx);
      if (typeof k === 'string') fds.push({ ...base, kind: k });
      else problems.push(`${where}: ${k.problem}`);
      continue;
    }
    if (!target.startsWith('/')) { problems.push(`${where}: this kind of file is not supported`); continue; }
    if (target.endsWith(' (deleted)')) { problems.push(`${where}: deleted files are not supported`); continue; }
    let st: BigIntStats;
    try {
      st = statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
    } catch (e) {
      problems.push(`${where}: cannot stat (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
      continue;
    }
    if (st.isCharacterDevice() && isPty(st)) {
      if (stdio && shellJob) fds.push({ ...base, kind: 'tty', st });
      else problems.push(`${where}: terminals are not supported${stdio ? ' (use --shell-job for stdio)' : ''}`);
      continue;
    }
    if (!(st.isFile() || st.isDirectory() || (st.isCharacterDevice() && isMemDevice(st)))) {
      problems.push(`${where}: this kind of file is not supported`);
      continue;
    }
    try {
      const now = statSync(target, { bigint: true });
      if (now.ino !== st.ino || now.dev !== st.dev) { problems.push(`${where}: the path now names a different file`); continue; }
    } catch (e) {
      problems.push(`${where}: file is not reachable by its path (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
      continue;
    }
    fds.push({ ...base, kind: 'reg', st });
  }
  return { fds, problems };
}

/** Allocates file ids and builds files.img, fdinfo and tty-info entries for the tree. */
export class FileTable {
  readonly files: FileEntry[] = [];
  readonly ttyInfos: TtyInfoEntry[] = [];
  /** tcp-stream-<ino>.img contents of established connections. */
  readonly tcpStreams: { ino: number; entry: TcpStreamEntry; extra: Buffer }[] = [];
  constructor(
    private readonly objOpts: InetDumpOptions = { tcpEstablished: false },
    /** Sockets put in TCP repair mode; the caller releases them. */
    readonly tcpRepair: TcpRepairHold = new TcpRepairHold(),
  ) {}
  private nextId = 1;
  private readonly byPath = new Map<string, number>();
  /** Descriptors already described: [pid, fd, id, target]. */
  private readonly seen: { pid: number; fd: number; id: number; target: string }[] = [];

  private reg(id: number, name: string, flags: number, pos: bigint, st: BigIntStats | undefined): RegFileEntry {
    const r: RegFileEntry = { id, flags, pos, fown: ZERO_FOWN, name, build_id: [] };
    if (st) {
      // Size is checked at restore (file unchanged); CRIU omits it for
      // write-only appenders and we omit it for directories, whose size is
      // meaningless. Mode is checked too.
      const appender = (flags & O_ACCMODE) === O_WRONLY && (flags & O_APPEND) !== 0;
      if (st.isFile() && !appender) r.size = st.size;
      r.mode = Number(st.mode);
    }
    return r;
  }

  /** A file referenced by path only (VMA, exe, cwd, root): one id per path. */
  pathFile(path: string, flags: number, st?: BigIntStats): number {
    const key = `${path}\0${flags}`;
    const have = this.byPath.get(key);
    if (have !== undefined) return have;
    const id = this.nextId++;
    this.byPath.set(key, id);
    this.files.push({ type: FdType.REG, id, reg: this.reg(id, path, flags | O_LARGEFILE, 0n, st) });
    return id;
  }

  /** Describes one process's planned fds; returns its fdinfo entries. */
  addFds(pid: number, fds: readonly PlannedFd[], proc: { sid: number; pgid: number }): FdinfoEntry[] {
    const out: FdinfoEntry[] = [];
    for (const p of fds) {
      let id: number | undefined;
      let type: number = p.kind === 'reg' ? FdType.REG : p.kind === 'pipe' ? FdType.PIPE : FdType.TTY;
      const ctx: ObjectContext = { opts: this.objOpts, fds: new Set(fds.map((x) => x.fd)) };
      for (const s of this.seen) {
        if (s.target === p.target && kcmpSame(s.pid, pid, KCMP.FILE, s.fd, p.fd)) {
          id = s.id;
          break;
        }
      }
      if (id === undefined) {
        id = this.nextId++;
        if (p.kind === 'reg') {
          this.files.push({ type, id, reg: this.reg(id, p.target, p.flags, p.pos, p.st) });
        } else if (p.kind === 'pipe') {
          this.files.push({ type, id, pipe: { id, pipe_id: p.pipeIno!, flags: p.flags, fown: ZERO_FOWN } });
        } else if (p.kind !== 'tty') {
          let d;
          try {
            d = describeObject(pid, p.fd, p.target, p.kind, id, p.flags, ctx, this.tcpRepair);
          } catch (e) {
            throw new UserError(`cannot dump: pid ${pid}: fd ${p.fd} (${p.target}): ${(e as Error).message}`);
          }
          type = d.file.type;
          this.files.push(d.file);
          if (d.tcpStream) this.tcpStreams.push(d.tcpStream);
        } else {
          const st = p.st!;
          const minor = Number((st.rdev & 0xffn) | ((st.rdev >> 12n) & ~0xffn));
          const index = (Number((st.rdev >> 8n) & 0xfffn) - 136) * 256 + minor; // /dev/pts/<index>
          const infoId = index * 2; // slave end
          if (!this.ttyInfos.some((t) => t.id === infoId)) {
            this.ttyInfos.push({
              id: infoId, type: TtyType.PTY, locked: false, exclusive: false, packet_mode: false,
              sid: proc.sid, pgrp: proc.pgid, rdev: Number(st.rdev & 0xffffffffn), pty: { index },
            });
          }
          const regfId = this.nextId++;
          this.files.push({ type: FdType.REG, id: regfId, reg: this.reg(regfId, p.target, p.flags, 0n, undefined) });
          this.files.push({ type, id, tty: { id, tty_info_id: infoId, flags: p.flags, fown: ZERO_FOWN, regf_id: regfId } });
        }
        this.seen.push({ pid, fd: p.fd, id, target: p.target });
      } else {
        type = this.files.find((f) => f.id === id)!.type;
      }
      out.push({ id, flags: p.cloexec ? FD_CLOEXEC : 0, type, fd: p.fd });
    }
    return out;
  }
}
