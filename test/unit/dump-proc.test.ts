// Pure parsing of the /proc files the dump reads, and the XSAVE → fpregs
// conversion, on fixed inputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { credsFromStatus, fpregsFromXstate, parseFdinfo, parseLimits, parseSmaps, parseStat, parseStatus, parseTimers } from '../../plugin/dump/index.js';

test('parseStat: comm with spaces and parentheses, mm fields', () => {
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
  fields[0] = 'S';
  const s = parseStat(`1234 (a (b) c) ${fields.join(' ')}\n`);
  assert.equal(s.pid, 1234);
  assert.equal(s.comm, 'a (b) c');
  assert.equal(s.state, 'S');
  assert.equal(s.ppid, 4);
  assert.equal(s.pgid, 5);
  assert.equal(s.sid, 6);
  assert.equal(s.startCode, 26n);
  assert.equal(s.envEnd, 51n);
  assert.equal(s.exitCode, 52);
});

test('parseSmaps: VMAs with flags, names and paths with spaces', () => {
  const text = [
    '55d0c0a00000-55d0c0a01000 r--p 00001000 fe:00 123   /usr/bin/my prog',
    'Size:                  4 kB',
    'VmFlags: rd mr mw me dw sd',
    '7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]',
    'Rss:                  12 kB',
    'VmFlags: rd wr mr mw me gd ac',
    '7f0000000000-7f0000001000 rw-s 00000000 00:01 99 /dev/zero (deleted)',
    'VmFlags: rd wr sh mr mw me ms sd',
  ].join('\n');
  const v = parseSmaps(text);
  assert.equal(v.length, 3);
  assert.equal(v[0]!.path, '/usr/bin/my prog');
  assert.equal(v[0]!.pgoff, 0x1000n);
  assert.equal(v[0]!.inode, 123);
  assert.ok(v[1]!.vmFlags.has('gd'));
  assert.equal(v[1]!.end - v[1]!.start, 0x21000n);
  assert.equal(v[2]!.perms, 'rw-s');
});

test('parseLimits: unlimited and numbers in RLIMIT order', () => {
  const text = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max file size             unlimited            unlimited            bytes
Max data size             unlimited            unlimited            bytes
Max stack size            8388608              unlimited            bytes
Max open files            1024                 524288               files
`;
  const l = parseLimits(text);
  assert.equal(l.length, 5);
  assert.equal(l[0]!.cur, 0xffffffffffffffffn);
  assert.deepEqual(l[3], { cur: 8388608n, max: 0xffffffffffffffffn });
  assert.deepEqual(l[4], { cur: 1024n, max: 524288n });
});

test('parseFdinfo and creds from status', () => {
  assert.deepEqual(parseFdinfo('pos:\t4321\nflags:\t02100002\nmnt_id:\t25\nino:\t7\n'), { pos: 4321n, flags: 0o2100002, mntId: 25 });
  const st = parseStatus('Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t10 20 \nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n');
  const c = credsFromStatus(st, 0);
  assert.deepEqual([c.uid, c.euid, c.suid, c.fsuid, c.gid, c.egid, c.sgid, c.fsgid], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(c.groups, [10, 20]);
  assert.deepEqual(c.cap_prm, [0xffffffff, 0x1ff]);
  assert.equal(c.no_new_privs, 1);
});

test('fpregsFromXstate: FXSAVE fields and XSAVE components by XCR0', () => {
  const xs = Buffer.alloc(2696);
  xs.writeUInt16LE(0x37f, 0); // cwd
  xs.writeUInt32LE(0x1f80, 24); // mxcsr
  xs.writeUInt32LE(0xdeadbeef, 160); // xmm0 low word
  xs.writeBigUInt64LE(0xe7n, 464); // XCR0: x87 SSE AVX opmask ZMM_Hi256 Hi16_ZMM
  xs.writeBigUInt64LE(0x7n, 512); // xstate_bv
  xs.writeUInt32LE(0x12345678, 576); // ymmh
  xs.writeBigUInt64LE(0x55n, 1088); // k0
  const f = fpregsFromXstate(xs);
  assert.equal(f.cwd, 0x37f);
  assert.equal(f.mxcsr, 0x1f80);
  assert.equal(f.st_space.length, 32);
  assert.equal(f.xmm_space.length, 64);
  assert.equal(f.xmm_space[0], 0xdeadbeef);
  assert.equal(f.xsave!.xstate_bv, 7n);
  assert.equal(f.xsave!.ymmh_space.length, 64);
  assert.equal(f.xsave!.ymmh_space[0], 0x12345678);
  assert.equal(f.xsave!.opmask_reg.length, 8);
  assert.equal(f.xsave!.opmask_reg[0], 0x55n);
  assert.equal(f.xsave!.zmm_upper.length, 64);
  assert.equal(f.xsave!.hi16_zmm.length, 128);
  assert.deepEqual(f.xsave!.bndreg_state, [], 'MPX not in XCR0');
  assert.deepEqual(f.xsave!.pkru, [], 'PKRU not in XCR0');
});

test('parseTimers: /proc/PID/timers entries in id order, notify kinds, 64-bit sival, CPU clocks', () => {
  const text = [
    'ID: 4', 'signal: 37/0000000000000063', 'notify: signal/tid.4321', 'ClockID: 1',
    'ID: 1', 'signal: 35/5eed0000cafe1234', 'notify: signal/pid.4321', 'ClockID: -6',
    'ID: 2', 'signal: 14/0000000000000002', 'notify: none/pid.4321', 'ClockID: 0',
    '',
  ].join('\n');
  const t = parseTimers(text);
  assert.deepEqual(t.map((x) => x.id), [1, 2, 4]);
  assert.deepEqual(t[0], { id: 1, signo: 35, sival: 0x5eed0000cafe1234n, notify: 0, notifyPid: 4321, clockId: -6 });
  assert.equal(t[1]!.notify, 1);
  assert.equal(t[2]!.notify, 4, 'SIGEV_SIGNAL | SIGEV_THREAD_ID');
  assert.equal(t[2]!.notifyPid, 4321);
  assert.deepEqual(parseTimers(''), []);
  assert.throws(() => parseTimers('ID: 1\nsignal: x\n'), /malformed/);
  assert.throws(() => parseTimers('signal: 14/0\n'), /before ID/);
  assert.throws(() => parseTimers('ID: 1\nsignal: 14/0\n'), /malformed/);
});
