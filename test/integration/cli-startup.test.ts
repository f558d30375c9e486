// The CLI runs the same from each of its start-up paths
// (bin/lazy-restore.js, docs/ARCHITECTURE.md "Command start-up"): the bundle
// with its code cache, the bundle with a code cache V8 rejects (rewritten,
// never fatal), and the compiled ES modules (LR_CLI_NO_BUNDLE=1, also what
// runs when the bundle is stale or missing); through its #! line, node, and
// build/bin/lr-criu. A real dump and restore -d of a workload that checks
// its own memory runs through the bundle and through the modules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cliPath, lrCriuPath, projectRoot } from '../helpers/cli.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { statOf } from '../helpers/proc.js';
import { killRestoredWorkloads, reapChild, verdictOk } from '../helpers/restored.js';
import { startWorkload } from '../helpers/workload.js';

const skip = isRoot ? false : 'needs root';
const cacheDir = join(projectRoot, 'dist', 'plugin', 'bundle', 'cache');
const bundled = existsSync(join(projectRoot, 'dist', 'plugin', 'bundle', 'main.cjs'));

interface Run { code: number; stdout: string; stderr: string }

/** Runs `file ARGS` (bounded) with LR_PHASES=1 and `env` added. */
function run(file: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 60_000, env: { ...process.env, LR_PHASES: '1', ...env }, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stderr}`));
        return;
      }
      resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

/** The start-up path the phase report names ("phases (pid N, start-up: PATH):"). */
function startupOf(r: Run): string {
  const m = /^phases \(pid \d+, start-up: ([^)]*)\):$/m.exec(r.stderr);
  assert.ok(m, `a phase report on stderr: ${r.stderr}`);
  return m[1]!;
}

const version = (JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { version: string }).version;

test('--version through the #! line, node and lr-criu, from the bundle and from the modules', async () => {
  for (const [file, args] of [[cliPath, []], [process.execPath, [cliPath]], [lrCriuPath, []]] as const) {
    const b = await run(file, [...args, '--version']);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(b.stdout, `${version}\n`);
    if (bundled) assert.match(startupOf(b), /^bundle/);
    const m = await run(file, [...args, '--version'], { LR_CLI_NO_BUNDLE: '1' });
    assert.equal(m.code, 0, m.stderr);
    assert.equal(m.stdout, `${version}\n`);
    assert.equal(startupOf(m), 'modules');
  }
});

test('a code cache V8 rejects (another bundle or node) is ignored and rewritten', { skip: !bundled && 'no bundle built' }, async () => {
  // `--version` is no command: its cache is other.v8.
  const file = join(cacheDir, 'other.v8');
  await run(cliPath, ['--version']); // make sure one exists
  writeFileSync(file, Buffer.alloc(4096, 0x5a));
  const r = await run(cliPath, ['--version']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `${version}\n`);
  assert.equal(startupOf(r), 'bundle, code cache rejected');
  assert.notDeepEqual(readFileSync(file), Buffer.alloc(4096, 0x5a), 'rewritten at exit');
  const again = await run(cliPath, ['--version']);
  assert.equal(startupOf(again), 'bundle, code cache');
});

test('only a successful run writes a code cache (a failed one stopped early)', { skip: !bundled && 'no bundle built' }, async () => {
  const file = join(cacheDir, 'other.v8');
  rmSync(file, { force: true });
  const bad = await run(cliPath, ['no-such-command']);
  assert.equal(bad.code, 2, bad.stderr);
  assert.equal(startupOf(bad), 'bundle, no code cache yet');
  assert.ok(!existsSync(file), 'no cache from the failed run');
  const ok = await run(cliPath, ['--version']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.ok(existsSync(file), 'the successful run wrote it');
});

for (const [path, env] of [['bundle', {}], ['modules', { LR_CLI_NO_BUNDLE: '1' }]] as const) {
  test(`dump and restore -d through the ${path}: the restored workload finds every byte`, { skip: skip || (path === 'bundle' && !bundled && 'no bundle built') }, async () => {
    const fds = openFds();
    const t = tempDir('lr-startup-');
    const wl = await startWorkload('workload-mem', ['8']);
    let restored: number | undefined;
    let exit: ReturnType<typeof reapChild> | undefined;
    try {
      const d = await run(cliPath, ['dump', '-t', String(wl.pid), '-D', t.path, '-o', 'dump.log'], env);
      assert.equal(d.code, 0, d.stderr);
      assert.match(d.stdout, /^dumped 1 process\(es\)/);
      assert.match(startupOf(d), path === 'bundle' ? /^bundle/ : /^modules$/);
      await withTimeout(wl.exited, 10_000, 'dumped workload killed');
      // --restore-sibling: the root is our child, reaped here.
      const r = await run(cliPath, ['restore', '-d', '--restore-sibling', '-D', t.path, '--pidfile', 'r.pid', '-o', 'restore.log'], env);
      assert.equal(r.code, 0, r.stderr);
      restored = Number(readFileSync(join(t.path, 'r.pid'), 'utf8'));
      assert.equal(r.stdout, `${restored}\n`);
      assert.match(startupOf(r), path === 'bundle' ? /^bundle/ : /^modules$/);
      assert.equal(statOf(restored)?.ppid, process.pid, 'the restored root is our child');
      exit = reapChild(restored);
      await verdictOk(wl, restored);
      assert.deepEqual(await withTimeout(exit, 20_000, 'restored root exit'), { code: 0, signal: 0 });
      restored = undefined;
    } finally {
      if (restored !== undefined) {
        killRestoredWorkloads([restored]);
        await withTimeout(exit ?? reapChild(restored), 10_000, 'killed restored root').catch(() => undefined);
      }
      await wl.dispose();
      t.dispose();
    }
    assert.deepEqual(leakedFds(fds), []);
  });
}
