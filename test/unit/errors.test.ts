import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ImageError, UserError, systemUserError } from '../../plugin/errors.js';

test('ImageError names the file and offset', () => {
  const e = new ImageError('/x/core-1.img', 12, 'truncated entry');
  assert.ok(e instanceof UserError);
  assert.equal(e.message, '/x/core-1.img at offset 12: truncated entry');
});

test('systemUserError carries the errno code', () => {
  const sys = Object.assign(new Error('operation not permitted'), { code: 'EPERM', errno: 1, syscall: 'ptrace' });
  assert.match(systemUserError('pid 42', sys).message, /^pid 42: ptrace: EPERM/);
});
