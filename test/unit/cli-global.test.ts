import { test } from 'node:test';
import assert from 'node:assert/strict';
import { extractGlobalOptions, globalOptions, resolveLogFile, workDirFor } from '../../plugin/cli/global.js';
import { UserError } from '../../plugin/errors.js';

test('CRIU global options are taken out of argv wherever they stand', () => {
  const rest = extractGlobalOptions(['dump', '-t', '42', '-v4', '-D', 'img', '-o', 'dump.log', '--work-dir=/w', '--no-default-config', '--shell-job']);
  assert.deepEqual(rest, ['dump', '-t', '42', '-D', 'img', '--shell-job']);
  const g = globalOptions();
  assert.equal(g.verbosity, 4);
  assert.equal(g.workDir, '/w');
  assert.equal(resolveLogFile('img'), '/w/dump.log');
  assert.equal(workDirFor('img'), '/w');
});

test('-vvv counts up from the default and is capped', () => {
  extractGlobalOptions(['--verbosity', '2']);
  extractGlobalOptions(['-vvv']);
  assert.equal(globalOptions().verbosity, 4);
});

test('unsupported CRIU options are named in a usage error', () => {
  assert.throws(() => extractGlobalOptions(['dump', '--tcp-established']), (e: unknown) => e instanceof UserError && /--tcp-established is not supported/.test(e.message) && e.exitCode === 2);
  assert.throws(() => extractGlobalOptions(['restore', '--inherit-fd=fd[1]:pipe']), /--inherit-fd is not supported/);
});

test('an option missing its value is a usage error', () => {
  assert.throws(() => extractGlobalOptions(['-o']), /needs a value/);
});
