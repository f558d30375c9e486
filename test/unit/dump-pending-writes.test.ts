// The dump's pending image writes: one failing while the dump awaits
// something else is not an unhandled rejection (which would end the process
// before the dump's catch releases the frozen tree); all() reports it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PendingWrites } from '../../plugin/dump/pending-writes.js';

test('a write failing while the dump awaits something else: no unhandled rejection, all() rejects with it after every write settled', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (r: unknown): void => void unhandled.push(r);
  process.on('unhandledRejection', onUnhandled);
  try {
    const writes = new PendingWrites();
    let slowDone = false;
    writes.push(Promise.reject(new Error('core-1.img: ENOSPC')));
    writes.push(new Promise<void>((r) => setTimeout(() => { slowDone = true; r(); }, 30)));
    // The dump goes on with other awaits (planMemory, shared memory) meanwhile.
    await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(unhandled, []);
    await assert.rejects(writes.all(), /core-1\.img: ENOSPC/);
    assert.equal(slowDone, true, 'every write settled before the failure is reported');
    assert.equal(writes.length, 2);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});

test('all() resolves when every write succeeds', async () => {
  const writes = new PendingWrites();
  writes.push(Promise.resolve(1), Promise.resolve(2));
  await writes.all();
});
