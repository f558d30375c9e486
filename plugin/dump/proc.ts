// Readers for the /proc files the dump needs: stat, status, smaps, auxv,
// limits, POSIX timers, task lists, children, fds and fdinfo. Pure parsing is separated
// from file access so unit tests can feed text.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** /proc/PID/stat fields after "(comm)": index 0 is field 3 (state). */
export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  pgid: number;
  sid: number;
  flags: number;
  nice: number;
  rtPriority: number;
  policy: number;
  startCode: bigint;
  endCode: bigint;
  startStack: bigint;
  startData: bigint;
  endData: bigint;
  startBrk: bigint;
  argStart: bigint;
  argEnd: bigint;
  envStart: bigint;
  envEnd: bigint;
  exitCode: number;
}

export function parseStat(text: string): ProcStat {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`malformed stat: ${text.slice(0, 60)}`);
  const f = text.slice(close + 2).trim().split(/\s+/); // f[0] = field 3
  const n = (field: number): number => Number(f[field - 3]);
  const b = (field: number): bigint => BigInt(f[field - 3] ?? '0');
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    state: f[0]!,
    ppid: n(4), pgid: n(5), sid: n(6), flags: n(9), nice: n(19), rtPriority: n(40), policy: n(41),
    startCode: b(26), endCode: b(27), startStack: b(28),
    startData: b(45), endData: b(46), startBrk: b(47), argStart: b(48), argEnd: b(49),
    envStart: b(50), envEnd: b(51), exitCode: n(52),
  };
}

export function readStat(pid: number, tid?: number): ProcStat {
  return parseStat(readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8'));
}

/** "Key:\tvalue" lines of /proc/PID/status. */
export function parseStatus(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

export function readStatus(pid: number, tid?: number): Map<string, string> {
  return parseStatus(readFileSync(tid === undefined ? `/proc/${pid}/status` : `/proc/${pid}/task/${tid}/status`, 'utf8'));
}

/** Thread ids of a process, leader first. */
export function listTasks(pid: number): number[] {
  const tids = readdirSync(`/proc/${pid}/task`).map(Number).filter((t) => t > 0);
  tids.sort((a, b) => (a === pid ? -1 : b === pid ? 1 : a - b));
  return tids;
}

/** Children of every thread of `pid` (CONFIG_PROC_CHILDREN). */
export function listChildren(pid: number): number[] {
  const out = new Set<number>();
  for (const tid of listTasks(pid)) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // thread gone
      throw e;
    }
    for (const c of text.trim().split(/\s+/)) if (c) out.add(Number(c));
  }
  return [...out].sort((a, b) => a - b);
}

/** One VMA from /proc/PID/smaps. */
export interface SmapsVma {
  start: bigint;
  end: bigint;
  perms: string; // "rw-p"
  pgoff: bigint;
  dev: string; // "fe:00"
  inode: number;
  path: string; // "" for anon, "[heap]" ...
  vmFlags: Set<string>;
}

export function parseSmaps(text: string): SmapsVma[] {
  const out: SmapsVma[] = [];
  let cur: SmapsVma | undefined;
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+)\s*(.*)$/.exec(line);
    if (m) {
      cur = {
        start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), perms: m[3]!, pgoff: BigInt(`0x${m[4]}`),
        dev: m[5]!, inode: Number(m[6]), path: m[7] ?? '', vmFlags: new Set(),
      };
      out.push(cur);
    } else if (cur && line.startsWith('VmFlags:')) {
      for (const f of line.slice(8).trim().split(/\s+/)) if (f) cur.vmFlags.add(f);
    }
  }
  return out;
}

export function readSmaps(pid: number): SmapsVma[] {
  return parseSmaps(readFileSync(`/proc/${pid}/smaps`, 'utf8'));
}

/**
 * The VMAs from /proc/PID/maps: as readSmaps without VmFlags (empty sets).
 * Cheap: smaps makes the kernel walk every page table entry for its Rss/Pss
 * counts (~15 ms CPU per 512 MiB resident), maps does not.
 */
export function readMaps(pid: number): SmapsVma[] {
  return parseSmaps(readFileSync(`/proc/${pid}/maps`, 'utf8'));
}

/** /proc/PID/auxv as 64-bit words, up to and including the first AT_NULL pair. */
export function readAuxv(pid: number): bigint[] {
  const b = readFileSync(`/proc/${pid}/auxv`);
  const words: bigint[] = [];
  for (let i = 0; i + 16 <= b.length; i += 16) {
    const type = b.readBigUInt64LE(i);
    words.push(type, b.readBigUInt64LE(i + 8));
    if (type === 0n) break;
  }
  return words;
}

const RLIM_INFINITY = 0xffffffffffffffffn;

/** /proc/PID/limits: the 16 resources in RLIMIT_* order (soft, hard). */
export function parseLimits(text: string): { cur: bigint; max: bigint }[] {
  const out: { cur: bigint; max: bigint }[] = [];
  for (const line of text.split('\n').slice(1)) {
    if (!line.trim()) continue;
    // "Max cpu time              unlimited            unlimited            seconds"
    const cols = line.slice(26).trim().split(/\s+/);
    const v = (s: string | undefined): bigint => (s === undefined || s === 'unlimited' ? RLIM_INFINITY : BigInt(s));
    out.push({ cur: v(cols[0]), max: v(cols[1]) });
  }
  return out;
}

export function readLimits(pid: number): { cur: bigint; max: bigint }[] {
  return parseLimits(readFileSync(`/proc/${pid}/limits`, 'utf8'));
}

/** Open fds of a process with their link targets. */
export function listFds(pid: number): { fd: number; target: string }[] {
  const out: { fd: number; target: string }[] = [];
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    const fd = Number(name);
    try {
      out.push({ fd, target: readlinkSync(`/proc/${pid}/fd/${name}`) });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; // closed meanwhile
    }
  }
  return out.sort((a, b) => a.fd - b.fd);
}

export interface FdInfo {
  pos: bigint;
  /** Status flags including O_CLOEXEC as the kernel reports them (octal in the file). */
  flags: number;
  mntId: number;
}

export function parseFdinfo(text: string): FdInfo {
  const m = parseStatus(text);
  return { pos: BigInt(m.get('pos') ?? '0'), flags: parseInt(m.get('flags') ?? '0', 8), mntId: Number(m.get('mnt_id') ?? '-1') };
}

export function readFdinfo(pid: number, fd: number): FdInfo {
  return parseFdinfo(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
}

/** Namespace inode number from a /proc/PID/ns/<name> link ("pid:[4026531836]"). */
export function nsId(pid: number | 'self', name: string): number {
  const m = /\[(\d+)\]/.exec(readlinkSync(`/proc/${pid}/ns/${name}`));
  return m ? Number(m[1]) : 0;
}

/** One POSIX timer as /proc/PID/timers shows it (values come from timer_gettime). */
export interface ProcTimer {
  id: number;
  signo: number;
  sival: bigint;
  /** sigev_notify as timer_create got it: SIGEV_SIGNAL 0, NONE 1, THREAD 2, | THREAD_ID 4. */
  notify: number;
  /** Pid (or tid with SIGEV_THREAD_ID) in the reader's pid namespace. */
  notifyPid: number;
  /** clockid_t (negative for CPU-time clocks of a given pid/thread). */
  clockId: number;
}

const NOTIFY_NAMES: Record<string, number> = { signal: 0, none: 1, thread: 2 };
const SIGEV_THREAD_ID = 4;

/**
 * /proc/PID/timers (kernel's show_timer): per timer "ID: n", "signal:
 * signo/sival_ptr(hex)", "notify: signal|none|thread / pid|tid . n",
 * "ClockID: n". Listed in no particular order; returned by id.
 */
export function parseTimers(text: string): ProcTimer[] {
  const out: ProcTimer[] = [];
  let cur: Partial<ProcTimer> | undefined;
  const done = (): void => {
    if (!cur) return;
    if (cur.id === undefined || cur.signo === undefined || cur.notify === undefined || cur.clockId === undefined) {
      throw new Error(`malformed /proc timers entry for timer ${cur.id ?? '?'}`);
    }
    out.push(cur as ProcTimer);
  };
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const m = /^(\w+):\s*(.*)$/.exec(line);
    if (!m) throw new Error(`malformed /proc timers line: ${line}`);
    const [, key, val] = m as unknown as [string, string, string];
    if (key === 'ID') {
      done();
      cur = { id: Number(val) };
    } else if (!cur) {
      throw new Error(`malformed /proc timers: ${key} before ID`);
    } else if (key === 'signal') {
      const s = /^(\d+)\/([0-9a-fA-F]+)$/.exec(val);
      if (!s) throw new Error(`malformed /proc timers signal line: ${val}`);
      cur.signo = Number(s[1]);
      cur.sival = BigInt(`0x${s[2]}`);
    } else if (key === 'notify') {
      const s = /^(\w+)\/(pid|tid)\.(\d+)$/.exec(val);
      const base = s ? NOTIFY_NAMES[s[1]!] : undefined;
      if (!s || base === undefined) throw new Error(`malformed /proc timers notify line: ${val}`);
      cur.notify = base | (s[2] === 'tid' ? SIGEV_THREAD_ID : 0);
      cur.notifyPid = Number(s[3]);
    } else if (key === 'ClockID') {
      cur.clockId = Number(val);
    }
  }
  done();
  return out.sort((a, b) => a.id - b.id);
}

/** The process's POSIX timers; none when the kernel has no CONFIG_POSIX_TIMERS. */
export function readTimers(pid: number): ProcTimer[] {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/timers`, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return parseTimers(text);
}
