// LazyPagesServer policy (lifecycle, push order, bandwidth, failure safety)
// against a fake engine and fake images; the real engine is covered by the
// integration tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSync } from 'node:fs';
import type { EngineEventLike, EngineFactoryOptions, FaultEngineLike } from '../../plugin/lazy/engine.js';
import type { LazyImageProvider } from '../../plugin/lazy/images.js';
import type { Plan } from '../../plugin/lazy/plan.js';
import { LazyPagesServer } from '../../plugin/lazy/server.js';
import type { LazyErrorEvent, PlannedRange } from '../../plugin/lazy/types.js';
import { withTimeout } from '../helpers/env.js';

const P = 4096n;
const MiB = 1024n * 1024n;

class FakeEngine implements FaultEngineLike {
  ranges = new Map<number, PlannedRange[]>();
  prefetches: { proc: number; start: bigint; len: bigint }[] = [];
  released: number[] = [];
  sources: string[] = [];
  next = 100;
  closed = false;
  autoComplete = true;
  constructor(readonly onEvents: (evs: EngineEventLike[]) => void) {}
  addSource(path: string): number {
    this.sources.push(path);
    return this.sources.length - 1;
  }
  adopt(uffd: number, ranges: PlannedRange[]): number {
    void uffd;
    const h = this.next++;
    this.ranges.set(h, ranges.map((r) => ({ ...r })));
    return h;
  }
  supply(): bigint {
    return 0n;
  }
  prefetch(proc: number, start: bigint, len: bigint): void {
    this.prefetches.push({ proc, start, len });
    if (!this.autoComplete) return;
    setImmediate(() => {
      const copied = this.take(proc, start, start + len);
      this.onEvents([{ type: 'prefetched', proc, start, len, copied }]);
    });
  }
  /** Removes [s,e) from the data ranges of proc; returns data bytes removed. */
  take(proc: number, s: bigint, e: bigint): bigint {
    const out: PlannedRange[] = [];
    let n = 0n;
    for (const r of this.ranges.get(proc) ?? []) {
      if (r.src.kind === 'zero' || r.end <= s || r.start >= e) {
        out.push(r);
        continue;
      }
      if (r.start < s) out.push({ ...r, end: s });
      n += (r.end < e ? r.end : e) - (r.start > s ? r.start : s);
      if (r.end > e) out.push({ ...r, start: e });
    }
    this.ranges.set(proc, out);
    return n;
  }
  lazyRanges(proc: number): PlannedRange[] {
    const r = this.ranges.get(proc);
    if (!r) throw Object.assign(new Error('no such proc'), { code: 'EINVAL', errno: 22, syscall: 'lazyRanges' });
    return r.map((x) => ({ ...x }));
  }
  lazyBytes(proc: number): bigint {
    let n = 0n;
    for (const r of this.lazyRanges(proc)) if (r.src.kind !== 'zero') n += r.end - r.start;
    return n;
  }
  release(proc: number): void {
    this.released.push(proc);
    this.ranges.delete(proc);
  }
  stats(): Record<string, number | bigint> {
    return {};
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

function fakeImages(plans: Record<number, PlannedRange[]>): LazyImageProvider {
  return {
    dir: '/fake',
    pids: async () => Object.keys(plans).map(Number),
    plan: async (pid, addSource): Promise<Plan> => {
      const ranges = plans[pid];
      if (!ranges) throw new Error(`pid ${pid} is not in pstree.img`);
      addSource(`/fake/pages-${pid}.img`);
      let fileBytes = 0n;
      for (const r of ranges) if (r.src.kind === 'file') fileBytes += r.end - r.start;
      return { pid, ranges, fileBytes, zeroBytes: 0n, remoteBytes: 0n, lazyVmas: 1 };
    },
  };
}

const file = (s: bigint, e: bigint, offset = 0n): PlannedRange => ({ start: s, end: e, src: { kind: 'file', source: 0, offset } });
const zero = (s: bigint, e: bigint): PlannedRange => ({ start: s, end: e, src: { kind: 'zero' } });
const devnull = (): number => openSync('/dev/null', 'r');

async function setup(plans: Record<number, PlannedRange[]>, opts: { prefetch?: boolean; bandwidthBytesPerSec?: number; socket?: boolean } = {}) {
  let engine: FakeEngine | undefined;
  const killed: number[] = [];
  const server = await LazyPagesServer.open(
    { imagesDir: '/fake', ...(opts.prefetch !== undefined ? { prefetch: opts.prefetch } : {}), ...(opts.bandwidthBytesPerSec ? { bandwidthBytesPerSec: opts.bandwidthBytesPerSec } : {}), pushChunkBytes: Number(MiB) },
    {
      images: fakeImages(plans),
      engineFactory: (o: EngineFactoryOptions) => (engine = new FakeEngine(o.onEvents)),
      kill: (pid) => void killed.push(pid),
    },
  );
  return { server, engine: engine!, killed };
}

test('push copies everything in address order, in chunks, then completes and releases', async () => {
  const { server, engine } = await setup({ 4242: [zero(0n, 16n * P), file(16n * P, 16n * P + 3n * MiB), zero(16n * P + 3n * MiB, 32n * MiB)] });
  const completes: number[] = [];
  server.on('complete', (ev) => completes.push(ev.proc.imagePid));
  const st = await server.adopt(4242, devnull(), { hostPid: 999_999_999 });
  assert.equal(st.lazyBytes, 3n * MiB);
  const stats = await withTimeout(server.whenIdle(), 5000, 'idle');
  assert.deepEqual(engine.prefetches.map((p) => [p.start, p.len]), [[16n * P, MiB], [16n * P + MiB, MiB], [16n * P + 2n * MiB, MiB]]);
  assert.deepEqual(completes, [4242]);
  assert.deepEqual(engine.released, [100]);
  assert.equal(stats.complete, 1);
  assert.equal(stats.pushedPages, 768);
  assert.equal(server.processes()[0]!.pushedBytes, 3n * MiB);
  await server.close();
  assert.ok(engine.closed);
});

test('no prefetch: nothing is pushed; completion comes from faults', async () => {
  const { server, engine } = await setup({ 1: [file(0n, 4n * P)] }, { prefetch: false });
  await server.adopt(1, devnull(), { hostPid: 999_999_999 });
  assert.equal(engine.prefetches.length, 0);
  let idle = false;
  void server.whenIdle().then(() => (idle = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(idle, false);
  engine.take(100, 0n, 4n * P); // the faults served everything
  engine.onEvents([{ type: 'stats', faults: 4, faultPages: 4, zeroPages: 0, latenciesUs: [10, 20, 30, 40], faultAddrs: [] }]);
  const stats = await withTimeout(server.whenIdle(), 5000, 'idle');
  assert.equal(stats.faults, 4);
  assert.equal(stats.faultLatencyP50Us, 20);
  assert.equal(stats.faultLatencyP99Us, 40);
  assert.equal(engine.prefetches.length, 0);
  await server.close();
});

test('push starts near the most recent fault, then goes in address order', async () => {
  const { server, engine } = await setup({ 1: [file(0n, 8n * MiB)] });
  engine.autoComplete = false;
  await server.adopt(1, devnull(), { hostPid: 999_999_999 });
  // first chunks were issued at once (2 in flight max, 1 per process): one
  assert.deepEqual(engine.prefetches.map((p) => p.start), [0n]);
  engine.onEvents([{ type: 'stats', faults: 1, faultPages: 1, zeroPages: 0, latenciesUs: [5], faultAddrs: [{ proc: 100, addr: 5n * MiB + 3n * P }] }]);
  engine.onEvents([{ type: 'prefetched', proc: 100, start: 0n, len: MiB, copied: engine.take(100, 0n, MiB) }]);
  assert.deepEqual(engine.prefetches.map((p) => p.start), [0n, 5n * MiB]);
  engine.onEvents([{ type: 'prefetched', proc: 100, start: 5n * MiB, len: MiB, copied: engine.take(100, 5n * MiB, 6n * MiB) }]);
  assert.deepEqual(engine.prefetches.map((p) => p.start), [0n, 5n * MiB, MiB]);
  await server.close();
});

test('an engine error kills the process by pid and reports why; a fork child is tracked', async () => {
  const { server, engine, killed } = await setup({ 77: [file(0n, 4n * P)] }, { prefetch: false });
  const errors: LazyErrorEvent[] = [];
  server.on('error', (e) => errors.push(e));
  const forks: [number, number | undefined][] = [];
  server.on('fork', (e) => forks.push([e.parent.id, e.child.parentId]));
  await server.adopt(77, devnull(), { hostPid: 12345 });
  engine.ranges.set(101, engine.lazyRanges(100));
  engine.onEvents([{ type: 'fork', proc: 100, child: 101 }]);
  assert.deepEqual(forks, [[1, 1]]);
  engine.onEvents([{ type: 'error', proc: 100, code: 'EIO', errno: 5, syscall: 'pread', message: 'input/output error' }]);
  assert.deepEqual(killed, [12345]);
  assert.equal(errors.length, 1);
  assert.match(errors[0]!.message, /pid 77: a page could not be served: pread: EIO .*killed pid 12345 with SIGKILL/);
  assert.equal(errors[0]!.proc?.state, 'killed');
  assert.ok(engine.released.includes(100));
  // the child is still serving; exit of the child ends the run
  engine.onEvents([{ type: 'exit', proc: 101 }]);
  const stats = await withTimeout(server.whenIdle(), 5000, 'idle');
  assert.equal(stats.killed, 1);
  assert.equal(stats.exited, 1);
  await server.close();
});

test('images that cannot be served: the process is killed and adopt rejects', async () => {
  const { server, killed } = await setup({});
  const errors: string[] = [];
  server.on('error', (e) => errors.push(e.message));
  await assert.rejects(server.adopt(55, devnull(), { hostPid: 4321 }), /pid 55: cannot serve its memory/);
  assert.deepEqual(killed, [4321]);
  assert.match(errors[0]!, /killed pid 4321/);
  await server.close();
});

test('bandwidth cap: the bucket starts empty, chunks wait for tokens', async () => {
  const { server, engine } = await setup({ 1: [file(0n, 3n * MiB)] }, { bandwidthBytesPerSec: 64 * 1024 * 1024 });
  await server.adopt(1, devnull(), { hostPid: 999_999_999 });
  assert.equal(engine.prefetches.length, 0, 'no chunk before tokens accumulate');
  await withTimeout(server.whenIdle(), 5000, 'idle');
  assert.equal(engine.prefetches.length, 3);
  await server.close();
});

test('option validation', async () => {
  await assert.rejects(LazyPagesServer.open({ imagesDir: '' }), TypeError);
  await assert.rejects(LazyPagesServer.open({ imagesDir: '/x', bandwidthBytesPerSec: 0 }), RangeError);
  await assert.rejects(LazyPagesServer.open({ imagesDir: '/x', pushChunkBytes: 1000 }), RangeError);
});
