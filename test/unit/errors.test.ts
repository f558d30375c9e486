import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Errno, ImageError, UserError, errnoName, isSystemError, sysError, systemUserError } from '../../plugin/errors.js';

test('ImageError names the file and offset', () => {
  const e = new ImageError('/x/core-1.img', 12, 'truncated entry');
  assert.ok(e instanceof UserError);
  assert.equal(e.message, '/x/core-1.img at offset 12: truncated entry');
});

test('systemUserError carries the errno code', () => {
  const sys = Object.assign(new Error('operation not permitted'), { code: 'EPERM', errno: 1, syscall: 'ptrace' });
  assert.match(systemUserError('pid 42', sys).message, /^pid 42: ptrace: EPERM/);
});

test('sysError: code/errno/syscall like the addon, from a number or a code name; glibc names for shared numbers', () => {
  const e = sysError(Errno.ESRCH, 'waitpid', 'tid 7');
  assert.equal(e.message, 'ESRCH: waitpid tid 7');
  assert.deepEqual([e.code, e.errno, e.syscall], ['ESRCH', Errno.ESRCH, 'waitpid']);
  assert.ok(isSystemError(e));
  const n = sysError('ECONNRESET', 'lazy-pages socket', undefined, 'the restorer hung up');
  assert.deepEqual([n.message, n.code, n.errno], ['the restorer hung up', 'ECONNRESET', Errno.ECONNRESET]);
  assert.equal(errnoName(Errno.EAGAIN), 'EAGAIN');
  assert.equal(errnoName(Errno.EOPNOTSUPP), 'EOPNOTSUPP');
  assert.equal(errnoName(100000), 'E100000');
});
