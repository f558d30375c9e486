// Dump side of file descriptors: the registry of fd kinds (one module per
// kind, see types.ts for the interface) and planning from /proc.
// To add a kind: write plugin/dump/fds/<kind>.ts exporting a factory that
// returns a DumpFdKind, and list it in dumpFdKinds() below (order matters:
// the first kind whose claim() answers owns the fd).
import { listFds } from '../proc.js';
import { claimFd, facts } from './facts.js';
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
import type { DumpFdKind, DumpFdOptions, PlannedFd } from './types.js';

export { FileTable } from './table.js';
export type { DumpFdContext, DumpFdKind, DumpFdOptions, FdFacts, PlannedFd } from './types.js';

/** The kinds of one dump (fresh instances: describe() may collect image data). */
export function dumpFdKinds(): DumpFdKind[] {
  return [
    ttyKind(), pipeKind(), fifoKind(), memfdKind(), inetKind(), unixKind(),
    eventfdKind(), eventpollKind(), signalfdKind(), timerfdKind(), inotifyKind(), regKind(),
  ] as DumpFdKind[];
}

/**
 * Looks at every fd of `pid` without touching the process. Returns the
 * planned fds, or the list of problems (one per unsupported fd).
 */
export function planFds(kinds: readonly DumpFdKind[], pid: number, opts: DumpFdOptions, proc: { sid: number; pgid: number }): { fds: PlannedFd[]; problems: string[] } {
  const fds: PlannedFd[] = [];
  const problems: string[] = [];
  for (const { fd, target } of listFds(pid)) {
    const f = facts(pid, fd, target, opts, proc);
    if (!f) continue;
    const r = claimFd(kinds, f);
    if (typeof r === 'string') problems.push(r);
    else fds.push(r);
  }
  return { fds, problems };
}

/** Tree-wide checks of each kind (a pipe's or socket's other end ...). */
export function checkTreeFds(kinds: readonly DumpFdKind[], fds: readonly PlannedFd[], pids: readonly number[], options: DumpFdOptions): string[] {
  const problems: string[] = [];
  for (const kind of kinds) {
    if (!kind.checkTree) continue;
    problems.push(...kind.checkTree(fds.filter((f) => f.kind === kind), { pids, options }));
  }
  return problems;
}

/** Writes every kind's own images. */
export async function writeFdImages(kinds: readonly DumpFdKind[], dir: import('../../images/index.js').ImageDir): Promise<void> {
  for (const k of kinds) if (k.writeImages) await k.writeImages(dir);
}

/** Tells every kind the dump is over (the tree keeps running or was killed); never throws. */
export function finishFdKinds(kinds: readonly DumpFdKind[], keepRunning: boolean): void {
  for (const k of kinds) {
    try {
      k.finish?.(keepRunning);
    } catch {
      /* best effort: the tree's fate is already decided */
    }
  }
}
