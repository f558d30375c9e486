// The typed userfaultfd ABI (plugin/uffd/abi.ts) against a real process:
// the harness hands over its uffd and this test serves it by hand with
// COPY/ZEROPAGE, checks partial progress and errno mapping, reads every
// event type, and exercises WRITEPROTECT, MOVE, POISON and CONTINUE.
// ioctls act on the mm of the uffd's creator, so REGISTER from here applies
// to the harness.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import {
  NONCOOP_FEATURES, PagefaultFlag, RegisterMode, UffdFeature, UffdIoctl, WriteprotectMode,
  uffdApi, uffdContinue, uffdCopy, uffdCreate, uffdMove, uffdPoison, uffdPoll, uffdProbeFeatures, uffdRead,
  uffdRegister, uffdUnregister, uffdWake, uffdWriteprotect, uffdZeropage, type UffdMsg,
} from '../../plugin/uffd/abi.js';
import { isRoot, leakedFds, openFds, tempDir } from '../helpers/env.js';
import { startHarness, writePattern, type Harness } from '../helpers/uffd.js';

const PAGE = 4096n;
const skip = isRoot ? false : 'needs root (userfaultfd)';

/**
 * Serves the harness's uffd until it exits: every message goes to `onMsg`;
 * returns all messages seen. Bounded by the harness's own exit wait.
 */
async function serve(h: Harness, onMsg: (m: UffdMsg) => void): Promise<UffdMsg[]> {
  const seen: UffdMsg[] = [];
  let done = false;
  const exited = h.finish().finally(() => (done = true));
  while (!done) {
    if (uffdPoll(h.uffd, 5)) {
      for (const m of uffdRead(h.uffd)) {
        seen.push(m);
        onMsg(m);
      }
    }
    await tick();
  }
  await exited;
  return seen;
}

function page(pattern: Buffer, h: Harness, addr: bigint): Buffer {
  const r = h.regions.find((x) => addr >= x.addr && addr < x.addr + x.len)!;
  const off = Number(r.fileoff + (addr - r.addr));
  return pattern.subarray(off, off + 4096);
}

test('uffd ABI', { skip }, async (t) => {
  const dir = tempDir('lr-uffd-abi-');
  const fdsBefore = openFds();
  const patPath = join(dir.path, 'pattern.img');
  const pattern = writePattern(patPath, 64);
  t.after(() => dir.dispose());
  // A failed assertion leaves its harness waiting: every harness started
  // here is killed at the end, so a failure ends the test instead of hanging it.
  const started: Harness[] = [];
  t.after(() => started.forEach((h) => h.kill()));
  const harness = async (o: Omit<Parameters<typeof startHarness>[0], 'dir' | 'pattern'>): Promise<Harness> => {
    const h = await startHarness({ dir: dir.path, pattern: patPath, ...o });
    started.push(h);
    return h;
  };

  await t.test('API negotiation reports every feature of this kernel as bigint', () => {
    const offered = uffdProbeFeatures();
    assert.equal(offered.api, 0xaan);
    assert.equal(offered.features & NONCOOP_FEATURES, NONCOOP_FEATURES);
    assert.ok(offered.features & UffdFeature.MOVE, 'MOVE offered');
    assert.ok(offered.features & UffdFeature.POISON, 'POISON offered');
    assert.ok(offered.ioctls & (1n << BigInt(UffdIoctl.REGISTER)));
    const fd = uffdCreate();
    try {
      const r = uffdApi(fd, NONCOOP_FEATURES);
      assert.equal(r.features & NONCOOP_FEATURES, NONCOOP_FEATURES);
      assert.throws(() => uffdApi(fd, NONCOOP_FEATURES), (e: NodeJS.ErrnoException) => e.code === 'EINVAL' && e.syscall === 'ioctl(UFFDIO_API)');
    } finally {
      closeSync(fd);
    }
  });

  await t.test('serving by hand: COPY and ZEROPAGE, pagefault messages with thread ids', async () => {
    const h = await harness({ regions: [8, 4], actions: ['read', '0', '0', '8', 'zero', '1', '0', '4'] });
    h.go();
    const msgs = await serve(h, (m) => {
      assert.equal(m.event, 'pagefault');
      if (m.event !== 'pagefault') return;
      const a = m.address & ~(PAGE - 1n);
      const r1 = h.regions[1]!;
      if (a >= r1.addr && a < r1.addr + r1.len) assert.equal(uffdZeropage(h.uffd, a, PAGE), PAGE);
      else assert.equal(uffdCopy(h.uffd, a, page(pattern, h, a)), PAGE);
    });
    assert.equal((await h.exited).code, 0, h.stdout);
    assert.equal(msgs.length, 12);
    for (const m of msgs) if (m.event === 'pagefault') assert.equal(m.ptid, h.pid);
    closeSync(h.uffd);
  });

  await t.test('partial progress and errno codes', async () => {
    const h = await harness({ regions: [8], actions: ['read', '0', '0', '1', 'wait', 'read', '0', '0', '8'] });
    const base = h.regions[0]!.addr;
    h.go();
    const served = serve(h, (m) => {
      if (m.event !== 'pagefault') return;
      const a = m.address & ~(PAGE - 1n);
      uffdCopy(h.uffd, a, page(pattern, h, a));
    });
    await h.waitLine((l) => l === 'wait');
    // page 0 present: nothing done
    assert.throws(() => uffdCopy(h.uffd, base, Buffer.concat([page(pattern, h, base), page(pattern, h, base + PAGE)])),
      (e: Error & { code: string; syscall: string; progress: bigint }) => e.code === 'EEXIST' && e.syscall === 'ioctl(UFFDIO_COPY)' && e.progress === 0n);
    uffdCopy(h.uffd, base + 4n * PAGE, page(pattern, h, base + 4n * PAGE));
    // page 3 copied, page 4 present -> one page of progress. The kernel may
    // answer EAGAIN instead of EEXIST here (it retried internally after a
    // source page fault); the progress is what counts.
    assert.throws(() => uffdCopy(h.uffd, base + 3n * PAGE, Buffer.concat([page(pattern, h, base + 3n * PAGE), page(pattern, h, base + 4n * PAGE)])),
      (e: Error & { code: string; progress: bigint }) => {
        assert.ok(e.code === 'EEXIST' || e.code === 'EAGAIN', e.message);
        assert.equal(e.progress, PAGE);
        return true;
      });
    assert.throws(() => uffdZeropage(h.uffd, base, PAGE), { code: 'EEXIST', syscall: 'ioctl(UFFDIO_ZEROPAGE)' });
    // CONTINUE needs a MINOR registration (shmem/hugetlb); on anon memory it is EINVAL
    assert.throws(() => uffdContinue(h.uffd, base + PAGE, PAGE), (e: Error & { code: string; progress: bigint }) => e.code === 'EINVAL' && e.progress === 0n);
    uffdWake(h.uffd, base, 8n * PAGE);
    h.go();
    await served;
    assert.equal((await h.exited).code, 0, h.stdout);
    closeSync(h.uffd);
    assert.throws(() => uffdCopy(h.uffd, base, page(pattern, h, base)), { code: 'EBADF' });
  });

  await t.test('every non-cooperative event is decoded', async () => {
    const h = await harness({ regions: [8], actions: ['fork', 'endfork', 'mremap', '0', '8', 'dontneed', '0', '0', '2', 'munmap', '0', '4', '2'] });
    const base = h.regions[0]!.addr;
    h.go();
    const msgs = await serve(h, (m) => {
      if (m.event === 'fork') closeSync(m.ufd);
    });
    assert.equal((await h.exited).code, 0, h.stdout);
    const kinds = msgs.map((m) => m.event);
    // mremap reports REMAP, then UNMAP of the old range (already moved away).
    assert.deepEqual(kinds, ['fork', 'remap', 'unmap', 'remove', 'unmap']);
    const remap = msgs[1] as Extract<UffdMsg, { event: 'remap' }>;
    assert.equal(remap.from, base);
    assert.equal(remap.len, 8n * PAGE);
    const moved = BigInt(`0x${/ok mremap 0 \w+ (\w+)/.exec(h.stdout)![1]}`);
    assert.equal(remap.to, moved);
    assert.deepEqual(msgs[2], { event: 'unmap', start: base, end: base + 8n * PAGE });
    assert.deepEqual(msgs[3], { event: 'remove', start: moved, end: moved + 2n * PAGE });
    assert.deepEqual(msgs[4], { event: 'unmap', start: moved + 4n * PAGE, end: moved + 6n * PAGE });
    closeSync(h.uffd);
  });

  await t.test('WRITEPROTECT: a write to a protected page arrives with the WP flag', async () => {
    const h = await harness({ regions: [4], actions: ['write', '0', '0', '1', '5', 'wait', 'write', '0', '0', '1', '6', 'byte', '0', '0', '1', '6'] });
    const base = h.regions[0]!.addr;
    h.go();
    const wpFaults: UffdMsg[] = [];
    const served = serve(h, (m) => {
      if (m.event !== 'pagefault') return;
      if (m.flags & PagefaultFlag.WP) {
        wpFaults.push(m);
        uffdWriteprotect(h.uffd, base, PAGE, 0n); // un-protect and wake
      } else {
        uffdCopy(h.uffd, base, page(pattern, h, base));
      }
    });
    await h.waitLine((l) => l === 'wait');
    const ioctls = uffdRegister(h.uffd, base, 4n * PAGE, RegisterMode.MISSING | RegisterMode.WP);
    assert.ok(ioctls & (1n << BigInt(UffdIoctl.WRITEPROTECT)));
    uffdWriteprotect(h.uffd, base, PAGE, WriteprotectMode.WP);
    h.go();
    await served;
    assert.equal((await h.exited).code, 0, h.stdout);
    assert.equal(wpFaults.length, 1);
    const f = wpFaults[0] as Extract<UffdMsg, { event: 'pagefault' }>;
    assert.equal(f.flags & (PagefaultFlag.WP | PagefaultFlag.WRITE), PagefaultFlag.WP | PagefaultFlag.WRITE);
    // the mm is gone now: UNREGISTER says ENOMEM (the daemon's "process exited" signal)
    assert.throws(() => uffdUnregister(h.uffd, base, 4n * PAGE), { code: 'ENOMEM', syscall: 'ioctl(UFFDIO_UNREGISTER)' });
    closeSync(h.uffd);
  });

  await t.test('POISON makes a page raise SIGBUS; MOVE errors carry progress', async () => {
    const features = NONCOOP_FEATURES | UffdFeature.MOVE | UffdFeature.POISON;
    const h = await harness({ features, regions: [4], actions: ['write', '0', '0', '1', '90', 'wait', 'byte', '0', '0', '1', '90', 'read', '0', '3', '1'] });
    const base = h.regions[0]!.addr;
    h.go();
    const served = serve(h, (m) => {
      if (m.event !== 'pagefault') return;
      const a = m.address & ~(PAGE - 1n);
      if (a === base + 3n * PAGE) assert.equal(uffdPoison(h.uffd, a, PAGE), PAGE);
      else uffdCopy(h.uffd, a, page(pattern, h, a));
    });
    await h.waitLine((l) => l === 'wait');
    // Moving pages of another process's mm is refused here (EINVAL on 6.18);
    // what matters is the error shape: code, syscall and progress.
    assert.throws(() => uffdMove(h.uffd, base + PAGE, base, PAGE),
      (e: Error & { code: string; syscall: string; progress: bigint }) => e.code === 'EINVAL' && e.syscall === 'ioctl(UFFDIO_MOVE)' && e.progress === 0n);
    h.go();
    await served;
    const ex = await h.exited;
    assert.match(ex.stdout, /ok byte 0 0 1 90/);
    assert.equal(ex.signal, 'SIGBUS', `poisoned page must raise SIGBUS: ${ex.stdout}`);
    closeSync(h.uffd);
  });

  await t.test('no leaked fds', () => {
    assert.deepEqual(leakedFds(fdsBefore), []);
  });
});
