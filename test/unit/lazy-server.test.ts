// LazyPagesServer policy (lifecycle, push order, bandwidth, failure safety)
// against a fake engine and fake images; the real engine is covered by the
// integration tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import type { EngineEventLike, EngineFactoryOptions, EngineProcStatsLike, FaultEngineLike } from '../../plugin/lazy/engine.js';
import type { LazyImageProvider } from '../../plugin/lazy/images.js';
import type { Plan } from '../../plugin/lazy/plan.js';
import { LazyPagesServer } from '../../plugin/lazy/server.js';
import type { LazyErrorEvent, PlannedRange } from '../../plugin/lazy/types.js';
import { withTimeout } from '../helpers/env.js';

const P = 4096n;
const MiB = 1024n * 1024n;

class FakeEngine implements FaultEngineLike {
  ranges = new Map<number, PlannedRange[]>();
  counters = new Map<number, EngineProcStatsLike>();
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
  adopt(uffd: number, ranges: readonly PlannedRange[]): number {
    closeSync(uffd);
    const h = this.next++;
    this.ranges.set(h, ranges.map((r) => ({ ...r })));
    this.counters.set(h, { proc: h, faults: 0, zeroPages: 0, copiedPages: 0, pushedPages: 0, bytes: 0n, latencyLog2Ns: [] });
    return h;
  }
  supply(): bigint {
    return 0n;
  }
  prefetch(proc: number, start: bigint, len: bigint): void {
    this.prefetches.push({ proc, start, len });
    if (this.autoComplete) setImmediate(() => this.completePrefetch(proc, start, len));
  }
  completePrefetch(proc: number, start: bigint, len: bigint): void {
    const copied = this.take(proc, start, start + len);
    this.onEvents([{ type: 'prefetched', proc, start, len, copied }]);
    this.checkComplete(proc);
  }
  checkComplete(proc: number): void {
    if (this.ranges.get(proc)?.length === 0) this.onEvents([{ type: 'complete', proc }]);
  }
  /** A fault served natively: one page at addr. */
  fault(proc: number, addr: bigint, latencyBucket = 14): void {
    const c = this.counters.get(proc)!;
    c.faults++;
    c.copiedPages++;
    c.latencyLog2Ns[latencyBucket] = (c.latencyLog2Ns[latencyBucket] ?? 0) + 1;
    this.take(proc, addr, addr + P);
  }
  /** Removes [s,e) from the ranges of proc; returns bytes removed. */
  take(proc: number, s: bigint, e: bigint): bigint {
    const out: PlannedRange[] = [];
    let n = 0n;
    for (const r of this.ranges.get(proc) ?? []) {
      if (r.end <= s || r.start >= e) {
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
  lazyRanges(proc: number): { start: bigint; end: bigint }[] {
    const r = this.ranges.get(proc);
    if (!r) throw Object.assign(new Error('no such proc'), { code: 'EINVAL', errno: 22, syscall: 'lazyRanges' });
    return r.map((x) => ({ start: x.start, end: x.end }));
  }
  lazyBytes(proc: number): bigint {
    let n = 0n;
    for (const r of this.lazyRanges(proc)) n += r.end - r.start;
    return n;
  }
  release(proc: number): void {
    this.released.push(proc);
    this.ranges.delete(proc);
  }
  stats(): { procs: EngineProcStatsLike[] } {
    return { procs: [...this.counters.values()].map((c) => ({ ...c, latencyLog2Ns: [...c.latencyLog2Ns] })) };
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

/** Runs the server's periodic poll now (engine counters, liveness). */
const poll = (s: LazyPagesServer): void => (s as unknown as { poll(): void }).poll();

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

async function setup(plans: Record<number, PlannedRange[]>, opts: { prefetch?: boolean; bandwidthBytesPerSec?: number; socket?: boolean; killError?: string } = {}) {
  let engine: FakeEngine | undefined;
  const killed: number[] = [];
  const server = await LazyPagesServer.open(
    { imagesDir: '/fake', ...(opts.prefetch !== undefined ? { prefetch: opts.prefetch } : {}), ...(opts.bandwidthBytesPerSec ? { bandwidthBytesPerSec: opts.bandwidthBytesPerSec } : {}), pushChunkBytes: Number(MiB) },
    {
      images: fakeImages(plans),
      engineFactory: (o: EngineFactoryOptions) => (engine = new FakeEngine(o.onEvents)),
      kill: (pid) => {
        if (opts.killError) throw Object.assign(new Error(`kill ${opts.killError}`), { code: opts.killError });
        killed.push(pid);
      },
    },
  );
  return { server, engine: engine!, killed };
}

test('push copies everything in address order, in windows, then completes and releases', async () => {
  const end = 16n * P + 3n * MiB + 16n * P;
  const { server, engine } = await setup({ 4242: [zero(0n, 16n * P), file(16n * P, 16n * P + 3n * MiB), zero(16n * P + 3n * MiB, end)] });
  const completes: number[] = [];
  server.on('complete', (ev) => completes.push(ev.proc.imagePid));
  const st = await server.adopt(4242, devnull(), { hostPid: 999_999_999 });
  assert.equal(st.lazyBytes, 3n * MiB);
  const stats = await withTimeout(server.whenIdle(), 5000, 'idle');
  assert.deepEqual(engine.prefetches.map((p) => p.start), [0n, MiB, 2n * MiB, 3n * MiB]);
  assert.deepEqual(completes, [4242]);
  assert.deepEqual(engine.released, [100]);
  assert.equal(stats.complete, 1);
  assert.equal(stats.pushedPages, Number(end / P));
  assert.equal(server.processes()[0]!.pushedBytes, end);
  await server.close();
  assert.ok(engine.closed);
});

test('no prefetch: nothing is pushed; faults complete the process; stats come from the engine', async () => {
  const { server, engine } = await setup({ 1: [file(0n, 4n * P)] }, { prefetch: false });
  const batches: number[] = [];
  server.on('fault', (ev) => batches.push(ev.faults));
  await server.adopt(1, devnull(), { hostPid: 999_999_999 });
  let idle = false;
  void server.whenIdle().then(() => (idle = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(idle, false);
  for (let i = 0n; i < 4n; i++) engine.fault(100, i * P, i === 3n ? 20 : 14);
  poll(server);
  assert.deepEqual(batches, [4]);
  engine.checkComplete(100);
  const stats = await withTimeout(server.whenIdle(), 5000, 'idle');
  assert.equal(stats.faults, 4);
  assert.equal(stats.faultLatencyP50Us, 2 ** 15 / 1000);
  assert.equal(stats.faultLatencyP99Us, 2 ** 21 / 1000);
  assert.equal(engine.prefetches.length, 0);
  await server.close();
});

test('push goes near recent faults first, then on in address order', async () => {
  const { server, engine } = await setup({ 1: [file(0n, 8n * MiB)] });
  engine.autoComplete = false;
  await server.adopt(1, devnull(), { hostPid: 999_999_999 });
  assert.deepEqual(engine.prefetches.map((p) => p.start), [0n], 'one window per process at a time');
  engine.fault(100, 5n * MiB + 3n * P);
  poll(server);
  engine.completePrefetch(100, 0n, MiB);
  engine.completePrefetch(100, engine.prefetches[1]!.start, MiB);
  engine.completePrefetch(100, engine.prefetches[2]!.start, MiB);
  assert.deepEqual(engine.prefetches.map((p) => p.start), [0n, 5n * MiB, 4n * MiB, MiB]);
  await server.close();
});

test('an engine error kills the process by pid and reports why; a fork child is tracked', async () => {
  const { server, engine, killed } = await setup({ 77: [file(0n, 4n * P)] }, { prefetch: false });
  const errors: LazyErrorEvent[] = [];
  server.on('error', (e) => errors.push(e));
  const forks: [number, number | undefined][] = [];
  server.on('fork', (e) => forks.push([e.parent.id, e.child.parentId]));
  await server.adopt(77, devnull(), { hostPid: 12345 });
  engine.ranges.set(101, engine.ranges.get(100)!.map((r) => ({ ...r })));
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

test('a forked child whose pid is unknown fails: its uffd is never released (it stays blocked), the error says so', async () => {
  const { server, engine, killed } = await setup({ 77: [file(0n, 4n * P)] }, { prefetch: false });
  const errors: LazyErrorEvent[] = [];
  server.on('error', (e) => errors.push(e));
  // hostPid of a process that has no children here: the child's pid cannot be found.
  await server.adopt(77, devnull(), { hostPid: 999_999_998 });
  engine.ranges.set(101, engine.ranges.get(100)!.map((r) => ({ ...r })));
  engine.onEvents([{ type: 'fork', proc: 100, child: 101 }]);
  engine.onEvents([{ type: 'error', proc: 101, code: 'EIO', errno: 5, syscall: 'pread', message: 'input/output error' }]);
  assert.deepEqual(killed, []);
  assert.equal(errors.length, 1);
  assert.match(errors[0]!.message, /its pid is unknown: left blocked on its faults/);
  assert.equal(errors[0]!.killed, false);
  assert.ok(!engine.released.includes(101), 'the unknown child keeps its uffd in the engine (never zero pages)');
  await server.close();
});

test('a kill refused with EPERM is not "already gone": the uffd stays, the errno is named', async () => {
  const { server, engine } = await setup({ 78: [file(0n, 4n * P)] }, { prefetch: false, killError: 'EPERM' });
  const errors: LazyErrorEvent[] = [];
  server.on('error', (e) => errors.push(e));
  await server.adopt(78, devnull(), { hostPid: 999_999_997 });
  engine.onEvents([{ type: 'error', proc: 100, code: 'EIO', errno: 5, syscall: 'pread', message: 'input/output error' }]);
  assert.equal(errors.length, 1);
  assert.match(errors[0]!.message, /pid 999999997 could not be killed \(EPERM\): left blocked on its faults/);
  assert.doesNotMatch(errors[0]!.message, /already gone/);
  assert.ok(!engine.released.includes(100), 'a living process keeps its uffd');
  await server.close();
});

test('the engine failing to list lazy ranges: the process is killed with a clear error, the push does not silently stop', async () => {
  const { server, engine, killed } = await setup({ 5: [file(0n, 8n * MiB)] });
  const errors: LazyErrorEvent[] = [];
  const first = new Promise<void>((resolve) => server.on('error', (e) => {
    errors.push(e);
    resolve();
  }));
  engine.lazyRanges = () => {
    throw Object.assign(new Error('engine lost the process'), { code: 'EINVAL' });
  };
  await server.adopt(5, devnull(), { hostPid: 999_999_996 });
  server.startPush();
  await withTimeout(first, 5000, 'an error, not a silent stop');
  assert.deepEqual(killed, [999_999_996]);
  assert.match(errors[0]!.message, /pid 5: a page could not be served: the fault engine cannot list its lazy ranges: .*engine lost the process.*killed pid 999999996/);
  assert.equal(errors[0]!.killed, true);
  await server.close();
});

test('the fault log cannot be drained: a working set being recorded is abandoned (never written with holes), said once', async () => {
  let engine: FakeEngine | undefined;
  const server = await LazyPagesServer.open({ imagesDir: '/fake', prefetch: false, recordWorkingSet: 60 }, {
    images: fakeImages({ 6: [file(0n, 4n * P)] }),
    engineFactory: (o: EngineFactoryOptions) => {
      const e = new FakeEngine(o.onEvents) as FakeEngine & { setFaultLog(n: number): void; drainFaultLog(): { entries: never[]; dropped: number } };
      e.setFaultLog = () => undefined;
      e.drainFaultLog = () => {
        throw Object.assign(new Error('log gone'), { code: 'EIO' });
      };
      engine = e;
      return e;
    },
    kill: () => undefined,
  });
  const errors: string[] = [];
  const recorded: string[] = [];
  server.on('error', (e) => errors.push(e.message));
  server.on('recorded', (e) => recorded.push(e.path));
  await server.adopt(6, devnull(), { hostPid: 999_999_995 });
  engine!.fault(100, 0n);
  assert.deepEqual(await server.stopRecording(), []);
  assert.deepEqual(recorded, []);
  assert.equal(errors.filter((m) => /fault engine's log cannot be read \(.*log gone.*\): working sets being recorded are abandoned/.test(m)).length, 1, errors.join('\n'));
  assert.ok(!errors.some((m) => /cannot write its working set/.test(m)), 'nothing was written');
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

test('close() kills processes still being served (their uffd would hand out zeros)', async () => {
  const { server, killed } = await setup({ 9: [file(0n, 4n * P)] }, { prefetch: false });
  const errors: string[] = [];
  server.on('error', (e) => errors.push(e.message));
  await server.adopt(9, devnull(), { hostPid: 31337 });
  await server.close();
  assert.deepEqual(killed, [31337]);
  assert.match(errors[0]!, /server was closed/);
});

test('option validation', async () => {
  await assert.rejects(LazyPagesServer.open({ imagesDir: '' }), TypeError);
  await assert.rejects(LazyPagesServer.open({ imagesDir: '/x', bandwidthBytesPerSec: 0 }), RangeError);
  await assert.rejects(LazyPagesServer.open({ imagesDir: '/x', pushChunkBytes: 1000 }), RangeError);
});
