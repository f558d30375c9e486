// restoreTimers' syscall sequence and id handling against a fake task (pure
// logic; the real kernel path is covered by integration/restore-timers):
// exact ids with PR_TIMER_CREATE_RESTORE_IDS, the id-order fallback without
// it, and clear errors when an id cannot be had.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PosixTimerEntry, TaskTimersEntry } from '../../plugin/images/index.js';
import { itimerValue, restoreTimers, sigevent, type TimerTask } from '../../plugin/restore/timers.js';

const SCRATCH = 0x10000n;

/** A fake leader: records syscalls; timer_create hands out ids like the kernel (exact or from a counter). */
function fakeTask(opts: { prctl: boolean; nextId?: number; taken?: number[] }) {
  const mem = new Map<bigint, Buffer>();
  const calls: string[] = [];
  let restoreIds = false;
  let next = opts.nextId ?? 0;
  const taken = new Set(opts.taken ?? []);
  const t: TimerTask = {
    pid: 4242,
    scratch: SCRATCH,
    write: (addr, data) => void mem.set(addr, Buffer.from(data)),
    read: (addr, len) => (mem.get(addr) ?? Buffer.alloc(len)).subarray(0, len),
    raw: (nr, ...a) => {
      const args = a.map((x) => BigInt(x));
      calls.push(`${nr}:${args.slice(0, 2).join(',')}`);
      if (nr === 157) {
        if (!opts.prctl) return -22n;
        restoreIds = args[1] === 1n;
        return 0n;
      }
      if (nr === 222) {
        const slot = args[2]!;
        const want = mem.get(slot)!.readInt32LE(0);
        const id = restoreIds ? want : next++;
        if (taken.has(id)) return -16n;
        taken.add(id);
        const b = Buffer.alloc(4);
        b.writeInt32LE(id, 0);
        mem.set(slot, b);
        return 0n;
      }
      return 0n;
    },
  };
  return { t, calls };
}

function timer(id: number, over: Partial<PosixTimerEntry> = {}): PosixTimerEntry {
  return {
    it_id: id, clock_id: 1, si_signo: 35, it_sigev_notify: 0, sival_ptr: 0x5eedn, overrun: 0,
    isec: 0n, insec: 0n, vsec: 1n, vnsec: 0n, ...over,
  };
}

function timers(posix: PosixTimerEntry[]): TaskTimersEntry {
  const off = { isec: 0n, iusec: 0n, vsec: 0n, vusec: 0n };
  return { real: { isec: 7n, iusec: 0n, vsec: 60n, vusec: 0n }, virt: off, prof: off, posix };
}

test('restoreTimers: exact ids with PR_TIMER_CREATE_RESTORE_IDS, armed after all are created, prctl switched off', () => {
  const { t, calls } = fakeTask({ prctl: true });
  restoreTimers(t, timers([timer(4), timer(1), timer(3, { vsec: 0n })]));
  assert.deepEqual(calls, [
    `38:0,${SCRATCH + 0x1000n}`, // setitimer(ITIMER_REAL); virt/prof are disarmed: skipped
    '157:77,1',
    '222:1,69888', '222:1,69888', '222:1,69888', // timer_create x3 (clock 1, sigevent at scratch+0x1100)
    '157:77,0',
    '223:1,0', '223:4,0', // timer_settime of the armed ones only, by id
  ]);
});

test('restoreTimers: an id already taken is a clear error naming the pid and the id', () => {
  const { t, calls } = fakeTask({ prctl: true, taken: [3] });
  assert.throws(() => restoreTimers(t, timers([timer(1), timer(3)])), /pid 4242: POSIX timer id 3 is already taken .*EBUSY/);
  assert.equal(calls.at(-1), '157:77,0', 'the prctl is switched off again');
});

test('restoreTimers: without the prctl, ids that come out in order are accepted, a gap is a clear error', () => {
  const ok = fakeTask({ prctl: false });
  restoreTimers(ok.t, timers([timer(1), timer(0)]));
  assert.ok(!ok.calls.includes('157:77,0'), 'nothing to switch off');
  const gap = fakeTask({ prctl: false });
  assert.throws(() => restoreTimers(gap.t, timers([timer(0), timer(2)])), /pid 4242: POSIX timer 2 cannot be recreated with its id \(the kernel gave 1;.*PR_TIMER_CREATE_RESTORE_IDS/);
  assert.equal(gap.calls.at(-1), '226:1', 'the wrong timer is deleted again');
});

test('sigevent: value, signo, notify and the SIGEV_THREAD_ID target in the kernel layout', () => {
  const b = sigevent(timer(2, { sival_ptr: 0x5eed0000cafe1234n, si_signo: 36, it_sigev_notify: 4, notify_thread_id: 777 }));
  assert.equal(b.length, 64);
  assert.equal(b.readBigUInt64LE(0), 0x5eed0000cafe1234n);
  assert.equal(b.readInt32LE(8), 36);
  assert.equal(b.readInt32LE(12), 4);
  assert.equal(b.readInt32LE(16), 777);
});

test('restoreTimers: a periodic timer dumped with no time left is armed for one interval (CRIU), a disarmed one is skipped', () => {
  assert.deepEqual(itimerValue({ isec: 0n, iusec: 100000n, vsec: 0n, vusec: 0n }), [0n, 100000n, 0n, 100000n]);
  assert.deepEqual(itimerValue({ isec: 0n, iusec: 100000n, vsec: 0n, vusec: 4100n }), [0n, 100000n, 0n, 4100n]);
  const { t, calls } = fakeTask({ prctl: true });
  const zero = { isec: 0n, iusec: 0n, vsec: 0n, vusec: 0n };
  restoreTimers(t, { real: { isec: 0n, iusec: 100000n, vsec: 0n, vusec: 0n }, virt: zero, prof: zero,
    posix: [timer(0, { isec: 2n, vsec: 0n }), timer(1, { vsec: 0n })] });
  assert.deepEqual(calls.filter((c) => c.startsWith('38:') || c.startsWith('223:')), [
    `38:0,${SCRATCH + 0x1000n}`, // ITIMER_REAL armed; virt/prof disarmed: skipped
    '223:0,0', // timer 0 (periodic, no time left) armed; timer 1 (disarmed) skipped
  ]);
});
