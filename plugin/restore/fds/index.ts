// Restore side of file descriptors: the registry of kinds (one module per
// kind; interface in types.ts) and FdRestorer, which runs the lifecycle
// load → create → install → close for a whole tree.
// To add a kind: write plugin/restore/fds/<kind>.ts exporting a
// RestoreFdKind and list it in restoreFdKinds() below.
import { ImageError, UserError } from '../../errors.js';
import { FdType, KIND, type FdinfoEntry, type FileEntry, type ImageDir } from '../../images/index.js';
import { addon } from '../../native/addon.js';
import { NR, type RemoteTask } from '../task.js';
import { installFds } from './channel.js';
import { eventfdKind } from './eventfd.js';
import { eventpollKind } from './eventpoll.js';
import { fifoKind } from './fifo.js';
import { memfdKind } from './memfd.js';
import { inetKind } from './inet.js';
import { inotifyKind } from './inotify.js';
import { signalfdKind } from './signalfd.js';
import { timerfdKind } from './timerfd.js';
import { pipeKind } from './pipe.js';
import { regKind } from './reg.js';
import { ttyKind } from './tty.js';
import { unixKind } from './unix.js';
import type { CreateContext, FdUse, LoadContext, RestoreFdKind, RestoreFdOptions } from './types.js';

export type { CreateContext, FdUse, LoadContext, RestoreFdKind, RestoreFdOptions } from './types.js';

/** Every kind restore knows, by files.img type (fresh instances per restore: kinds keep image data). */
export function restoreFdKinds(): RestoreFdKind[] {
  return [regKind, ttyKind, pipeKind(), fifoKind(), memfdKind, inetKind(), unixKind(), eventfdKind, signalfdKind, timerfdKind, inotifyKind, eventpollKind];
}

/** Names for file types restore does not support, for messages. */
const TYPE_NAMES: Record<number, string> = {
  [FdType.REG]: 'regular file', [FdType.PIPE]: 'pipe', [FdType.FIFO]: 'fifo', [FdType.INETSK]: 'inet socket',
  [FdType.UNIXSK]: 'unix socket', [FdType.EVENTFD]: 'eventfd', [FdType.EVENTPOLL]: 'epoll instance',
  [FdType.INOTIFY]: 'inotify instance', [FdType.SIGNALFD]: 'signalfd', [FdType.PACKETSK]: 'packet socket',
  [FdType.TTY]: 'terminal', [FdType.FANOTIFY]: 'fanotify instance', [FdType.NETLINKSK]: 'netlink socket',
  [FdType.NS]: 'namespace file', [FdType.TUNF]: 'tun device', [FdType.EXT]: 'external file', [FdType.TIMERFD]: 'timerfd',
  [FdType.MEMFD]: 'memfd', [FdType.BPFMAP]: 'bpf map', [FdType.PIDFD]: 'pidfd',
};

export function fdTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `file type ${type}`;
}

const F_SETFL = 4;
const F_SETOWN = 8;
const F_SETSIG = 10;
const F_OWNER_PGRP = 2;

/** The fds of one process, as the registry planned them. */
export interface ProcessFds {
  /** fds to install (each refers to a description created once for the tree). */
  install: FdUse[];
  /** fds left as the restorer's own (shell-job stdio). */
  inherited: number[];
}

export class FdRestorer {
  private readonly byPid = new Map<number, ProcessFds>();
  private readonly usesById = new Map<number, FdUse[]>();
  private readonly host = new Map<number, number>();
  private readonly creating = new Set<number>();
  /** Pids of the descriptions being created, innermost last (an in-flight file is created in the innermost). */
  private readonly creators: number[] = [];
  private readonly inFlight = new Set<number>();
  private tasks = new Map<number, RemoteTask>();
  private readonly kinds = restoreFdKinds();
  private readonly ctx: LoadContext;

  private constructor(
    dir: ImageDir,
    readonly files: ReadonlyMap<number, FileEntry>,
    readonly options: RestoreFdOptions,
    private readonly log: (line: string) => void,
  ) {
    this.ctx = { dir, imagesDir: dir.dir, files, uses: (id) => this.usesById.get(id) ?? [], inFlight: this.inFlight, options };
  }

  /**
   * Plans the fds of every process (pstree order) and checks them: a fd of
   * a kind restore does not support fails here, naming pid, fd and kind.
   */
  static async load(dir: ImageDir, files: ReadonlyMap<number, FileEntry>, perProcess: { pid: number; fdinfo: readonly FdinfoEntry[]; fdinfoImage: string }[],
    options: RestoreFdOptions, log: (line: string) => void = () => {}): Promise<FdRestorer> {
    const r = new FdRestorer(dir, files, options, log);
    const kinds = new Map(r.kinds.map((k) => [k.type, k]));
    const used = new Map<RestoreFdKind, FileEntry[]>();
    const all: { use: FdUse; file: FileEntry; kind: RestoreFdKind | undefined; image: string }[] = [];
    for (const p of perProcess) {
      r.byPid.set(p.pid, { install: [], inherited: [] });
      for (const fi of p.fdinfo) {
        const f = files.get(fi.id);
        if (!f) throw new ImageError(p.fdinfoImage, undefined, `fd ${fi.fd} refers to file id ${fi.id}, which files.img does not have`);
        const use: FdUse = { pid: p.pid, fd: fi.fd, id: fi.id, cloexec: (fi.flags & 1) !== 0 };
        let list = r.usesById.get(fi.id);
        if (!list) r.usesById.set(fi.id, (list = []));
        list.push(use);
        const kind = kinds.get(f.type);
        all.push({ use, file: f, kind, image: p.fdinfoImage });
        if (kind) {
          let l = used.get(kind);
          if (!l) used.set(kind, (l = []));
          if (!l.includes(f)) l.push(f);
        }
      }
    }
    for (const { use, file, kind } of all) {
      if (!kind) throw new UserError(`pid ${use.pid}: fd ${use.fd} is a ${fdTypeName(file.type)} (files.img id ${file.id}, type ${file.type}), which restore does not support`);
    }
    for (const k of r.kinds) {
      for (const id of (await k.inFlight?.(r.ctx)) ?? []) {
        const f = files.get(id);
        if (!f) throw new ImageError(dir.pathOf(KIND.skQueues), undefined, `a queued message carries file id ${id}, which files.img does not have`);
        const kind = kinds.get(f.type);
        if (!kind) throw new UserError(`a file passed in a queued message (SCM_RIGHTS) is a ${fdTypeName(f.type)} (files.img id ${id}, type ${f.type}), which restore does not support`);
        r.inFlight.add(id);
        let l = used.get(kind);
        if (!l) used.set(kind, (l = []));
        if (!l.includes(f)) l.push(f);
      }
    }
    for (const [kind, entries] of used) await kind.load?.(r.ctx, entries);
    for (const { use, file, kind } of all) {
      kind!.check?.(r.ctx, file, use);
      const pf = r.byPid.get(use.pid)!;
      if (kind!.inherits?.(r.ctx, file, use)) pf.inherited.push(use.fd);
      else pf.install.push(use);
    }
    return r;
  }

  /** The planned fds of one process. */
  process(pid: number): ProcessFds {
    return this.byPid.get(pid) ?? { install: [], inherited: [] };
  }

  /** Kind names by files.img type ("pipe" ...). */
  kindName(type: number): string {
    return this.kinds.find((k) => k.type === type)?.name ?? fdTypeName(type);
  }

  /** Creates every open file description the tree needs, each inside its first owner (tasks: pid → stub). */
  createAll(tasks: Map<number, RemoteTask>): void {
    this.tasks = tasks;
    const ctx = this.createContext();
    for (const [pid, pf] of this.byPid) {
      for (const use of pf.install) {
        if (!this.host.has(use.id)) this.create(ctx, use.id, pid);
      }
    }
    for (const k of this.kinds) k.finish?.(ctx);
  }

  /** Puts the process's fds in place (after createAll); stdio it neither installs nor inherits is closed. */
  install(task: RemoteTask, pid: number): void {
    const pf = this.process(pid);
    const planned = new Set([...pf.install.map((u) => u.fd), ...pf.inherited]);
    for (const fd of [0, 1, 2]) if (!planned.has(fd)) task.raw(NR.close, fd);
    const high = Math.max(2, ...planned) + 1;
    installFds(task, pf.install.map((u) => ({ hostFd: this.hostFd(u.id), fd: u.fd, cloexec: u.cloexec })), high);
    for (const k of this.kinds) {
      if (!k.installed) continue;
      const mine = pf.install.map((use) => ({ use, file: this.files.get(use.id)! })).filter((x) => x.file.type === k.type);
      if (mine.length) k.installed(this.ctx, task, pid, mine);
    }
  }

  /** Closes every host fd. Idempotent. */
  close(): void {
    for (const fd of this.host.values()) addon.restoreCloseFd(fd);
    this.host.clear();
  }

  private hostFd(id: number): number {
    const fd = this.host.get(id);
    if (fd === undefined) throw new Error(`file id ${id} was not created`);
    return fd;
  }

  private ownerOf(id: number): number {
    const uses = this.usesById.get(id);
    if (uses?.length) return uses[0]!.pid;
    const creator = this.creators[this.creators.length - 1];
    if (this.inFlight.has(id) && creator !== undefined) return creator;
    throw new Error(`file id ${id} has no fd`);
  }

  private task(pid: number): RemoteTask {
    const t = this.tasks.get(pid);
    if (!t) throw new Error(`pid ${pid} has no task to create fds in`);
    return t;
  }

  private create(ctx: CreateContext, id: number, ownerPid?: number): number {
    const have = this.host.get(id);
    if (have !== undefined) return have;
    const file = this.files.get(id)!;
    if (this.creating.has(id)) throw new Error(`file id ${id}: circular dependency while creating it`);
    this.creating.add(id);
    try {
      const kind = this.kinds.find((k) => k.type === file.type)!;
      const ownerImagePid = ownerPid ?? this.ownerOf(id);
      const owner = this.task(ownerImagePid);
      this.creators.push(ownerImagePid);
      let r: { taskFd: number } | { hostFd: number };
      try {
        r = kind.create(ctx, file, owner);
      } finally {
        this.creators.pop();
      }
      this.adopt(id, 'taskFd' in r ? { taskFd: r.taskFd, task: owner } : r);
      return this.host.get(id)!;
    } finally {
      this.creating.delete(id);
    }
  }

  /** Applies status flags and owner, keeps a host duplicate, closes the task's copy. */
  private adopt(id: number, fd: { taskFd: number; task: RemoteTask } | { hostFd: number }): void {
    if (this.host.has(id)) throw new Error(`file id ${id} created twice`);
    const file = this.files.get(id)!;
    const kind = this.kinds.find((k) => k.type === file.type)!;
    const flags = kind.flags(file);
    const fown = kind.fown?.(file);
    if ('hostFd' in fd) {
      if (kind.setsFlags !== false) addon.fdFcntl(fd.hostFd, F_SETFL, flags);
      this.host.set(id, fd.hostFd);
      return;
    }
    const { task, taskFd } = fd;
    try {
      if (kind.setsFlags !== false) task.call(`fcntl(${taskFd}, F_SETFL)`, NR.fcntl, taskFd, F_SETFL, flags);
      if (fown && (fown.pid !== 0 || fown.signum !== 0)) {
        if (fown.pid !== 0) task.call(`fcntl(${taskFd}, F_SETOWN)`, NR.fcntl, taskFd, F_SETOWN, fown.pid_type === F_OWNER_PGRP ? -fown.pid : fown.pid);
        if (fown.signum !== 0) task.call(`fcntl(${taskFd}, F_SETSIG)`, NR.fcntl, taskFd, F_SETSIG, fown.signum);
      }
      this.host.set(id, addon.restorePidfdGetfd(task.pid, taskFd));
    } finally {
      task.raw(NR.close, taskFd);
    }
  }

  private createContext(): CreateContext {
    const ctx: CreateContext = {
      ...this.ctx,
      task: (pid) => this.task(pid),
      provide: (id, fd) => this.adopt(id, fd),
      ensure: (id) => this.create(ctx, id),
      pull: (task, fd) => addon.restorePidfdGetfd(task.pid, fd),
      log: this.log,
    };
    return ctx;
  }
}
