// The long-lived holder of write-tracking userfaultfds between dump commands
// (native/helpers/lr-tracker.c) and the small record that finds it again:
// `lr-tracker.json` in the image directory of the round that armed or last
// scanned the tracking. A record is consumed (removed) by the next round, so
// only the newest directory of a chain can serve as the parent of a further
// incremental dump: the dirty bits it would rely on are re-armed each round.
import { spawn } from 'node:child_process';
import { closeSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { addon, helperPath } from '../native/addon.js';

export const TRACKER_FILE = 'lr-tracker.json';

export interface TrackerRecord {
  /** Pid of the lr-tracker process. */
  tracker: number;
  /** Its start time (clock ticks since boot, /proc/PID/stat field 22): guards against pid reuse. */
  trackerStart: string;
  /** Root of the tracked tree. */
  root: number;
  /** Tracked pid → the uffd's fd number inside the tracker. */
  fds: Record<string, number>;
}

/** Start time of `pid` in clock ticks since boot; undefined when it is gone. */
export function procStartTime(pid: number): bigint | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return BigInt(s.slice(s.lastIndexOf(')') + 2).split(' ')[19]!);
  } catch {
    return undefined;
  }
}

export function readTrackerRecord(dir: string): TrackerRecord | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, TRACKER_FILE), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const r = JSON.parse(text) as Partial<TrackerRecord>;
    if (!Number.isSafeInteger(r.tracker) || typeof r.trackerStart !== 'string' || !Number.isSafeInteger(r.root)
      || typeof r.fds !== 'object' || r.fds === null) return undefined;
    return r as TrackerRecord;
  } catch {
    return undefined;
  }
}

export function writeTrackerRecord(dir: string, rec: TrackerRecord): void {
  const tmp = join(dir, `.${TRACKER_FILE}.tmp`);
  writeFileSync(tmp, `${JSON.stringify(rec)}\n`);
  renameSync(tmp, join(dir, TRACKER_FILE));
}

export function removeTrackerRecord(dir: string): void {
  rmSync(join(dir, TRACKER_FILE), { force: true });
}

/** Why the record's tracker cannot be used, or undefined when it is the live tracker of `root`. */
export function trackerProblem(rec: TrackerRecord, root: number): string | undefined {
  if (rec.root !== root) return `it tracks pid ${rec.root}, not ${root}`;
  const st = procStartTime(rec.tracker);
  if (st === undefined || String(st) !== rec.trackerStart) return `tracker pid ${rec.tracker} is gone`;
  let argv: string[];
  try {
    argv = readFileSync(`/proc/${rec.tracker}/cmdline`, 'utf8').split('\0');
  } catch {
    return `tracker pid ${rec.tracker} is gone`;
  }
  if (!argv[0]?.endsWith('lr-tracker') || argv[2] !== String(root)) return `pid ${rec.tracker} is not the tracker of pid ${root}`;
  try {
    if (readFileSync(`/proc/${rec.tracker}/stat`, 'utf8').split(') ')[1]?.startsWith('Z')) return `tracker pid ${rec.tracker} has exited`;
  } catch {
    return `tracker pid ${rec.tracker} is gone`;
  }
  return undefined;
}

/** A copy (in this process) of the tracker's uffd for `pid`; throws when it cannot be had or is not a userfaultfd. */
export function takeTrackedUffd(rec: TrackerRecord, pid: number): number {
  const remote = rec.fds[String(pid)];
  if (remote === undefined) throw new Error(`pid ${pid} is not tracked`);
  const pidfd = addon.pidfdOpen(rec.tracker, 0);
  let fd: number;
  try {
    fd = addon.pidfdGetfd(pidfd, remote);
  } finally {
    closeSync(pidfd);
  }
  let what = '';
  try {
    what = readlinkSync(`/proc/self/fd/${fd}`);
  } catch { /* checked below */ }
  if (what !== 'anon_inode:[userfaultfd]') {
    closeSync(fd);
    throw new Error(`fd ${remote} of tracker ${rec.tracker} is not a userfaultfd (${what})`);
  }
  return fd;
}

/**
 * Starts a tracker for the tree rooted at `root` holding copies of `uffds`
 * (pid → fd of this process); resolves with its record once it holds them.
 */
export async function startTracker(root: number, uffds: ReadonlyMap<number, number>, timeoutS: number, waitMs = 5000): Promise<TrackerRecord> {
  const pids = [...uffds.keys()];
  const child = spawn(helperPath('lr-tracker'), [String(timeoutS), String(root), String(process.pid), ...pids.map((p) => String(uffds.get(p)))], {
    // Its own session: outlives this command and the terminal's signals.
    detached: true,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const rl = createInterface({ input: child.stdout! });
  try {
    const line = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`lr-tracker did not answer within ${waitMs} ms`)), waitMs);
      rl.once('line', (l) => { clearTimeout(timer); resolve(l); });
      child.once('error', (e) => { clearTimeout(timer); reject(e); });
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`lr-tracker exited with ${code} before answering`)); });
    });
    const words = line.trim().split(/\s+/);
    if (words[0] !== 'OK' || words.length !== pids.length + 1) throw new Error(`lr-tracker: ${line}`);
    const fds: Record<string, number> = {};
    pids.forEach((p, i) => { fds[String(p)] = Number(words[i + 1]); });
    const start = procStartTime(child.pid!);
    if (start === undefined) throw new Error('lr-tracker exited right after starting');
    return { tracker: child.pid!, trackerStart: String(start), root, fds };
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  } finally {
    rl.close();
    child.stdout!.destroy();
    child.unref();
  }
}

/**
 * Tells the record's tracker to exit (only if it is still that very
 * process) and waits, bounded, until it has: its uffds are closed then, so a
 * new pre-dump of the same process can register the ranges again (EBUSY
 * otherwise).
 */
export function retireTracker(rec: TrackerRecord, waitMs = 2000): void {
  if (trackerProblem(rec, rec.root) !== undefined) return;
  try {
    process.kill(rec.tracker, 'SIGTERM');
  } catch { /* exited meanwhile */ }
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + waitMs;
  while (trackerProblem(rec, rec.root) === undefined && Date.now() < deadline) Atomics.wait(nap, 0, 0, 2);
}
