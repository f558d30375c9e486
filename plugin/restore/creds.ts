// The last kernel state of a restored process, applied by syscalls injected
// into its own threads in CRIU's restorer order, after everything that needs
// the restorer's privileges (clone3 set_tid, PR_SET_MM_MAP, userfaultfd) and
// before the registers are set: personality, pending signals (shared queue
// from the leader, per-thread queues from each thread), rlimits, then creds
// (groups, ids, capability sets, bounding set, ambient set, securebits,
// no_new_privs), and what a change of creds resets in the kernel: the
// dumpable flag and the parent-death signal.
import { readFileSync } from 'node:fs';
import { Errno, ImageError, UserError, errnoName } from '../errors.js';
import type { CoreEntry, CredsEntry, RlimitEntry, SiginfoEntry } from '../images/index.js';
import { parseLimits } from '../dump/proc.js';
import { addon } from '../native/addon.js';
import type { ProcessPlan, RestorePlan } from './plan.js';
import { PR, SYS } from '../inject/constants.js';
import { restoreSched } from './sched.js';
import { NR, type RemoteTask } from './task.js';

const PR_CAP_AMBIENT_RAISE = 2;

const SECBIT_NO_SETUID_FIXUP = 1 << 2;
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
const SIGINFO_SIZE = 128;
const RLIM_NLIMITS = 16;
const RLIM_INFINITY = 0xffffffffffffffffn;

// Scratch area used here: after the restorer's own structures (process.ts),
// before the clone3 arguments at 0x3000.
const SCR_DATA = 0x2100n;
const SCR_DATA_SIZE = 0x3000 - 0x2100;
/** Supplementary groups that fit in the scratch area (4 bytes each). */
export const MAX_GROUPS = SCR_DATA_SIZE / 4;

export const RLIMIT_NAMES = [
  'RLIMIT_CPU', 'RLIMIT_FSIZE', 'RLIMIT_DATA', 'RLIMIT_STACK', 'RLIMIT_CORE', 'RLIMIT_RSS', 'RLIMIT_NPROC',
  'RLIMIT_NOFILE', 'RLIMIT_MEMLOCK', 'RLIMIT_AS', 'RLIMIT_LOCKS', 'RLIMIT_SIGPENDING', 'RLIMIT_MSGQUEUE',
  'RLIMIT_NICE', 'RLIMIT_RTPRIO', 'RLIMIT_RTTIME',
] as const;

const CAP_NAMES = [
  'chown', 'dac_override', 'dac_read_search', 'fowner', 'fsetid', 'kill', 'setgid', 'setuid', 'setpcap',
  'linux_immutable', 'net_bind_service', 'net_broadcast', 'net_admin', 'net_raw', 'ipc_lock', 'ipc_owner',
  'sys_module', 'sys_rawio', 'sys_chroot', 'sys_ptrace', 'sys_pacct', 'sys_admin', 'sys_boot', 'sys_nice',
  'sys_resource', 'sys_time', 'sys_tty_config', 'mknod', 'lease', 'audit_write', 'audit_control', 'setfcap',
  'mac_override', 'mac_admin', 'syslog', 'wake_alarm', 'block_suspend', 'audit_read', 'perfmon', 'bpf',
  'checkpoint_restore',
];

/** "cap_sys_resource(24), cap_mknod(27)" for the bits of `set`. */
export function capList(set: bigint): string {
  const out: string[] = [];
  for (let i = 0; i < 64; i++) if (set & (1n << BigInt(i))) out.push(`cap_${CAP_NAMES[i] ?? 'unknown'}(${i})`);
  return out.join(', ');
}

/** A capability set from CRIU's 32-bit words (low word first). */
export function capWordsToSet(words: readonly number[]): bigint {
  let v = 0n;
  words.forEach((w, i) => {
    v |= BigInt(w >>> 0) << BigInt(32 * i);
  });
  return v;
}

function fmtLimit(v: bigint): string {
  return v === RLIM_INFINITY ? 'unlimited' : String(v);
}

let lastCapCache: number | undefined;
/** Highest capability number this kernel knows. */
export function capLastCap(): number {
  lastCapCache ??= Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8').trim());
  return lastCapCache;
}

/** Checks the creds, rlimits and pending signals of every live process before anything is created. */
export function validateKernelState(plan: RestorePlan): void {
  for (const p of plan.processes) {
    if (p.state === 2) continue;
    const leader = p.threads[0]!;
    const tc = leader.core.tc!;
    const coreImg = (tid: number): string => `${plan.dir}/core-${tid}.img`;
    const rl = tc.rlimits?.rlimits ?? [];
    rl.slice(0, RLIM_NLIMITS).forEach((r, i) => {
      if (BigInt.asUintN(64, r.cur) > BigInt.asUintN(64, r.max)) {
        throw new ImageError(coreImg(p.pid), undefined, `${RLIMIT_NAMES[i]}: soft limit ${fmtLimit(r.cur)} is above the hard limit ${fmtLimit(r.max)}`);
      }
    });
    checkSiginfos(tc.signals_s?.signals ?? [], coreImg(p.pid), 'shared');
    const leaderHasCreds = leader.core.thread_core?.creds !== undefined;
    for (const t of p.threads) {
      const th = t.core.thread_core!;
      checkSiginfos(th.signals_p?.signals ?? [], coreImg(t.tid), 'per-thread');
      if (leaderHasCreds && !th.creds) throw new ImageError(coreImg(t.tid), undefined, `thread ${t.tid} has no creds while its leader ${p.pid} has`);
      const c = th.creds;
      if (c && c.groups.length > MAX_GROUPS) {
        throw new UserError(`pid ${p.pid} tid ${t.tid}: ${c.groups.length} supplementary groups: at most ${MAX_GROUPS} can be restored`);
      }
    }
  }
}

function checkSiginfos(list: SiginfoEntry[], image: string, what: string): void {
  list.forEach((s, i) => {
    if (s.siginfo.length !== SIGINFO_SIZE) throw new ImageError(image, undefined, `${what} pending signal ${i}: siginfo is ${s.siginfo.length} bytes, not ${SIGINFO_SIZE}`);
    const signo = s.siginfo.readInt32LE(0);
    if (signo < 1 || signo > 64) throw new ImageError(image, undefined, `${what} pending signal ${i}: signal number ${signo} is out of range`);
  });
}

/** Creds as /proc/PID/task/TID/status shows them. */
export interface StatusCreds {
  uid: number[];
  gid: number[];
  groups: number[];
  inh: bigint;
  prm: bigint;
  eff: bigint;
  bnd: bigint;
  amb: bigint;
  noNewPrivs: number;
}

export function parseStatusCreds(text: string): StatusCreds {
  const m = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  const nums = (k: string): number[] => (m.get(k) ?? '').split(/\s+/).filter(Boolean).map(Number);
  const cap = (k: string): bigint => BigInt(`0x${m.get(k) ?? '0'}`);
  return {
    uid: nums('Uid'), gid: nums('Gid'), groups: nums('Groups'), inh: cap('CapInh'), prm: cap('CapPrm'), eff: cap('CapEff'),
    bnd: cap('CapBnd'), amb: cap('CapAmb'), noNewPrivs: Number(m.get('NoNewPrivs') ?? '0'),
  };
}

function readStatusCreds(t: RemoteTask): StatusCreds {
  return parseStatusCreds(readFileSync(`/proc/${t.pid}/task/${t.tid}/status`, 'utf8'));
}

/** The capability sets an image asks for, cut to what this kernel knows. */
export interface WantedCaps {
  inh: bigint;
  prm: bigint;
  eff: bigint;
  bnd: bigint;
  amb: bigint;
  /** Bits the image has above cap_last_cap (dropped). */
  unknown: bigint;
}

export function wantedCaps(c: CredsEntry, lastCap: number): WantedCaps {
  const known = (1n << BigInt(lastCap + 1)) - 1n;
  const sets = [c.cap_inh, c.cap_prm, c.cap_eff, c.cap_bnd, c.cap_amb].map(capWordsToSet);
  const [inh, prm, eff, bnd, amb] = sets.map((s) => s & known) as [bigint, bigint, bigint, bigint, bigint];
  // The bounding set is "everything" above cap_last_cap in CRIU's words: only the other sets matter.
  const unknown = (sets[0]! | sets[1]! | sets[2]! | sets[4]!) & ~known;
  return { inh, prm, eff, bnd, amb, unknown };
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  const x = [...a].sort((p, q) => p - q);
  const y = [...b].sort((p, q) => p - q);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** Failing injected call in the restore of creds/signals/rlimits: one line naming pid, tid, what and the errno code. */
function failed(pid: number, tid: number, what: string, r: bigint, hint = ''): never {
  throw new UserError(`${who(pid, tid)}: cannot restore ${what}: ${errnoName(Number(-r))}${hint}`);
}

function who(pid: number, tid: number): string {
  return pid === tid ? `pid ${pid}` : `pid ${pid} tid ${tid}`;
}

function isErr(r: bigint): boolean {
  return r < 0n && r > -4096n;
}

/** One restored thread: the injection handle and its image. */
export interface ThreadRef {
  task: RemoteTask;
  /** Tid inside the restored tree (image tid). */
  tid: number;
  core: CoreEntry;
}

function personality(th: ThreadRef, pid: number, want: number): void {
  const cur = parseInt(readFileSync(`/proc/${th.task.pid}/task/${th.task.tid}/personality`, 'utf8').trim(), 16);
  if (cur === want) return;
  const r = th.task.raw(SYS.personality, want);
  if (isErr(r)) failed(pid, th.tid, `personality 0x${want.toString(16)}`, r);
}

/**
 * Re-queues pending signals in dump order. Injected into the receiving
 * thread itself, so the kernel accepts any si_code (its "no forged kernel
 * or kill() signals" rule only applies to other targets). All signals are
 * blocked meanwhile (the final mask is set with the registers), so nothing is
 * delivered while the restorer still drives the thread.
 */
function queueSignals(th: ThreadRef, pid: number, list: SiginfoEntry[], shared: boolean): void {
  for (const s of list) {
    const signo = s.siginfo.readInt32LE(0);
    th.task.write(th.task.scratch + SCR_DATA, s.siginfo);
    const a = th.task.scratch + SCR_DATA;
    const r = shared ? th.task.raw(SYS.rt_sigqueueinfo, pid, signo, a) : th.task.raw(SYS.rt_tgsigqueueinfo, pid, th.tid, signo, a);
    if (isErr(r)) failed(pid, th.tid, `${shared ? 'shared' : 'per-thread'} pending signal ${signo} (${shared ? 'rt_sigqueueinfo' : 'rt_tgsigqueueinfo'})`, r);
  }
}

/** prlimit64 on itself for every limit that differs from what the stub inherited. */
function restoreRlimits(leader: ThreadRef, pid: number, want: RlimitEntry[]): void {
  const cur = parseLimits(readFileSync(`/proc/${leader.task.pid}/limits`, 'utf8'));
  for (let i = 0; i < Math.min(want.length, RLIM_NLIMITS); i++) {
    const w = { cur: BigInt.asUintN(64, want[i]!.cur), max: BigInt.asUintN(64, want[i]!.max) };
    const c = cur[i];
    if (c && c.cur === w.cur && c.max === w.max) continue;
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(w.cur, 0);
    b.writeBigUInt64LE(w.max, 8);
    leader.task.write(leader.task.scratch + SCR_DATA, b);
    const r = leader.task.raw(SYS.prlimit64, 0, i, leader.task.scratch + SCR_DATA, 0);
    if (isErr(r)) {
      const raising = c !== undefined && w.max > c.max;
      const hint = Number(-r) === Errno.EPERM && raising ? ` (raising the hard limit above the current ${fmtLimit(c.max)} needs CAP_SYS_RESOURCE)` : '';
      failed(pid, pid, `${RLIMIT_NAMES[i]} (soft ${fmtLimit(w.cur)}, hard ${fmtLimit(w.max)}): prlimit64`, r, hint);
    }
  }
}

function capset(th: ThreadRef, pid: number, eff: bigint, prm: bigint, inh: bigint, what: string): void {
  const b = Buffer.alloc(8 + 24);
  b.writeUInt32LE(LINUX_CAPABILITY_VERSION_3, 0);
  b.writeInt32LE(0, 4);
  for (let i = 0; i < 2; i++) {
    const sh = BigInt(32 * i);
    b.writeUInt32LE(Number((eff >> sh) & 0xffffffffn), 8 + 12 * i);
    b.writeUInt32LE(Number((prm >> sh) & 0xffffffffn), 12 + 12 * i);
    b.writeUInt32LE(Number((inh >> sh) & 0xffffffffn), 16 + 12 * i);
  }
  const a = th.task.scratch + SCR_DATA;
  th.task.write(a, b);
  const r = th.task.raw(SYS.capset, a, a + 8n);
  if (isErr(r)) failed(pid, th.tid, `${what}: capset`, r);
}

/**
 * Creds of one thread (creds are per thread in the kernel). Order, so that
 * each step still has the capability it needs: groups; SECBIT_NO_SETUID_FIXUP
 * so changing ids keeps the capability sets; gids then uids (fs ids last, as
 * setres*id resets them); the inheritable set and the ambient set while
 * CAP_SETPCAP is still effective; the bounding set; the securebits; finally
 * the dumped permitted/effective/inheritable sets (only ever a reduction) and
 * no_new_privs. Checked afterwards against /proc.
 */
function restoreCreds(th: ThreadRef, pid: number, c: CredsEntry, log: (line: string) => void): void {
  const t = th.task;
  const call = (what: string, nr: number, ...args: (bigint | number)[]): bigint => {
    const r = t.raw(nr, ...args);
    if (isErr(r)) failed(pid, th.tid, what, r);
    return r;
  };
  const lastCap = capLastCap();
  const want = wantedCaps(c, lastCap);
  if (want.unknown) log(`${who(pid, th.tid)}: dropping capabilities this kernel does not know: ${capList(want.unknown)}`);
  const before = readStatusCreds(t);
  const ids = (a: number[]): string => a.join('/');
  const same = ids(before.uid) === ids([c.uid, c.euid, c.suid, c.fsuid]) && ids(before.gid) === ids([c.gid, c.egid, c.sgid, c.fsgid])
    && sameIds(before.groups, c.groups) && before.inh === want.inh && before.prm === want.prm && before.eff === want.eff
    && before.amb === want.amb && before.bnd === want.bnd && before.noNewPrivs === (c.no_new_privs ? 1 : 0);
  // The usual case (a root process restored by root): only the securebits can differ.
  if (same && t.raw(NR.prctl, PR.GET_SECUREBITS, 0, 0, 0, 0) === BigInt(c.secbits)) return;
  const missing = (want.prm | want.inh) & ~before.prm;
  if (missing) {
    throw new UserError(`${who(pid, th.tid)}: cannot restore capabilities ${capList(missing)}: the restorer does not hold them (EPERM)`);
  }
  const notInBnd = want.bnd & ~before.bnd;
  if (notInBnd) log(`${who(pid, th.tid)}: the bounding set cannot regain ${capList(notInBnd)} (the restorer lacks them)`);

  if (!sameIds(c.groups, before.groups)) {
    const g = Buffer.alloc(c.groups.length * 4);
    c.groups.forEach((v, i) => g.writeUInt32LE(v >>> 0, i * 4));
    if (g.length) t.write(t.scratch + SCR_DATA, g);
    call(`supplementary groups [${c.groups.join(' ')}]: setgroups`, NR.setgroups, c.groups.length, t.scratch + SCR_DATA);
  }
  call('securebits (SECBIT_NO_SETUID_FIXUP): prctl(PR_SET_SECUREBITS)', NR.prctl, PR.SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0);
  call(`gids ${c.gid}/${c.egid}/${c.sgid}: setresgid`, NR.setresgid, c.gid, c.egid, c.sgid);
  t.raw(SYS.setfsgid, c.fsgid);
  call(`uids ${c.uid}/${c.euid}/${c.suid}: setresuid`, NR.setresuid, c.uid, c.euid, c.suid);
  t.raw(SYS.setfsuid, c.fsuid);
  // setfs*id return the previous value, never an error: ask again with -1.
  const fsgid = Number(t.raw(SYS.setfsgid, 0xffffffff));
  const fsuid = Number(t.raw(SYS.setfsuid, 0xffffffff));
  if (fsuid !== c.fsuid || fsgid !== c.fsgid) {
    throw new UserError(`${who(pid, th.tid)}: cannot restore fsuid/fsgid ${c.fsuid}/${c.fsgid}: still ${fsuid}/${fsgid} (EPERM)`);
  }
  if (want.inh !== before.inh) capset(th, pid, before.eff, before.prm, want.inh, `inheritable capabilities ${capList(want.inh)}`);
  for (let cap = 0; cap <= lastCap; cap++) {
    if (want.amb & (1n << BigInt(cap))) call(`ambient capability ${capList(1n << BigInt(cap))}: prctl(PR_CAP_AMBIENT_RAISE)`, NR.prctl, PR.CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
  }
  for (let cap = 0; cap <= lastCap; cap++) {
    const bit = 1n << BigInt(cap);
    if (before.bnd & bit && !(want.bnd & bit)) call(`bounding set without ${capList(bit)}: prctl(PR_CAPBSET_DROP)`, NR.prctl, PR.CAPBSET_DROP, cap, 0, 0, 0);
  }
  call(`securebits 0x${c.secbits.toString(16)}: prctl(PR_SET_SECUREBITS)`, NR.prctl, PR.SET_SECUREBITS, c.secbits, 0, 0, 0);
  capset(th, pid, want.eff, want.prm, want.inh, 'capabilities');
  if (c.no_new_privs) call('no_new_privs: prctl(PR_SET_NO_NEW_PRIVS)', NR.prctl, PR.SET_NO_NEW_PRIVS, 1, 0, 0, 0);

  const after = readStatusCreds(t);
  const diffs: string[] = [];
  if (ids(after.uid) !== ids([c.uid, c.euid, c.suid, c.fsuid])) diffs.push(`uids ${ids(after.uid)}`);
  if (ids(after.gid) !== ids([c.gid, c.egid, c.sgid, c.fsgid])) diffs.push(`gids ${ids(after.gid)}`);
  if (!sameIds(after.groups, c.groups)) diffs.push(`groups ${after.groups.join(' ')}`);
  for (const k of ['inh', 'prm', 'eff', 'amb'] as const) if (after[k] !== want[k]) diffs.push(`cap ${k} 0x${after[k].toString(16)} (want 0x${want[k].toString(16)})`);
  if (after.bnd !== (want.bnd & before.bnd)) diffs.push(`cap bnd 0x${after.bnd.toString(16)}`);
  if (after.noNewPrivs !== (c.no_new_privs ? 1 : 0)) diffs.push(`no_new_privs ${after.noNewPrivs}`);
  const secbits = t.raw(NR.prctl, PR.GET_SECUREBITS, 0, 0, 0, 0);
  if (secbits !== BigInt(c.secbits)) diffs.push(`securebits 0x${secbits.toString(16)}`);
  if (diffs.length) throw new UserError(`${who(pid, th.tid)}: creds differ from the image after restore: ${diffs.join(', ')}`);
}

/** PR_SET_DUMPABLE, CRIU's way: 0 and 1 are set; 2 (suid_dumpable) cannot be, so it falls back to 0 unless already equal. */
function restoreDumpable(leader: ThreadRef, pid: number, want: number, log: (line: string) => void): void {
  const t = leader.task;
  if (want === 0 || want === 1) {
    const r = t.raw(NR.prctl, PR.SET_DUMPABLE, want, 0, 0, 0);
    if (isErr(r)) failed(pid, pid, `dumpable ${want}: prctl(PR_SET_DUMPABLE)`, r);
    return;
  }
  const cur = t.raw(NR.prctl, PR.GET_DUMPABLE, 0, 0, 0, 0);
  if (cur !== BigInt(want)) {
    log(`pid ${pid}: dumpable ${want} cannot be set with prctl (now ${cur}): set to 0`);
    const r = t.raw(NR.prctl, PR.SET_DUMPABLE, 0, 0, 0, 0);
    if (isErr(r)) failed(pid, pid, 'dumpable 0: prctl(PR_SET_DUMPABLE)', r);
  }
}

/**
 * Everything of this module for one process; `threads[0]` is the leader.
 * Runs after the address space, files, threads and per-thread state are
 * restored (and the userfaultfd is out), before the scratch area goes.
 */
export function restoreKernelState(p: ProcessPlan, threads: ThreadRef[], log: (line: string) => void): void {
  const leader = threads[0]!;
  const tc = leader.core.tc!;
  const pid = p.pid;
  // Personality changes how later mmap/mprotect treat PROT_READ: after the address space.
  for (const th of threads) personality(th, pid, tc.personality);
  for (const th of threads) addon.restoreSetSigmask(th.task.tid, 0xffffffffffffffffn);
  queueSignals(leader, pid, tc.signals_s?.signals ?? [], true);
  for (const th of threads) queueSignals(th, pid, th.core.thread_core!.signals_p?.signals ?? [], false);
  // After the signals: a lowered RLIMIT_SIGPENDING may be below what was queued before it was lowered.
  restoreRlimits(leader, pid, tc.rlimits?.rlimits ?? []);
  // Nice values and real-time policies need privileges the creds may drop.
  for (const th of threads) restoreSched(th.task, pid, th.tid, th.core.thread_core!);
  // Creds last: they drop the privileges everything above needed. Leader last.
  for (const th of [...threads.slice(1), leader]) {
    const c = th.core.thread_core!.creds;
    if (c) restoreCreds(th, pid, c, log);
  }
  // A change of ids resets the dumpable flag and the parent-death signal.
  if (p.mm.dumpable !== undefined) restoreDumpable(leader, pid, p.mm.dumpable, log);
  for (const th of threads) {
    const sig = th.core.thread_core!.pdeath_sig;
    if (sig) {
      const r = th.task.raw(NR.prctl, PR.SET_PDEATHSIG, sig, 0, 0, 0);
      if (isErr(r)) failed(pid, th.tid, `parent-death signal ${sig}: prctl(PR_SET_PDEATHSIG)`, r);
    }
  }
}
