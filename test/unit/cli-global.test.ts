import { test } from 'node:test';
import assert from 'node:assert/strict';
import { extractGlobalOptions, globalOptions, resolveLogFile, workDirFor } from '../../plugin/cli/global.js';
import { UserError } from '../../plugin/errors.js';
import { CRIU_GHOST_LIMIT_DEFAULT, criuOptions, parseCriuSize } from '../../plugin/cli/criu-options.js';

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
  assert.throws(() => extractGlobalOptions(['dump', '--root', '/x']), (e: unknown) => e instanceof UserError && /--root is not supported/.test(e.message) && e.exitCode === 2);
  assert.throws(() => extractGlobalOptions(['dump', '--leave-stopped']), /--leave-stopped is not supported/);
  assert.throws(() => extractGlobalOptions(['restore', '--external=mnt[a]:b']), /--external is not supported/);
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

test('zdtm\'s dump options: --pre-dump-mode splice, --timeout, --track-mem are taken; dump keeps its --timeout', () => {
  const rest = extractGlobalOptions(['dump', '--tree', '42', '--pidfile', '/p', '--timeout', '10', '--pre-dump-mode', 'splice', '--images-dir', 'd']);
  assert.deepEqual(rest, ['dump', '--tree', '42', '--pidfile', '/p', '--images-dir', 'd', '--timeout', '10']);
  assert.equal(criuOptions().preDumpMode, 'splice');
  // Options before the command still reach it.
  assert.deepEqual(extractGlobalOptions(['--timeout=5', 'pre-dump', '-t', '1']), ['pre-dump', '-t', '1', '--timeout', '5']);
  assert.equal(criuOptions().preDumpMode, undefined, 'each parse starts from CRIU\'s defaults');
  // restore, lazy-pages, page-server: accepted and ignored, as CRIU does.
  assert.deepEqual(extractGlobalOptions(['restore', '-D', 'd', '--timeout', '10']), ['restore', '-D', 'd']);
  assert.throws(() => extractGlobalOptions(['pre-dump', '--pre-dump-mode', 'mmap']), (e: unknown) => e instanceof UserError && e.exitCode === 2 && /neither splice nor read/.test(e.message));
  assert.throws(() => extractGlobalOptions(['dump', '--timeout', 'x']), /--timeout needs a number/);
});

test('CRIU options with CRIU\'s meaning or as documented no-ops are parsed with CRIU\'s syntax', () => {
  const rest = extractGlobalOptions([
    'dump', '-t', '1', '--tcp-established', '--skip-in-flight', '--file-locks', '--link-remap', '--evasive-devices',
    '--auto-dedup', '--ghost-limit', '8M', '--manage-cgroups', '--cpu-cap=^fpu,ins', '--ext-mount-map', 'auto', '-M', 'a:b',
    '--empty-ns', 'net', '--tcp-close', '--ghost-fiemap',
  ]);
  assert.deepEqual(rest, ['dump', '-t', '1']);
  const o = criuOptions();
  assert.equal(o.tcpEstablished, true);
  assert.equal(o.skipInFlight, true);
  assert.equal(o.fileLocks, true);
  assert.equal(o.linkRemap, true);
  assert.equal(o.evasiveDevices, true);
  assert.equal(o.autoDedup, true);
  assert.equal(o.tcpClose, true);
  assert.equal(o.ghostLimit, 8n << 20n);
  assert.equal(o.manageCgroups, 'soft', 'a bare --manage-cgroups is soft');
  assert.equal(o.cpuCap, '^fpu,ins');
  assert.deepEqual(o.extMountMap, ['auto', 'a:b']);
  assert.deepEqual(o.emptyNs, ['net']);
  assert.equal(o.ghostFiemap, true);
  // BOOL_OPT negations, optional arguments only with "=", -l.
  extractGlobalOptions(['dump', '-l', '--no-file-locks', '--manage-cgroups=full', '--ghost-limit=1G', '--cpu-cap']);
  assert.equal(criuOptions().fileLocks, false);
  assert.equal(criuOptions().manageCgroups, 'full');
  assert.equal(criuOptions().ghostLimit, 1n << 30n);
  assert.equal(criuOptions().cpuCap, 'fpu');
  extractGlobalOptions(['dump', '--no-ghost-fiemap']);
  assert.equal(criuOptions().ghostFiemap, false);
  extractGlobalOptions(['dump']);
  assert.equal(criuOptions().ghostLimit, CRIU_GHOST_LIMIT_DEFAULT);
  // A value-taking option's value is never the command.
  assert.deepEqual(extractGlobalOptions(['--ext-mount-map', 'auto', 'dump']), ['dump']);
});

test('CRIU option values are checked like CRIU checks them', () => {
  const bad: [string[], RegExp][] = [
    [['dump', '--manage-cgroups=sometimes'], /unknown cgroups mode "sometimes"/],
    [['dump', '--ghost-limit', 'lots'], /--ghost-limit: bad size "lots"/],
    [['dump', '--cpu-cap=sse'], /--cpu-cap: bad capability list/],
    [['dump', '--empty-ns', 'pid'], /unsupported empty namespace "pid"/],
    [['dump', '--ext-mount-map', 'nocolon'], /neither auto nor KEY:VALUE/],
    [['dump', '--file-locks=yes'], /--file-locks takes no value/],
    [['dump', '--ghost-limit'], /--ghost-limit needs a value/],
    [['restore', '-D', 'd', '--empty-ns', 'net'], /--empty-ns is not supported for restore/],
  ];
  for (const [argv, re] of bad) {
    assert.throws(() => extractGlobalOptions(argv), (e: unknown) => e instanceof UserError && e.exitCode === 2 && re.test(e.message), argv.join(' '));
  }
  assert.equal(parseCriuSize('x', '100'), 100n);
  assert.equal(parseCriuSize('x', '4K'), 4096n);
});
