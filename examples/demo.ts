// `npm run demo`: the main job on a built-in example.
// Starts examples/workloads/demo-service (a data set of --mib MiB plus pages
// it never touched), checkpoints it into CRIU-format images, restores it
// lazily so it runs at once with its memory still in the images, shows pages
// arriving (on fault and in the background) with a live progress bar, and
// finally checks the workload's own verdict on every byte of its data.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import tmp from 'tmp';
import { dump } from '../plugin/dump/index.js';
import { restore } from '../plugin/restore/index.js';
import { LazyPagesServer } from '../plugin/lazy/index.js';
import { helperPath } from '../plugin/native/addon.js';
import { UserError } from '../plugin/errors.js';

const { values: args } = parseArgs({
  options: {
    mib: { type: 'string', default: '256' },
    'no-prefetch': { type: 'boolean', default: false },
    'images-dir': { type: 'string' },
  },
});

const MiB = 2 ** 20;
const tty = process.stdout.isTTY === true;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function waitFor(path: string, ms: number, what: string): Promise<string> {
  const t0 = Date.now();
  // The workload announces itself with a file: poll it, bounded.
  while (!existsSync(path)) {
    if (Date.now() - t0 > ms) throw new UserError(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return readFileSync(path, 'utf8').trim();
}

function bar(done: number, total: number, width = 30): string {
  const f = total > 0 ? Math.max(0, Math.min(1, done / total)) : 1;
  const n = Math.round(f * width);
  return `[${'#'.repeat(n)}${'.'.repeat(width - n)}] ${(f * 100).toFixed(0).padStart(3)}%`;
}

async function main(): Promise<number> {
  const mib = Number(args.mib);
  if (!Number.isInteger(mib) || mib < 1 || mib > 8192) throw new UserError('--mib must be an integer from 1 to 8192');
  const work = tmp.dirSync({ prefix: 'lazy-restore-demo-', unsafeCleanup: true });
  try {
    const ctl = join(work.name, 'ctl');
    const images = args['images-dir'] ?? join(work.name, 'images');
    mkdirSync(ctl, { recursive: true });
    mkdirSync(images, { recursive: true });

    say(`1. starting demo-service with ${mib} MiB of data (and ${mib} MiB it never touches)`);
    // Its own session, so that it is a session leader like a daemonised service.
    const child = spawn(helperPath('demo-service'), [ctl, String(mib)], { stdio: 'ignore', detached: true });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const pid = Number(await waitFor(join(ctl, 'ready'), 60_000, 'demo-service to fill its memory'));
    say(`   pid ${pid} is ready`);

    say(`2. checkpoint: lazy-restore dump -t ${pid} -D ${images}`);
    const d = await dump({ pid, imagesDir: images });
    await exited; // dump killed it; we are its parent and reap it here
    say(`   ${d.stats.pagesWritten} pages written (${((d.stats.pagesWritten * 4096) / MiB).toFixed(1)} MiB, ${d.stats.pagesLazy} lazy-eligible) in ${d.stats.totalMs.toFixed(0)} ms; process frozen for ${d.stats.frozenMs.toFixed(0)} ms, then killed`);

    say('3. lazy restore: the address space is recreated empty and registered with userfaultfd');
    const server = await LazyPagesServer.open({ imagesDir: images, prefetch: !args['no-prefetch'] });
    const t0 = performance.now();
    const tree = await restore({ imagesDir: images, lazy: true, detached: true, lazyServer: server });
    const resumeMs = performance.now() - t0;
    // Everything still lazy: dumped pages and never-touched (zero) pages alike.
    const lazyPages = Number(server.stats().lazyBytesLeft) / 4096;
    say(`   pid ${tree.pid} is running again after ${resumeMs.toFixed(1)} ms, with ${(Number(server.stats().lazyBytes) / MiB).toFixed(1)} MiB of data still in the images (${lazyPages} lazy pages in all)`);

    say('4. the workload now checks every byte of its data; pages arrive on fault and in the background:');
    writeFileSync(join(ctl, 'go'), '');
    const started = performance.now();
    const exit = tree.wait();
    let finished = false;
    void exit.then(() => (finished = true));
    let last = '';
    while (!finished) {
      const s = server.stats();
      const served = lazyPages - Number(s.lazyBytesLeft) / 4096;
      const secs = (performance.now() - started) / 1000;
      const rate = secs > 0 ? (served * 4096) / MiB / secs : 0;
      last = `   ${bar(served, lazyPages)} on fault ${s.faultPages} (+${s.zeroPages} zero)  pushed ${s.pushedPages}  of ${lazyPages} pages  ${rate.toFixed(0)} MiB/s`;
      if (tty) process.stdout.write(`\r${last}`);
      await Promise.race([exit, new Promise((r) => setTimeout(r, 50))]);
    }
    const status = await exit;
    await tree.lazyDone();
    const s = server.stats();
    const final = `   ${bar(lazyPages - Number(s.lazyBytesLeft) / 4096, lazyPages)} on fault ${s.faultPages} (+${s.zeroPages} zero)  pushed ${s.pushedPages}  of ${lazyPages} pages`;
    process.stdout.write(tty ? `\r${final}\n` : `${last ? `${last}\n` : ''}${final}\n`);
    await tree.close();
    await server.close();

    const result = await waitFor(join(ctl, 'result'), 5_000, "the workload's verdict");
    say('5. summary');
    say(`   time to resume:       ${resumeMs.toFixed(1)} ms (lazy)`);
    say(`   page faults served:   ${s.faults} (${s.faultPages} pages copied, ${s.zeroPages} zero pages), latency p50 ${s.faultLatencyP50Us ?? '-'} us, p99 ${s.faultLatencyP99Us ?? '-'} us`);
    say(`   pushed in background: ${s.pushedPages} pages`);
    say(`   fully restored after: ${s.elapsedMs.toFixed(0)} ms`);
    say(`   workload exit status: ${status.code}${status.signal ? ` (signal ${status.signal})` : ''}`);
    say(`   workload verdict:     ${result}`);
    const ok = status.code === 0 && result.startsWith('ok');
    say(ok ? 'OK: the restored workload verified all of its memory.' : 'FAILED: the restored workload did not verify its memory.');
    return ok ? 0 : 1;
  } finally {
    work.removeCallback();
  }
}

try {
  process.exitCode = await main();
} catch (e) {
  process.stderr.write(`demo: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
}
