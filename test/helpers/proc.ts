// /proc observations for tests that watch processes they do not own the
// events of (the watchdog, a blocked fault): state, parent, fds, wait channel.
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { listChildren } from '../../plugin/dump/proc.js';

/** Polls `cond` (a /proc observation: no event exists for it) until true, bounded. */
export async function until(cond: () => boolean, ms: number, what: string | (() => string)): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export function statOf(pid: number): { state: string; ppid: number; comm: string } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0]!, ppid: Number(rest[1]), comm: s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')) };
  } catch {
    return undefined;
  }
}

/** Running (not gone, not a zombie). */
export function alive(pid: number): boolean {
  const st = statOf(pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X';
}

/** The lr-watchdog child of a daemon process. */
export function watchdogOf(daemon: number): number | undefined {
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const st = statOf(Number(e));
    if (st && st.ppid === daemon && st.comm === 'lr-watchdog') return Number(e);
  }
  return undefined;
}

/** How many userfaultfds `pid` holds open. */
export function uffdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[userfaultfd]';
      } catch {
        return false;
      }
    }).length;
  } catch {
    return 0;
  }
}

/** Blocked in the kernel waiting for a userfaultfd handler. */
export function blockedInFault(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/wchan`, 'utf8').includes('userfault') || readFileSync(`/proc/${pid}/stack`, 'utf8').includes('handle_userfault');
  } catch {
    return false;
  }
}

/** Every thread of `pid` is stopped (SIGSTOP took effect everywhere). */
export function allStopped(pid: number): boolean {
  try {
    return readdirSync(`/proc/${pid}/task`).every((tid) => {
      const s = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3) === 'T';
    });
  } catch {
    return false;
  }
}

function startTime(pid: number): string | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * Stops the original of a --pidns restore (it keeps its pids and shares the
 * verdict file with its copy) so that a verdict written afterwards can only
 * be the copy's. The returned check asserts the original is still there —
 * the same process, stopped, never exited — while the copy ran.
 */
export async function holdOriginal(pid: number): Promise<{ stillThere: () => string | undefined }> {
  const started = startTime(pid);
  process.kill(pid, 'SIGSTOP');
  await until(() => allStopped(pid), 10_000, `original ${pid} to stop`);
  return {
    stillThere: () => {
      const st = statOf(pid);
      if (st === undefined || startTime(pid) !== started) return `original ${pid} is gone`;
      if (st.state !== 'T') return `original ${pid} is in state ${st.state}, not stopped`;
      return undefined;
    },
  };
}

/** Every descendant of `pid`, each child before its own children (a process gone meanwhile has none). */
export function descendantsOf(pid: number): number[] {
  let kids: number[];
  try {
    kids = listChildren(pid);
  } catch {
    return [];
  }
  return kids.flatMap((k) => [k, ...descendantsOf(k)]);
}
