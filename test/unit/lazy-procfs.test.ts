// plugin/lazy/procfs: only ENOENT/ESRCH mean a process is gone. Any other
// /proc read error (EMFILE when the daemon runs out of fds, ...) must not
// make the daemon release the uffd of a living process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { identify, isAlive, readStat } from '../../plugin/lazy/procfs.js';

const failing = (code: string) => (): string => {
  throw Object.assign(new Error(`read: ${code}`), { code });
};

test('readStat: ENOENT/ESRCH are "gone", other errors are thrown', () => {
  assert.equal(readStat(1, failing('ENOENT')), undefined);
  assert.equal(readStat(1, failing('ESRCH')), undefined);
  assert.throws(() => readStat(1, failing('EMFILE')), { code: 'EMFILE' });
  assert.throws(() => readStat(1, failing('EACCES')), { code: 'EACCES' });
  const st = readStat(process.pid);
  assert.ok(st && st.startTime.length > 0);
});

test('isAlive: a read error other than ENOENT/ESRCH counts as alive, never as gone', () => {
  // A pid that does not exist: only the injected error decides.
  const id = { pid: 999_999_999, startTime: '1' };
  assert.equal(isAlive(id, failing('EMFILE')), true);
  assert.equal(isAlive(id, failing('ENFILE')), true);
  assert.equal(isAlive(id, failing('ENOENT')), false);
  assert.equal(isAlive(id, failing('ESRCH')), false);
  assert.equal(isAlive(id), false);
  const me = identify(process.pid);
  assert.ok(me);
  assert.equal(isAlive(me), true);
  assert.equal(identify(process.pid, failing('EMFILE')), undefined, 'identity unknown, not an error');
});
