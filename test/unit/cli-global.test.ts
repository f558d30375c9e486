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
  assert.throws(() => extractGlobalOptions(['dump', '--tcp-close']), (e: unknown) => e instanceof UserError && /--tcp-close is not supported/.test(e.message) && e.exitCode === 2);
  assert.throws(() => extractGlobalOptions(['restore', '--inherit-fd=fd[1]:pipe']), /--inherit-fd is not supported/);
});

test('an option missing its value is a usage error', () => {
  assert.throws(() => extractGlobalOptions(['-o']), /needs a value/);
});

test('CRIU spellings: options before the command, -S/-j/--daemon, -verbosity=0, --track-mem', () => {
  const rest = extractGlobalOptions(['--log-file', 'r.log', '--images-dir', 'd', '--verbosity=4', 'restore', '-S', '-j', '--daemon', '--track-mem']);
  assert.deepEqual(rest, ['restore', '--images-dir', 'd', '--restore-sibling', '--shell-job', '-d']);
  assert.equal(globalOptions().verbosity, 4);
  // zdtm.py: getopt reads "-verbosity=0" as -v with the argument "erbosity=0" (atoi → 0).
  assert.deepEqual(extractGlobalOptions(['check', '--no-default-config', '-verbosity=0', '--feature', 'uffd']), ['check', '--feature', 'uffd']);
  assert.equal(globalOptions().verbosity, 0);
  extractGlobalOptions(['-v2', '--verbosity']);
  assert.equal(globalOptions().verbosity, 3, 'a bare --verbosity adds one');
});

test('CRIU commands and short options we lack are named in a usage error', () => {
  assert.throws(() => extractGlobalOptions(['image-streamer']), (e: unknown) => e instanceof UserError && /CRIU command "image-streamer" is not supported/.test(e.message) && e.exitCode === 2);
  // The RPC modes are commands now (plugin/rpc).
  assert.deepEqual(extractGlobalOptions(['swrk', '3']), ['swrk', '3']);
  assert.throws(() => extractGlobalOptions(['-D', 'x', 'dedup']), /CRIU command "dedup"/);
  assert.throws(() => extractGlobalOptions(['dump', '-t', '1', '-s']), /-s \(--leave-stopped\) is not supported/);
  // A value that looks like a command is not one.
  assert.deepEqual(extractGlobalOptions(['-D', 'service', 'restore']), ['restore', '-D', 'service']);
});
