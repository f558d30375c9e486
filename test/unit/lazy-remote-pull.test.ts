// RemotePulls (plugin/lazy/remote-pull.ts): when the engine's native bulk
// pull takes a process's remote push, when it gives it back to fetch(), and
// that its push slot is freed exactly once. Fake engine and source; the
// native pull itself is covered by test/integration/pageserver-pull.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { EngineEventLike, FaultEngineLike } from '../../plugin/lazy/engine.js';
import { Proc } from '../../plugin/lazy/proc.js';
import { PULL_STREAMS, RemotePulls } from '../../plugin/lazy/remote-pull.js';
import type { RemotePageSource } from '../../plugin/lazy/types.js';

type PullEnd = Extract<EngineEventLike, { type: 'pull-end' }>;

function rig(opts: { socket?: boolean; startThrows?: boolean } = {}) {
  const started: { proc: number; fd: number }[] = [];
  const stopped: number[] = [];
  const closedSockets: number[] = [];
  const ended: { pages: number; last: boolean }[] = [];
  let nextId = 1;
  const engine = {
    startPull(proc: number, fd: number): number {
      if (opts.startThrows) throw Object.assign(new Error('startPull: ESRCH'), { code: 'ESRCH' });
      started.push({ proc, fd });
      return nextId++;
    },
    stopPull(id: number): void {
      stopped.push(id);
    },
  } as unknown as FaultEngineLike;
  let fd = 40;
  const remote = {
    fetch: () => Promise.reject(new Error('not used')),
    openPullSocket: async () => {
      if (opts.socket === false) return undefined;
      const mine = fd++;
      return { fd: mine, stallMs: 2000, close: () => closedSockets.push(mine) };
    },
  } as unknown as RemotePageSource;
  const pulls = new RemotePulls({ engine, remote, isClosed: () => false, ended: (_p, pages, last) => ended.push({ pages, last }) });
  const p = new Proc(1, 7, 100, undefined);
  p.remote.ranges.push({ start: 0x1000n, end: 0x100000n });
  return { pulls, p, started, stopped, closedSockets, ended };
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));
const end = (pull: number, pages: number, code?: string): PullEnd => ({ type: 'pull-end', proc: 7, pull, pages, ...(code ? { code, errno: 110, syscall: 'recv', message: 'no reply' } : {}) });

test('a pull takes the remote push: every stream started on its own socket; done -> nothing left for fetch(), slot freed once', async () => {
  const r = rig();
  assert.equal(r.pulls.start(r.p), true);
  assert.equal(r.pulls.start(r.p), false, 'one pull per process');
  await settle();
  assert.equal(r.started.length, PULL_STREAMS);
  assert.deepEqual(r.closedSockets.length, PULL_STREAMS, 'our socket copies are closed once handed over');
  for (let i = 1; i <= PULL_STREAMS; i++) r.pulls.onPullEnd(end(i, 10));
  assert.deepEqual(r.stopped, Array.from({ length: PULL_STREAMS }, (_, i) => i + 1), 'each ended stream is joined');
  assert.deepEqual(r.ended.map((e) => e.last), [...Array(PULL_STREAMS - 1).fill(false), true]);
  assert.equal(r.ended.reduce((n, e) => n + e.pages, 0), 10 * PULL_STREAMS);
  assert.equal(r.p.remote.fresh, false);
  assert.equal(r.p.remote.next(4096n), undefined, 'fetch() has nothing left to push');
});

test('a failed stream: a new pull carries on (twice), then fetch() takes the whole remote push; the slot is freed once', async () => {
  const r = rig();
  r.pulls.start(r.p);
  for (let round = 0; round < 3; round++) {
    await settle();
    assert.equal(r.started.length, PULL_STREAMS * (round + 1), `round ${round}: every stream started`);
    const first = PULL_STREAMS * round + 1;
    r.pulls.onPullEnd(end(first, 3, 'ETIMEDOUT'));
    for (let i = first + 1; i < first + PULL_STREAMS; i++) r.pulls.onPullEnd(end(i, 5));
    assert.equal(r.ended.filter((e) => e.last).length, round < 2 ? 0 : 1, `round ${round}`);
    assert.equal(r.p.remote.fresh, true);
  }
  await settle();
  assert.equal(r.started.length, PULL_STREAMS * 3, 'no fourth pull');
  assert.equal(r.p.remote.fresh, true, 'fetch() starts from the first range (the engine skips what is in)');
  assert.deepEqual(r.p.remote.next(4096n), { start: 0x1000n, len: 4096n });
  assert.equal(r.pulls.start(r.p), false, 'not tried again');
});

test('no socket from the source, or the engine refuses: fetch() pushes, the slot is freed', async () => {
  for (const o of [{ socket: false }, { startThrows: true }]) {
    const r = rig(o);
    assert.equal(r.pulls.start(r.p), true);
    await settle();
    assert.equal(r.started.length, 0);
    assert.equal(r.ended.filter((e) => e.last).length, 1);
    assert.equal(r.p.remote.fresh, true);
  }
});

test('no pull for a process without remote ranges, or one whose remote push has begun', () => {
  const r = rig();
  r.p.remote.ranges.length = 0;
  assert.equal(r.pulls.start(r.p), false);
  const r2 = rig();
  r2.p.remote.next(4096n);
  assert.equal(r2.pulls.start(r2.p), false);
});
