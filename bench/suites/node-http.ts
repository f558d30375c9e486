// A real server restored: a Node.js HTTP server holding 256 MiB of V8 heap
// (32 MiB with --quick) in 1 MiB strings, dumped once, then restored eagerly
// and lazily; the figure is the time from the restore() call to the first
// correct HTTP answer (the server touches a few bytes of its heap per
// request). Medians of 3 (1 with --quick); each restored server is killed
// and reaped before the next restore.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { restore } from '../../plugin/restore/index.js';
import { median, type BenchFigure, type BenchSuite } from '../types.js';

const server = (mib: number): string => `
const heap = [];
for (let i = 0; i < ${mib}; i++) heap.push(new Array(131072).fill(i + 0.5)); // 1 MiB of doubles each, on the V8 heap
let n = 0;
const s = require('http').createServer((q, r) => { n++; r.end('ok ' + n + ' ' + heap.length + ' ' + heap[n % heap.length][12345] + '\\n'); });
s.listen(0, '127.0.0.1', () => console.log('rss ' + (process.memoryUsage().rss >> 20) + ' MiB, heap used ' + (process.memoryUsage().heapUsed >> 20) + ' MiB\\nport ' + s.address().port));
`;

function get(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 60000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 60 s')));
    req.on('error', reject);
    req.end();
  });
}

/** TCP sockets of `pid` not in LISTEN state (/proc/net/tcp by inode). */
function connections(pid: number): number {
  const inodes = new Set<string>();
  for (const f of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${f}`));
      if (m) inodes.add(m[1]!);
    } catch { /* closed meanwhile */ }
  }
  let n = 0;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 9 && inodes.has(f[9]!) && f[3] !== '0A') n++;
  }
  return n;
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Starts the server (its own session, stdio on a file), returns its port and dumps it into `dir` (killing it). */
async function dumpServer(mib: number, dir: string, work: string, logLine: (l: string) => void): Promise<number> {
  const logPath = join(work, 'server.log');
  const out = openSync(logPath, 'a');
  const nul = openSync('/dev/null', 'r');
  const child = spawn('/usr/bin/python3', ['-c', 'import os, sys\nos.closerange(3, 1 << 16)\nos.execvp(sys.argv[1], sys.argv[1:])',
    process.execPath, '--max-old-space-size=2048', '-e', server(mib)], { cwd: work, stdio: [nul, out, out], detached: true });
  closeSync(out);
  closeSync(nul);
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  try {
    const log = (): string => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
    await waitFor(() => /^port \d+$/m.test(log()), 120000, 'the server to listen');
    const port = Number(/port (\d+)/.exec(log())![1]);
    logLine(/^rss .*$/m.exec(log())?.[0] ?? '');
    if (!(await get(port)).startsWith('ok 1 ')) throw new Error('unexpected answer before the dump');
    // The client's connection must be gone from the server before a dump without --tcp-established.
    await waitFor(() => connections(child.pid!) === 0, 10000, 'the server to close the connection');
    await dump({ pid: child.pid!, imagesDir: dir });
    await exited;
    return port;
  } catch (e) {
    child.kill('SIGKILL');
    await exited;
    throw e;
  }
}

async function firstAnswer(dir: string, port: number, mib: number, lazy: boolean): Promise<number> {
  const t0 = performance.now();
  const tree = await restore({ imagesDir: dir, detached: true, lazy });
  let ms: number;
  try {
    const body = await get(port);
    ms = performance.now() - t0;
    if (!body.startsWith(`ok 2 ${mib} `)) throw new Error(`wrong answer after the restore: ${body}`);
  } finally {
    const exit = tree.wait();
    process.kill(tree.pid, 'SIGKILL');
    await exit;
    await tree.lazyDone();
    await tree.close();
  }
  return ms;
}

export const suite: BenchSuite = {
  name: 'node-http',
  async run(ctx) {
    const mib = ctx.quick ? 32 : 256;
    const reps = ctx.quick ? 1 : 3;
    const dir = join(ctx.tmpDir, 'img');
    const port = await dumpServer(mib, dir, ctx.tmpDir, ctx.log);
    const res = new Map<boolean, number>();
    for (const lazy of [false, true]) {
      const xs: number[] = [];
      for (let i = 0; i < reps; i++) xs.push(await firstAnswer(dir, port, mib, lazy));
      ctx.log(`${mib} MiB heap, ${lazy ? 'lazy' : 'eager'}: ${xs.map((x) => x.toFixed(1)).join(', ')} ms to the first answer`);
      res.set(lazy, median(xs));
    }
    const eager = res.get(false)!;
    const lazy = res.get(true)!;
    const figs: BenchFigure[] = [
      { name: `Node.js HTTP server, ${mib} MiB heap: restore to first answer, eager`, value: eager, unit: 'ms' },
      {
        name: `Node.js HTTP server, ${mib} MiB heap: restore to first answer, lazy`, value: lazy, unit: 'ms',
        baseline: { name: 'eager', value: eager },
      },
    ];
    return figs;
  },
};
