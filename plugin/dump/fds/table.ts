// FileTable: files.img ids for the whole tree. One file_entry per open file
// description: fds that share one (dup, fork, SCM_RIGHTS) are found with
// kcmp(KCMP_FILE) and get the same id; the owning kind describes it once.
import { readlinkSync, type BigIntStats } from 'node:fs';
import { FdType, type FdinfoEntry, type FileEntry, type FownEntry, type TtyInfoEntry } from '../../images/index.js';
import { KCMP, kcmpSame } from '../../inject/index.js';
import { addon } from '../../native/addon.js';
import { FD_CLOEXEC, O_LARGEFILE, ZERO_FOWN } from './common.js';
import { GhostFiles } from '../ghost.js';
import { claimFd, facts } from './facts.js';
import { regEntry } from './reg.js';
import type { DumpFdContext, DumpFdKind, DumpFdOptions, PlannedFd } from './types.js';

const F_GETOWN = 9;
const F_GETSIG = 11;
const F_OWNER_PID = 1;
const F_OWNER_PGRP = 2;

/** Owner and signal of the description behind hostFd (F_GETOWN / F_GETSIG). */
function readFown(hostFd: number, uid: number): FownEntry {
  let owner = 0;
  let sig = 0;
  try {
    owner = addon.fdFcntl(hostFd, F_GETOWN, 0);
    sig = addon.fdFcntl(hostFd, F_GETSIG, 0);
  } catch {
    return ZERO_FOWN;
  }
  if (owner === 0 && sig === 0) return ZERO_FOWN;
  return { uid, euid: uid, signum: sig, pid_type: owner < 0 ? F_OWNER_PGRP : F_OWNER_PID, pid: Math.abs(owner) };
}

export class FileTable {
  readonly files: FileEntry[] = [];
  readonly ttyInfos: TtyInfoEntry[] = [];
  private nextId = 1;
  private readonly byPath = new Map<string, number>();
  /** Descriptions already described: one representative fd each. */
  private readonly seen: { pid: number; fd: number; id: number; type: number; target: string }[] = [];
  /** Descriptions being described (an SCM_RIGHTS loop would recurse forever). */
  private readonly describing: { pid: number; fd: number; target: string }[] = [];
  /** Owner uid for fown entries (of the process being described). */
  private uid = 0;
  private readonly ctx: DumpFdContext;
  /** Deleted files that are still open or mapped (ghost images). */
  readonly ghosts: GhostFiles;
  /** Describes an open memfd (set by the dump to its ShmemTable). */
  memfdEntry?: (ref: import('../shmem.js').ShmemRef, id: number, flags: number, pos: bigint) => FileEntry;

  constructor(
    readonly kinds: readonly DumpFdKind[],
    allFds: readonly PlannedFd[],
    pids: readonly number[],
    options: DumpFdOptions,
    log: (line: string) => void,
  ) {
    this.ghosts = new GhostFiles(options.ghostLimit);
    this.ctx = {
      pathFile: (path, flags, st) => this.pathFile(path, flags, st),
      ghostFile: (id, source, st) => this.ghosts.add(id, source, st),
      linkedFile: (id, where, source, path) => this.linkedFile(id, where, source, path),
      newId: () => this.nextId++,
      scmFile: (fd, where) => this.scmFile(fd, where),
      addEntry: (e) => { this.files.push(e); },
      memfdEntry: (ref, id, flags, pos) => {
        if (!this.memfdEntry) throw new Error('FileTable: memfd fds need memfdEntry');
        return this.memfdEntry(ref, id, flags, pos);
      },
      allFds,
      ttyInfos: this.ttyInfos,
      pids,
      options,
      log,
    };
  }

  /** Adds an entry of another kind (plugin/dump/shmem.ts); returns its id. */
  addEntry(make: (id: number) => FileEntry): number {
    const id = this.nextId++;
    this.files.push(make(id));
    return id;
  }

  /** A file referenced by path only (VMA, exe, cwd, root): one id per path + flags; `source` reads it (e.g. through /proc/PID/root). */
  pathFile(path: string, flags: number, st?: BigIntStats, source?: string): number {
    const key = `${path}\0${flags}`;
    const have = this.byPath.get(key);
    if (have !== undefined) return have;
    const id = this.nextId++;
    this.byPath.set(key, id);
    this.files.push({ type: FdType.REG, id, reg: regEntry(id, path, flags | O_LARGEFILE, 0n, st, { buildId: this.ctx.options.buildIds === true, ...(source !== undefined ? { source } : {}) }) });
    return id;
  }

  /**
   * A mapped file that was deleted (nlink 0), readable through `source`
   * (/proc/PID/map_files/...): one entry per inode + flags under the path it
   * had, its contents in a ghost image.
   */
  ghostPathFile(path: string, flags: number, st: BigIntStats, source: string): number {
    const key = `ghost\0${st.dev}:${st.ino}\0${flags}`;
    const have = this.byPath.get(key);
    if (have !== undefined) return have;
    const id = this.pathFileFresh(path, flags, st, source);
    this.byPath.set(key, id);
    this.ghosts.add(id, source, st);
    return id;
  }

  /**
   * A mapped file deleted but still linked elsewhere, readable through
   * `source`: one entry per inode + flags under the path it had, reopened
   * through a link-remap name.
   */
  linkedPathFile(where: string, path: string, flags: number, st: BigIntStats, source: string): number {
    const key = `linked\0${st.dev}:${st.ino}\0${flags}`;
    const have = this.byPath.get(key);
    if (have !== undefined) return have;
    const id = this.pathFileFresh(path, flags, st, source);
    this.byPath.set(key, id);
    this.linkedFile(id, where, source, path);
    return id;
  }

  /** Entry `id` is reopened through a new link-remap name (CRIU's files.img entry: flags 0, pos 0, no size). */
  private linkedFile(id: number, where: string, source: string, path: string): void {
    const links = this.ctx.options.linkRemaps;
    if (!links) throw new Error(`${where}: a link remap without --link-remap`);
    const rid = this.nextId++;
    const name = links.link(where, source, path, rid);
    this.files.push({ type: FdType.REG, id: rid, reg: { id: rid, flags: 0, pos: 0n, fown: ZERO_FOWN, name, build_id: [] } });
    this.ghosts.addLinked(id, rid);
  }

  private pathFileFresh(path: string, flags: number, st: BigIntStats, source: string): number {
    const id = this.nextId++;
    this.files.push({ type: FdType.REG, id, reg: regEntry(id, path, flags | O_LARGEFILE, 0n, st, { buildId: this.ctx.options.buildIds === true, source }) });
    return id;
  }

  /** Describes one process's planned fds; returns its fdinfo entries. */
  addFds(pid: number, fds: readonly PlannedFd[], uid: number): FdinfoEntry[] {
    this.uid = uid;
    const out: FdinfoEntry[] = [];
    for (const p of fds) {
      const found = this.known(pid, p.fd, p.target) ?? this.describeOne(pid, p);
      out.push({ id: found.id, flags: p.cloexec ? FD_CLOEXEC : 0, type: found.type, fd: p.fd });
    }
    return out;
  }

  /** The description of `fd` of `pid` if one was described already (kcmp). */
  private known(pid: number, fd: number, target: string): { id: number; type: number } | undefined {
    for (const s of this.seen) {
      if (s.target === target && kcmpSame(s.pid, pid, KCMP.FILE, s.fd, fd)) return s;
    }
    return undefined;
  }

  /** Gives the description behind `p` (an fd of `pid`) its id and entry. */
  private describeOne(pid: number, p: PlannedFd): { id: number; type: number } {
    if (this.describing.some((d) => d.target === p.target && kcmpSame(d.pid, pid, KCMP.FILE, d.fd, p.fd))) {
      throw new Error(`${p.where}: passed in a queued message of a socket that it carries itself (SCM_RIGHTS loop), which is not supported`);
    }
    const id = this.nextId++;
    const hostFd = addon.restorePidfdGetfd(pid, p.fd);
    let entry: FileEntry;
    this.describing.push({ pid, fd: p.fd, target: p.target });
    try {
      p.fown = readFown(hostFd, this.uid);
      entry = p.kind.describe(this.ctx, id, p, hostFd);
    } finally {
      this.describing.pop();
      addon.restoreCloseFd(hostFd);
    }
    this.files.push(entry);
    this.seen.push({ pid, fd: p.fd, id, type: entry.type, target: p.target });
    return { id, type: entry.type };
  }

  /**
   * The files.img id of a file passed in a queued message (SCM_RIGHTS),
   * peeked into the dumper as `fd` (kept open by the caller until the
   * images are written): the tree's own description when a fd of the tree
   * has it (kcmp), else a new entry described from `fd` itself (CRIU's
   * dump_my_file).
   */
  scmFile(fd: number, where: string): number {
    const self = process.pid;
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch (e) {
      throw new Error(`${where}: a file in a queued message: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    const have = this.known(self, fd, target);
    if (have) return have.id;
    const mine = this.ctx.allFds.find((p) => p.target === target && kcmpSame(p.pid, self, KCMP.FILE, p.fd, fd));
    if (mine) return (this.known(mine.pid, mine.fd, mine.target) ?? this.describeOne(mine.pid, mine)).id;
    const f = facts(self, fd, target, this.ctx.options, { sid: 0, pgid: 0 });
    if (!f) throw new Error(`${where}: a file in a queued message (${target}) closed while it was read`);
    f.where = `${where}: a file in a queued message (${target})`;
    f.stdio = false;
    const planned = claimFd(this.kinds, f);
    if (typeof planned === 'string') throw new Error(planned);
    return this.describeOne(self, planned).id;
  }
}
