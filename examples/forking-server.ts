// A multi-process server restored lazily that forks workers after the
// restore: examples/workloads/spool-server answers each request in a forked
// child, whose memory is served through its own userfaultfd (UFFD_EVENT_FORK).
// Run: node dist/examples/forking-server.js [--mib N] [--requests N]
// Prints each answer before and after the restore and checks they agree.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import tmp from 'tmp';
import { dump } from '../plugin/dump/index.js';
import { restore } from '../plugin/restore/index.js';
import { LazyPagesServer } from '../plugin/lazy/index.js';
import { helperPath } from '../plugin/native/addon.js';
import { UserError } from '../plugin/errors.js';

const { values: args } = parseArgs({ options: { mib: { type: 'string', default: '32' }, requests: { type: 'string', default: '8' } } });

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new UserError(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Drops requests for regions 0..n-1 (written under a temp name, then renamed) and collects the answers. */
async function ask(ctl: string, tag: string, n: number): Promise<string[]> {
  for (let r = 0; r < n; r++) {
    writeFileSync(join(ctl, `.req-${tag}-${r}`), `${r}\n`);
    renameSync(join(ctl, `.req-${tag}-${r}`), join(ctl, 'in', `${tag}-${r}`));
  }
  const out = join(ctl, 'out');
  await waitFor(() => readdirSync(out).filter((f) => f.startsWith(`${tag}-`)).length === n, 30_000, `${n} answers (${tag})`);
  return Array.from({ length: n }, (_, r) => readFileSync(join(out, `${tag}-${r}`), 'utf8').trim());
}

async function main(): Promise<number> {
  const n = Number(args.requests);
  const work = tmp.dirSync({ prefix: 'lazy-restore-spool-', unsafeCleanup: true });
  let child: ChildProcess | undefined;
  try {
    const ctl = join(work.name, 'ctl');
    const images = join(work.name, 'images');
    mkdirSync(ctl);
    mkdirSync(images);
    const server0 = spawn(helperPath('spool-server'), [ctl, args.mib!], { stdio: 'ignore', detached: true });
    child = server0;
    const exited = new Promise<void>((r) => server0.once('exit', () => r()));
    await waitFor(() => existsSync(join(ctl, 'ready')), 30_000, 'spool-server ready');
    const pid = Number(readFileSync(join(ctl, 'ready'), 'utf8'));
    const before = await ask(ctl, 'before', n);
    console.log(`spool-server ${pid}: ${n} answers before the checkpoint`);
    // A worker that has written its answer may not be reaped yet: a zombie
    // (or an exiting worker) cannot be dumped.
    await waitFor(() => childrenOf(pid).length === 0, 30_000, 'the server to reap its workers');
    await dump({ pid, imagesDir: images });
    await exited;
    // Pure on-demand: with the background push the whole server may be in
    // before the first request arrives, and its workers would then be forked
    // from a fully restored process (no fork events left to show).
    const server = await LazyPagesServer.open({ imagesDir: images, prefetch: false });
    let forks = 0;
    server.on('fork', () => forks++);
    const tree = await restore({ imagesDir: images, lazy: true, detached: true, lazyServer: server });
    console.log(`restored lazily as pid ${tree.pid}; asking again (each answer is computed in a forked worker)`);
    const after = await ask(ctl, 'after', n);
    writeFileSync(join(ctl, 'stop'), '');
    const status = await tree.wait();
    await tree.lazyDone();
    await tree.close();
    await server.close();
    const result = readFileSync(join(ctl, 'result'), 'utf8').trim();
    const same = before.every((a, i) => a === after[i]);
    console.log(`workers forked after the restore: ${forks}; answers identical: ${same}; server exit ${status.code}; server says: ${result}`);
    return same && status.code === 0 && result.startsWith('ok') && forks >= n ? 0 : 1;
  } finally {
    // After a failed dump the original server still runs: it must not outlive us.
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    work.removeCallback();
  }
}

function childrenOf(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

try {
  process.exitCode = await main();
} catch (e) {
  process.stderr.write(`forking-server: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
}
