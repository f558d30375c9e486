// plugin/inject against a real multi-threaded workload: seize/interrupt,
// registers (general, xstate, fs_base), signal state, rseq, robust list,
// injected syscalls (results, registers untouched), remote memory and
// pagemap, pidfd; the workload then runs on and verifies itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync } from 'node:fs';
import {
  cont, detach, findVdsoGadget, isEventStop, getFpregs, getRegs, getRobustList, getRseqConfiguration, getSigmask,
  getXstate, injectSyscall, injectSyscallChecked, injectSyscallFork, injectWithScratch, interrupt, PM, peekSiginfo,
  Pagemap, pidfdGetfd, pidfdOpen, PR, ProcMem, readMaps, readMemory, readMemoryv, seize, seizeAndStop, SIG,
  PTRACE_EVENT, PTRACE_O, SYS, waitExit, waitStop, writeMemory,
} from '../../plugin/inject/index.js';
import { isRoot, leakedFds, openFds, withTimeout } from '../helpers/env.js';
import { startWorkload } from '../helpers/workload.js';

const bit = (sig: number): bigint => 1n << BigInt(sig - 1);

test('inject: state of a stopped multi-threaded process, and injected syscalls', { skip: !isRoot && 'needs root' }, async () => {
  const fds = openFds();
  const wl = await startWorkload('workload-threads');
  try {
    const r = wl.report;
    const tids = [wl.pid, Number(r.tid_futex), Number(r.tid_sleep), Number(r.tid_regs)];
    // A blocked SIGHUP queued before the freeze must show up as pending.
    process.kill(wl.pid, 'SIGHUP');
    for (const t of tids) seizeAndStop(t);

    const regsTid = Number(r.tid_regs);
    const g = getRegs(regsTid);
    assert.equal(g.r12, BigInt(r.r12!));
    assert.equal(g.r13, BigInt(r.r13!));
    assert.equal(g.r14, BigInt(r.r14!));
    assert.equal(g.r15, BigInt(r.r15!));
    assert.equal(g.orig_rax, BigInt(SYS.futex));
    assert.equal(g.fs_base, BigInt(r.fsbase_regs!));
    assert.equal(getRegs(wl.pid).fs_base, BigInt(r.fsbase_main!));

    // xmm0 sits at byte 160 of the FXSAVE area (both regsets).
    const xs = getXstate(regsTid);
    assert.ok(xs.length >= 576 && xs.length % 64 === 0, `xstate size ${xs.length}`);
    assert.equal(xs.readBigUInt64LE(160), BigInt(r.xmm0_lo!));
    assert.equal(xs.readBigUInt64LE(168), BigInt(r.xmm0_hi!));
    assert.equal(getFpregs(regsTid).length, 512);
    assert.equal(getFpregs(regsTid).readBigUInt64LE(160), BigInt(r.xmm0_lo!));

    const mask = getSigmask(wl.pid);
    assert.equal(mask & (bit(SIG.USR1) | bit(SIG.USR2) | bit(SIG.HUP)), bit(SIG.USR1) | bit(SIG.USR2) | bit(SIG.HUP));
    assert.equal(getSigmask(Number(r.tid_sleep)) & bit(SIG.USR2), 0n);
    const shared = peekSiginfo(wl.pid, true);
    assert.equal(shared.length, 1);
    assert.equal(shared[0]!.length, 128);
    assert.equal(shared[0]!.readInt32LE(0), SIG.HUP);

    const rseq = getRseqConfiguration(regsTid);
    assert.ok(rseq.rseqAbiPointer > 0n);
    assert.equal(rseq.signature, 0x53053053);
    assert.equal(getRobustList(regsTid).len, 24);

    const gadget = findVdsoGadget(wl.pid);
    const before = getRegs(regsTid);
    assert.equal(injectSyscall(regsTid, SYS.gettid, [], { gadget }), BigInt(regsTid));
    assert.equal(injectSyscall(wl.pid, SYS.getpid, [], { gadget }), BigInt(wl.pid));
    assert.deepEqual(getRegs(regsTid), before, 'injection must leave every register as it was');
    assert.equal(injectSyscall(regsTid, SYS.close, [-1], { gadget }), -9n); // -EBADF, raw
    assert.throws(() => injectSyscallChecked(regsTid, SYS.close, [-1], { gadget }, 'close'), { code: 'EBADF' });

    // rt_sigaction(SIGUSR1, NULL, &old, 8): the workload's handler, SA_SIGINFO|SA_RESTART|SA_RESTORER.
    const sa = injectWithScratch(wl.pid, wl.pid, SYS.rt_sigaction, 32, (a) => [SIG.USR1, 0, a, 8], { gadget });
    assert.equal(sa.result, 0n);
    assert.notEqual(sa.data.readBigUInt64LE(0), 0n);
    assert.equal(sa.data.readBigUInt64LE(8) & 0x14000004n, 0x14000004n);
    assert.equal(sa.data.readBigUInt64LE(24), bit(SIG.USR2));
    const tidAddr = injectWithScratch(wl.pid, regsTid, SYS.prctl, 8, (a) => [PR.GET_TID_ADDRESS, a, 0, 0, 0], { gadget });
    assert.equal(tidAddr.result, 0n);
    assert.notEqual(tidAddr.data.readBigUInt64LE(0), 0n);

    // Remote memory: read/write through both paths, pagemap of the stack.
    const stack = readMaps(wl.pid).find((m) => m.path === '[stack]')!;
    const addr = (getRegs(wl.pid).rsp - 4096n) & ~4095n;
    const orig = readMemory(wl.pid, addr, 64);
    writeMemory(wl.pid, addr, Buffer.alloc(64, 0xab));
    const mem = new ProcMem(wl.pid, true);
    try {
      assert.deepEqual(mem.read(addr, 64), Buffer.alloc(64, 0xab));
      mem.write(addr, orig);
    } finally {
      mem.close();
    }
    assert.deepEqual(readMemory(wl.pid, addr, 64), orig);
    const pm = new Pagemap(wl.pid);
    try {
      const e = pm.read(stack.end - 4096n, 1);
      assert.equal(e.length, 1);
      assert.ok((e[0]! & PM.PRESENT) !== 0n, 'top stack page is present');
    } finally {
      pm.close();
    }

    const pidfd = pidfdOpen(wl.pid);
    const dupFd = pidfdGetfd(pidfd, 2);
    closeSync(dupFd);
    closeSync(pidfd);

    // Interrupt again while already stopped: the interrupt is reported at the
    // next resume, as a PTRACE_EVENT_STOP right away (not a signal, not a run).
    interrupt(wl.pid);
    cont(wl.pid, 0);
    const again = waitStop(wl.pid, 10_000);
    assert.ok(isEventStop(again), `a second interrupt stop after the resume: ${JSON.stringify(again)}`);
    for (const t of tids) detach(t);
    wl.go();
    const code = await withTimeout(wl.exited, 20000, 'workload exit');
    assert.equal(wl.result(), 'ok');
    assert.equal(code, 0);
  } finally {
    await wl.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('inject: errors carry code, errno and syscall', { skip: !isRoot && 'needs root' }, async () => {
  assert.throws(() => seize(0x3ffffff0), (e: NodeJS.ErrnoException) => e.code === 'ESRCH' && e.syscall === 'ptrace(PTRACE_SEIZE)');
  const wl = await startWorkload('workload-threads');
  try {
    seizeAndStop(wl.pid);
    assert.throws(() => seize(wl.pid), { code: 'EPERM' });
    assert.throws(() => waitStop(wl.pid, 50), { code: 'ETIMEDOUT' });
    assert.throws(() => readMemory(wl.pid, 0x1000n, 16), { code: 'EFAULT' });
    detach(wl.pid);
  } finally {
    await wl.dispose();
  }
});

test('inject: trampoline mode (0f 05 cc), batched iovecs beyond 1024', { skip: !isRoot && 'needs root' }, async () => {
  const wl = await startWorkload('workload-mem', ['2']);
  try {
    seizeAndStop(wl.pid);
    try {
      const gadget = findVdsoGadget(wl.pid);
      // A page of our own in the target holding "syscall; int3", as a restorer uses.
      const PROT_RWX = 7, MAP_PRIVATE_ANON = 0x22;
      const page = injectSyscallChecked(wl.pid, SYS.mmap, [0, 4096, PROT_RWX, MAP_PRIVATE_ANON, -1, 0], { gadget }, 'mmap');
      writeMemory(wl.pid, page, Buffer.from([0x0f, 0x05, 0xcc]));
      const before = getRegs(wl.pid);
      assert.equal(injectSyscall(wl.pid, SYS.getpid, [], { gadget: page, trap: true }), BigInt(wl.pid));
      assert.deepEqual(getRegs(wl.pid), before);
      // (Unmapping it through itself would fault on the int3: use the vDSO's.)
      assert.equal(injectSyscallChecked(wl.pid, SYS.munmap, [page, 4096], { gadget }, 'munmap'), 0n);
      assert.ok(!readMaps(wl.pid).some((m) => m.start === page), 'trampoline unmapped');

      // 3000 small ranges inside the 2 MiB anon region: three process_vm_readv batches.
      const [a] = wl.report.anon!.split(':');
      const ranges = Array.from({ length: 3000 }, (_, i) => ({ addr: BigInt(a!) + BigInt(i * 640), len: 64 }));
      const v = readMemoryv(wl.pid, ranges);
      assert.equal(v.bytes, 3000 * 64);
      for (const i of [0, 1025, 2999]) assert.ok(v.buffer.subarray(i * 64, i * 64 + 64).equals(readMemory(wl.pid, ranges[i]!.addr, 64)));
    } finally {
      detach(wl.pid);
    }
    wl.go();
    assert.equal(await withTimeout(wl.exited, 20000, 'workload exit'), 0);
    assert.equal(wl.result(), 'ok');
  } finally {
    await wl.dispose();
  }
});

test('inject: an injected fork reports its child, left in its initial stop and traced', { skip: !isRoot && 'needs root' }, async () => {
  const fds = openFds();
  const wl = await startWorkload('workload-mem', ['2']);
  try {
    seizeAndStop(wl.pid, PTRACE_O.TRACEFORK | PTRACE_O.TRACECLONE);
    let child = 0;
    try {
      const gadget = findVdsoGadget(wl.pid);
      const before = getRegs(wl.pid);
      const maskBefore = getSigmask(wl.pid);
      const r = injectSyscallFork(wl.pid, SYS.fork, [], { gadget });
      child = r.child;
      assert.ok(child > 0, 'the fork event names the new task');
      assert.equal(r.result, BigInt(child));
      assert.deepEqual(getRegs(wl.pid), before, 'the parent is put back as it was');
      assert.equal(getSigmask(wl.pid), maskBefore);
      // Seized tracee: the auto-attached child reports a PTRACE_EVENT_STOP first.
      const st = waitStop(child);
      assert.equal(st.event, PTRACE_EVENT.STOP);
      assert.equal(injectSyscall(child, SYS.getppid, [], { gadget }), BigInt(wl.pid));
      assert.equal(injectSyscall(child, SYS.getpid, [], { gadget }), BigInt(child));
      // No fork event for a plain call: child 0.
      assert.deepEqual(injectSyscallFork(wl.pid, SYS.getpid, [], { gadget }), { result: BigInt(wl.pid), child: 0 });
    } finally {
      if (child > 0) {
        process.kill(child, 'SIGKILL');
        assert.ok(waitExit(child, 5000), 'the forked child is killed');
      }
      detach(wl.pid);
    }
    wl.go();
    assert.equal(await withTimeout(wl.exited, 20000, 'workload exit'), 0);
  } finally {
    await wl.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
