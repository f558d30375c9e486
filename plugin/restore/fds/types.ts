// The one interface every kind of fd implements on the restore side
// (plugin/restore/fds/<kind>.ts). See docs in /work/notes/fds-structure.md
// and plugin/restore/fds/index.ts for the lifecycle:
//
//  1. load (plan time, nothing created yet): the registry reads files.img
//     and every fdinfo; each fd's file type picks its kind; kind.load()
//     reads the kind's own images and kind.check() refuses what cannot be
//     restored (a UserError naming pid, fd and kind).
//  2. create (every stub of the tree exists, all still with the restorer's
//     credentials, before any address space is rebuilt): each open file
//     description is created once by kind.create(), inside a chosen task
//     by injected syscalls (returns { taskFd }) or in the restorer
//     (returns { hostFd }). The registry then sets status flags and the
//     owner (F_SETFL, F_SETOWN, F_SETSIG) and keeps a duplicate in the
//     restorer ("host fd", pidfd_getfd for task fds).
//  3. install (per process, in restoreProcessState): the host fds are sent
//     into the process over SCM_RIGHTS (channel.ts) and moved to their fd
//     numbers with their close-on-exec flags. Descriptions shared between
//     processes stay shared (one create, many installs).
//  4. close: the registry closes every host fd (after the last install or
//     on failure).
import type { FileEntry, FownEntry, ImageDir } from '../../images/index.js';
import type { RemoteTask } from '../task.js';

/** One fd of one process that refers to a files.img entry. */
export interface FdUse {
  pid: number;
  fd: number;
  /** files.img id. */
  id: number;
  cloexec: boolean;
}

export interface RestoreFdOptions {
  /** --shell-job: stdio the image describes as a terminal (or an external pipe) stays the restorer's. */
  shellJob: boolean;
  /** -d. */
  detached: boolean;
  /** --inherit-fd fd[N]:KEY → N (the restorer's fd), by KEY ("pipe:[123]", "socket:[456]", a path). */
  inheritFds: Map<string, number>;
  /** --ext-unix-sk given at restore. */
  extUnixSk: boolean;
  /** --tcp-established given at restore: established TCP connections are restored (TCP_REPAIR). */
  tcpEstablished: boolean;
  /** Check files by path from the restorer at plan time (false for a container: its mounts do not exist yet). */
  checkFiles?: boolean;
  /** CRIU's --file-validation at restore: 'buildid' (default) also compares recorded build-ids. */
  fileValidation?: import('../../images/build-id.js').FileValidation;
  /**
   * Open memfds (plugin/restore/shmem.ts plans their objects): the object key
   * of each memfd file id, and, once restore.ts has created the objects, the
   * path each object can be reopened by.
   */
  memfds?: { refs: Map<number, { key: string }>; path?: (key: string) => string };
}

/** What load() and check() get. */
export interface LoadContext {
  readonly dir: ImageDir;
  readonly imagesDir: string;
  readonly files: ReadonlyMap<number, FileEntry>;
  /** Every use of every id (all processes). */
  uses(id: number): readonly FdUse[];
  /** Files held by no fd but passed in a queued message (SCM_RIGHTS): created all the same. */
  readonly inFlight: ReadonlySet<number>;
  readonly options: RestoreFdOptions;
}

/** What create() gets. */
export interface CreateContext extends LoadContext {
  /** The restored processes' stubs by (image) pid. */
  task(pid: number): RemoteTask;
  /** Another description created in the same call (a pipe's other end): a fd in `task` or in the restorer. */
  provide(id: number, fd: { taskFd: number; task: RemoteTask } | { hostFd: number }): void;
  /**
   * Makes sure description `id` exists (e.g. the listening socket a client
   * connects to) and returns its host fd. A file no fd holds (in flight) is
   * created in the task whose description is being created.
   */
  ensure(id: number): number;
  /** A duplicate of `fd` of `task` in the restorer (pidfd_getfd); the task keeps its fd. */
  pull(task: RemoteTask, fd: number): number;
  log(line: string): void;
}

export interface RestoreFdKind {
  /** files.img type (FdType) this kind restores. */
  readonly type: number;
  /** Short name used in messages ("pipe", "unix socket"). */
  readonly name: string;
  /**
   * Files (files.img ids) this kind's images carry in flight: passed in a
   * queued message (SCM_RIGHTS), held by no fd. Read before any load();
   * they are created (in the process that needs them) though nothing
   * installs them.
   */
  inFlight?(ctx: LoadContext): Promise<number[]>;
  /** Reads the kind's own images (pipes-data.img ...); called once if any fd of this type (or a file of it in flight) is in the image. */
  load?(ctx: LoadContext, entries: readonly FileEntry[]): Promise<void>;
  /** Plan-time check of one fd; throw UserError to refuse. */
  check?(ctx: LoadContext, file: FileEntry, use: FdUse): void;
  /** True: leave this fd as the restorer's own (shell-job stdio); nothing is created or installed. */
  inherits?(ctx: LoadContext, file: FileEntry, use: FdUse): boolean;
  /** Status flags (open(2) flags) and owner of the description, applied after create(). */
  flags(file: FileEntry): number;
  fown?(file: FileEntry): FownEntry | undefined;
  /** Whether the registry should F_SETFL the status flags (false: create() set them, e.g. by open). */
  readonly setsFlags?: boolean;
  /** Creates description `file`; `owner` is the first process (pstree order) that has it. */
  create(ctx: CreateContext, file: FileEntry, owner: RemoteTask): { taskFd: number } | { hostFd: number };
  /** After every description exists and before any install (connect peers, queue data). */
  finish?(ctx: CreateContext): void;
  /**
   * After all of one process's fds are installed at their numbers, with
   * this kind's fds of that process: state keyed by fd numbers (epoll
   * watches) or best applied late (timerfds armed).
   */
  installed?(ctx: LoadContext, task: RemoteTask, pid: number, uses: readonly { use: FdUse; file: FileEntry }[]): void;
}
