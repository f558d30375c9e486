// `lazy-restore lazy-pages` end to end: the daemon as its own process,
// a CRIU-style restorer (lazy-handover) handing over its uffds through
// lazy-pages.socket, memory verified byte-exact by the restored side.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { PE_LAZY, PE_PRESENT } from '../../plugin/images/memory.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { cliPath, runCli } from '../helpers/cli.js';
import { pattern, startHandover } from '../helpers/lazy.js';
import { writeLazyImages } from '../helpers/lazy-images.js';

const skip = !isRoot && 'needs root (userfaultfd)';
const PAGE = 4096;

/** Images for processes that map `npages` at `addr` with the a^seed pattern; every 4th page never populated. */
async function images(dir: string, pids: number[], addr: bigint, npages: number, seed: bigint): Promise<void> {
  const entries: { vaddr: bigint; pages: number; flags: number; data: Buffer }[] = [];
  for (let p = 0; p < npages; p += 4) {
    const a = addr + BigInt(p * PAGE);
    entries.push({ vaddr: a, pages: 3, flags: PE_LAZY | PE_PRESENT, data: pattern(a, 3 * PAGE, seed) });
  }
  await writeLazyImages(dir, pids.map((pid) => ({ pid, vmas: [{ start: addr, end: addr + BigInt(npages * PAGE) }], entries })));
}

/** Starts the daemon and resolves once it is listening (--status-fd 3). */
async function startDaemon(args: string[]): Promise<{ exit: Promise<{ code: number | null; stdout: string; stderr: string }> }> {
  const child = spawn(process.execPath, [cliPath, 'lazy-pages', ...args, '--status-fd', '3'], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  await withTimeout(new Promise<void>((resolve, reject) => {
    (child.stdio[3] as NodeJS.ReadableStream).once('data', () => resolve());
    child.once('close', () => reject(new Error(`daemon exited before listening: ${stderr}`)));
  }), 15_000, 'daemon listening');
  return { exit: withTimeout(exit, 60_000, `daemon exit (${stderr})`) };
}

test('CLI daemon serves a CRIU-style restorer and exits with a summary', { skip }, async () => {
  const d = tempDir();
  try {
    const addr = 0x7e1200000000n;
    const seed = 0x1234567890abcdefn;
    const h = await startHandover([join(d.path, 'lazy-pages.socket'), '--map', `0x${addr.toString(16)}:256:0x${seed.toString(16)}`, '--verify', '--holes', '4']);
    await images(d.path, h.pids, addr, 256, seed);
    const statsFile = join(d.path, 'stats.json');
    const daemon = await startDaemon(['-D', d.path, '--stats-file', statsFile]);
    h.go();
    assert.deepEqual(await h.exit(), { code: 0, signal: null }, h.stderr);
    assert.ok(h.stdout.some((l) => l.startsWith('verified')));
    const r = await daemon.exit;
    assert.equal(r.code, 0, r.stderr);
    // the process may finish reading (complete) or exit first: both are success
    assert.match(r.stdout, /1 process\(es\): (1 complete, 0 exited|0 complete, 1 exited), 0 killed/);
    assert.match(r.stdout, /fault latency p50 /);
    const stats = JSON.parse(readFileSync(statsFile, 'utf8')) as { complete: number; exited: number; killed: number; bytesCopied: string };
    assert.equal(stats.complete + stats.exited, 1);
    assert.equal(stats.killed, 0);
    assert.equal(BigInt(stats.bytesCopied), 192n * 4096n, 'every page with data copied once');
  } finally {
    d.dispose();
  }
});

test('CLI daemon: 32 processes over one connection, on-demand only, byte-exact', { skip }, async () => {
  const d = tempDir();
  try {
    const addr = 0x7e1300000000n;
    const seed = 0xfeedfacecafebeefn;
    const h = await startHandover([join(d.path, 'lazy-pages.socket'), '--procs', '32', '--map', `0x${addr.toString(16)}:64:0x${seed.toString(16)}`, '--verify', '--holes', '4'], 32);
    await images(d.path, h.pids, addr, 64, seed);
    const daemon = await startDaemon(['-D', d.path, '--no-prefetch', '--engine-threads', '2']);
    h.go();
    assert.deepEqual(await h.exit(), { code: 0, signal: null }, h.stderr);
    assert.equal(h.stdout.filter((l) => l.startsWith('verified')).length, 32);
    const r = await daemon.exit;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /32 process\(es\)/);
  } finally {
    d.dispose();
  }
});

test('CLI daemon: a corrupt pages file kills the restored process and exits 3', { skip }, async () => {
  const d = tempDir();
  try {
    const addr = 0x7e1400000000n;
    const seed = 7n;
    const h = await startHandover([join(d.path, 'lazy-pages.socket'), '--map', `0x${addr.toString(16)}:64:0x7`, '--verify', '--holes', '4']);
    await images(d.path, h.pids, addr, 64, seed);
    truncateSync(join(d.path, 'pages-1.img'), 8 * PAGE);
    const daemon = await startDaemon(['-D', d.path]);
    h.go();
    const ex = await h.exit();
    assert.equal(ex.signal, 'SIGKILL', `the restored process must not run on: ${h.stderr}`);
    const r = await daemon.exit;
    assert.equal(r.code, 3);
    assert.match(r.stderr, new RegExp(`pid ${h.pids[0]}: cannot serve its memory: .*pages-1\\.img.*killed pid ${h.pids[0]}`));
  } finally {
    d.dispose();
  }
});

test('CLI usage errors', async () => {
  const r = await runCli(['lazy-pages', '-D', '/nonexistent-dir-lr', '--bandwidth', 'fast']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--bandwidth: cannot parse "fast"/);
  const r2 = await runCli(['lazy-pages', '-D', '/nonexistent-dir-lr']);
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /nonexistent-dir-lr: cannot open image directory: ENOENT/);
  assert.doesNotMatch(r2.stderr, /at .*\.js/);
});
