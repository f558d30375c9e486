// The one interface every kind of fd implements on the dump side
// (plugin/dump/fds/<kind>.ts), and the facts and context it gets.
//
// Lifecycle of one dump:
//  1. plan (tree running, then again frozen): for each fd of each process
//     the registry asks the kinds in order; the first whose claim() returns
//     something owns the fd. claim() sees only /proc facts, never touches
//     the process, and returns its kind-private plan or a problem string
//     ("pid P: fd N (target): why") that refuses the dump.
//  2. describe (tree frozen): FileTable finds which fds share one open file
//     description (kcmp) and calls describe() once per description, with a
//     freshly allocated files.img id. describe() returns the file_entry and
//     may stash data for its own images (pipes-data.img ...).
//  3. write: each kind's writeImages() writes its own images.
import type { LinkRemaps } from '../link-remap.js';
import type { BigIntStats } from 'node:fs';
import type { FileEntry, FownEntry, ImageDir, TtyInfoEntry } from '../../images/index.js';

/** Everything /proc says about one fd (read once, before any kind looks). */
export interface FdFacts {
  pid: number;
  fd: number;
  /** readlink of /proc/PID/fd/N: a path, "pipe:[ino]", "socket:[ino]", "anon_inode:[eventfd]" ... */
  target: string;
  /** Status flags without O_CLOEXEC (as in the file_entry's flags). */
  flags: number;
  cloexec: boolean;
  pos: bigint;
  /** The whole /proc/PID/fdinfo/N text (kinds parse their own lines: eventfd-count, tfd ...). */
  fdinfo: string;
  /** stat of /proc/PID/fd/N (undefined if it failed: then `statError` holds the errno name). */
  st?: BigIntStats;
  statError?: string;
  /** fds 0-2. */
  stdio: boolean;
  /** --shell-job was given. */
  shellJob: boolean;
  /** --tcp-established was given. */
  tcpEstablished: boolean;
  /** --skip-in-flight was given. */
  skipInFlight: boolean;
  /** --ghost-limit: largest deleted file (bytes on disk) dumped with its contents. */
  ghostLimit: bigint;
  /** --link-remap: a deleted file still linked elsewhere may be dumped (a link remap). */
  linkRemap: boolean;
  /** Session and process group of the process (ttys need them). */
  sid: number;
  pgid: number;
  /** "pid P: fd N (target)", the prefix of every problem about this fd. */
  where: string;
}

/** A planned fd: the facts plus what the owning kind wants to remember. */
export interface PlannedFd<T = unknown> extends FdFacts {
  kind: DumpFdKind<T>;
  data: T;
  /** F_GETOWN / F_GETSIG of the description, filled by the table right before describe(). */
  fown: FownEntry;
}

/** What describe() may use: the tree's other fds, path files, options. */
export interface DumpFdContext {
  /** A file referenced by path only (a tty's regf, a socket's bound file): one id per path + flags. */
  pathFile(path: string, flags: number, st?: BigIntStats): number;
  /**
   * Entry `id` names a deleted file (nlink 0) readable through `source`
   * (/proc/PID/fd/N): its contents go into a ghost image (plugin/dump/ghost.ts).
   */
  ghostFile(id: number, source: string, st: BigIntStats): void;
  /**
   * Entry `id` names a deleted file still linked elsewhere (nlink > 0),
   * readable through `source`: it gets a link-remap name next to `path` and
   * a LINKED remap (plugin/dump/link-remap.ts; needs --link-remap).
   */
  linkedFile(id: number, where: string, source: string, path: string): void;
  /**
   * The files.img id of a file passed in a unix socket's queued message
   * (SCM_RIGHTS) and peeked into the dumper as `fd` (keep it open until
   * writeImages): the tree's description if a fd of the tree has it, else
   * a new entry of the kind that claims it. Throws when it cannot be dumped.
   */
  scmFile(fd: number, where: string): number;
  /** A fresh files.img id for an entry that no fd uses directly. */
  newId(): number;
  /** Adds such an entry to files.img (e.g. a tty's reg_file_entry). */
  addEntry(e: FileEntry): void;
  /** Every planned fd of the whole tree (e.g. to find a pipe's other end or a socket's peer). */
  readonly allFds: readonly PlannedFd[];
  /** tty-info.img entries (written by the table). */
  readonly ttyInfos: TtyInfoEntry[];
  /** Frozen-tree pids. */
  readonly pids: readonly number[];
  /** The files.img entry of an open memfd (the dump's ShmemTable: one object per memfd). */
  memfdEntry(ref: import('../shmem.js').ShmemRef, id: number, flags: number, pos: bigint): FileEntry;
  /** Extra options a kind may need (--ext-unix-sk ...). */
  readonly options: DumpFdOptions;
  log(line: string): void;
}

export interface DumpFdOptions {
  shellJob: boolean;
  /** CRIU's --ext-unix-sk: unix sockets whose peer is outside the tree are dumped as external. */
  extUnixSk: boolean;
  /** CRIU's --tcp-established: established TCP connections are dumped (TCP_REPAIR). */
  tcpEstablished: boolean;
  /** CRIU's --skip-in-flight: a listening socket's not yet accepted connections are left out. */
  skipInFlight: boolean;
  /** CRIU's --ghost-limit (default 1 MiB): largest deleted-but-open file carried in the images. */
  ghostLimit: bigint;
  /** CRIU's --link-remap: the link-remap names this dump makes (undefined: not allowed). */
  linkRemaps?: LinkRemaps;
  /** Record the ELF build-id of regular files (CRIU's --file-validation buildid, its default). */
  buildIds?: boolean;
}

export interface DumpFdKind<T = unknown> {
  /** Short name used in messages ("pipe", "unix socket"). */
  readonly name: string;
  /** Claims the fd (returns its private plan), refuses it (a problem string), or passes (undefined). */
  claim(f: FdFacts): { data: T } | string | undefined;
  /**
   * Checks that need the whole tree's plan (a pipe's other end, a socket's
   * peer): problems refuse the dump. Called once per dump pass.
   */
  checkTree?(fds: readonly PlannedFd<T>[], ctx: { pids: readonly number[]; options: DumpFdOptions }): string[];
  /**
   * The file_entry of one open file description (first fd that has it);
   * `id` is its files.img id; `hostFd` is a duplicate of it in the dumper
   * (pidfd_getfd; closed by the caller) to peek queues and options with.
   */
  describe(ctx: DumpFdContext, id: number, p: PlannedFd<T>, hostFd: number): FileEntry;
  /** Writes the kind's own images (after every describe). */
  writeImages?(dir: ImageDir): Promise<void>;
  /**
   * The dump is over: the tree keeps running (`keepRunning`: --leave-running,
   * pre-dump, or a failed dump) or has been killed. Undo or keep what
   * describe() did to the tree (TCP repair mode).
   */
  finish?(keepRunning: boolean): void;
}
