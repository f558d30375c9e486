import { test } from 'node:test';
import assert from 'node:assert/strict';
import { capList, capWordsToSet, parseStatusCreds, validateKernelState, wantedCaps } from '../../plugin/restore/creds.js';
import type { ProcessPlan, RestorePlan } from '../../plugin/restore/plan.js';
import type { CoreEntry, CredsEntry } from '../../plugin/images/index.js';
import { ImageError } from '../../plugin/errors.js';

function creds(over: Partial<CredsEntry> = {}): CredsEntry {
  return {
    uid: 0, gid: 0, euid: 0, egid: 0, suid: 0, sgid: 0, fsuid: 0, fsgid: 0,
    cap_inh: [0, 0], cap_prm: [0xffffffff, 0x1ff], cap_eff: [0xffffffff, 0x1ff], cap_bnd: [0xffffffff, 0xffffffff],
    secbits: 0, groups: [], cap_amb: [0, 0], ...over,
  };
}

test('capability words: low word first, unsigned', () => {
  assert.equal(capWordsToSet([0x420, 0]), 0x420n);
  assert.equal(capWordsToSet([0xffffffff, 0x1ff]), 0x1ffffffffffn);
  assert.equal(capWordsToSet([-1, 1]), 0x1ffffffffn, 'a word read as signed int32 still counts as unsigned');
  assert.equal(capList(0x1000400n), 'cap_net_bind_service(10), cap_sys_resource(24)');
});

test('wanted caps are cut to cap_last_cap; bits above it are reported (bounding set excepted)', () => {
  const w = wantedCaps(creds({ cap_prm: [0x1, 0x800], cap_amb: [0, 0x400] }), 40);
  assert.equal(w.prm, 1n);
  assert.equal(w.amb, 0n);
  assert.equal(w.unknown, (1n << 43n) | (1n << 42n));
  assert.equal(w.bnd, (1n << 41n) - 1n, 'the all-ones bounding set of CRIU images means everything known');
});

test('/proc status creds lines', () => {
  const s = parseStatusCreds('Name:\tx\nUid:\t1000\t1001\t1002\t1000\nGid:\t10\t11\t12\t10\nGroups:\t27 1020 \nCapInh:\t0000000000000401\nCapPrm:\t0000000000002421\nCapEff:\t0000000000000420\nCapBnd:\t000001ffb7bfffff\nCapAmb:\t0000000000000400\nNoNewPrivs:\t1\n');
  assert.deepEqual(s.uid, [1000, 1001, 1002, 1000]);
  assert.deepEqual(s.groups, [27, 1020]);
  assert.equal(s.eff, 0x420n);
  assert.equal(s.bnd, 0x1ffb7bfffffn);
  assert.equal(s.noNewPrivs, 1);
  assert.deepEqual(parseStatusCreds('Groups:\t\n').groups, []);
});

function plan(leader: Partial<CoreEntry['thread_core']> & object, second?: Partial<CoreEntry['thread_core']> & object, tc: Partial<NonNullable<CoreEntry['tc']>> = {}): RestorePlan {
  const core = (th: object, withTc: boolean): CoreEntry => ({
    mtype: 1,
    thread_core: { futex_rla: 0n, futex_rla_len: 0, ...th },
    ...(withTc ? { tc: { task_state: 1, exit_code: 0, personality: 0, flags: 0, blk_sigset: 0n, comm: 'x', sigactions: [], ...tc } } : {}),
  } as CoreEntry);
  const threads = [{ tid: 10, core: core(leader, true) }];
  if (second) threads.push({ tid: 11, core: core(second, false) });
  const p = { pid: 10, state: 1, threads } as unknown as ProcessPlan;
  return { dir: '/img', processes: [p], byPid: new Map([[10, p]]), shmem: [], fds: undefined as unknown as RestorePlan['fds'], locks: undefined as unknown as RestorePlan['locks'], ghosts: undefined as unknown as RestorePlan['ghosts'] };
}

test('validation: creds on every thread if the leader has them; siginfo size and number; rlimit order', () => {
  assert.doesNotThrow(() => validateKernelState(plan({ creds: creds() }, { creds: creds() })));
  assert.doesNotThrow(() => validateKernelState(plan({}, {})), 'no creds at all: left as the restorer\'s');
  assert.throws(() => validateKernelState(plan({ creds: creds() }, {})), (e: unknown) => e instanceof ImageError && /core-11\.img: thread 11 has no creds/.test(e.message));
  const si = (len: number, signo: number): { siginfo: Buffer } => {
    const b = Buffer.alloc(len);
    if (len >= 4) b.writeInt32LE(signo, 0);
    return { siginfo: b };
  };
  assert.throws(() => validateKernelState(plan({ signals_p: { signals: [si(120, 10)] } })), /core-10\.img: per-thread pending signal 0: siginfo is 120 bytes, not 128/);
  assert.throws(() => validateKernelState(plan({}, undefined, { signals_s: { signals: [si(128, 65)] } })), /shared pending signal 0: signal number 65 is out of range/);
  assert.throws(() => validateKernelState(plan({}, undefined, { rlimits: { rlimits: [{ cur: 0n, max: 0n }, { cur: 10n, max: 5n }] } })), /RLIMIT_FSIZE: soft limit 10 is above the hard limit 5/);
  assert.throws(() => validateKernelState(plan({ creds: creds({ groups: new Array(5000).fill(1) }) })), /5000 supplementary groups: at most \d+ can be restored/);
});
