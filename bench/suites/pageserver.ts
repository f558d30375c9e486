// Remote lazy pages over loopback TCP, all in one run:
//  - per-fault service time seen by the faulting process (uffd-harness
//    timestamps every first touch) when the engine serves the pages from a
//    local pages file vs from a page server (a separate `lazy-restore
//    page-server --lazy-pages` process), target remote p50 ≤ 3x local. The
//    remote path is the native one (the engine worker sends the GET on an
//    attached socket and copies the reply; the server answers on a native
//    thread); the former JS path ('need' event → PageServerClient urgent GET
//    → supply()) is measured in the same run for comparison;
//  - migration of a region: time until all of it is in the destination
//    process with lazy migration (the process could run from t=0; the
//    background push streams it over the page server) vs a plain eager copy
//    (stream the pages file over TCP to the destination disk, then copy it
//    into the process) — the eager process cannot run before the end.
// Every harness run verifies the pattern it read (byte-exact).
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { once } from 'node:events';
import { projectRoot } from '../../plugin/native/addon.js';
import { ImageDir } from '../../plugin/images/index.js';
import { FaultEngine, type EngineEvent, type LazyRange } from '../../plugin/uffd/engine.js';
import { PageServerClient } from '../../plugin/pageserver/client.js';
import { PE_LAZY, PE_PRESENT } from '../../plugin/pageserver/protocol.js';
import { socketFd } from '../../plugin/pageserver/transport.js';
import { startHarness, writePattern, type Harness } from '../../test/helpers/uffd.js';
import { withTimeout } from '../../test/helpers/env.js';
import { median, type BenchContext, type BenchFigure, type BenchSuite } from '../types.js';

const BASE = 0x7f3300000000n; // dump-time address of pattern page 0
const KEY_PID = 1;

interface Touch { p50Ns: number; p99Ns: number; totalNs: number }

function parseTouch(stdout: string): Touch {
  const m = /touch n=(\d+) total_ns=(\d+) p50_ns=(\d+) p99_ns=(\d+)/.exec(stdout);
  if (!m) throw new Error(`harness printed no touch line:\n${stdout.slice(-500)}`);
  return { totalNs: Number(m[2]), p50Ns: Number(m[3]), p99Ns: Number(m[4]) };
}

async function startPageServer(dir: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [join(projectRoot, 'bin', 'lazy-restore.js'), 'page-server', '-D', dir, '--lazy-pages', '--address', '127.0.0.1', '--port', '0', '--keep-going'],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.setEncoding('utf8');
  const port = await withTimeout(new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (c: string) => {
      out += c;
      const m = /listening on [\d.]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`page-server exited ${code}`)));
  }), 20_000, 'page server');
  return { child, port };
}

/** Engine serving one harness; remote = pages come from the page server. */
async function run(ctx: BenchContext, pattern: string, pages: number, how: { remote?: PageServerClient; native?: boolean; push?: boolean; actions: string[] }):
  Promise<{ touch: Touch | undefined; allInMs: number }> {
  let engine!: FaultEngine;
  let proc = -1;
  const client = how.remote;
  const onEvents = (evs: EngineEvent[]): void => {
    for (const ev of evs) {
      if (ev.type !== 'need' || !client) continue;
      void client.fetch(KEY_PID, ev.imageAddr, ev.len / 4096n, { urgent: true }).then((d) => engine.supply(ev.proc, ev.imageAddr, d));
    }
  };
  engine = FaultEngine.create({ threads: 1, faultAroundPages: 1, spinMicros: 100, onEvents });
  let h: Harness | undefined;
  try {
    const src = engine.addSource(pattern);
    if (client && how.native) {
      const sock = await client.connectRaw();
      try {
        engine.attachLink(0, socketFd(sock)!);
      } finally {
        sock.destroy();
      }
    }
    h = await startHarness({ dir: ctx.tmpDir, pattern, regions: [pages], actions: how.actions });
    const ranges: LazyRange[] = h.regions.map((r) => (client
      ? { start: r.addr, end: r.addr + r.len, src: { kind: 'remote', imageAddr: BASE + r.fileoff } }
      : { start: r.addr, end: r.addr + r.len, src: { kind: 'file', source: src, offset: r.fileoff } }));
    const t0 = performance.now();
    proc = engine.adopt(h.uffd, ranges, how.native ? { remotePid: KEY_PID } : {});
    let allInMs = NaN;
    if (how.push) {
      if (client) {
        // Background push: 1 MiB GETs, four in flight, supplied as they come.
        const chunk = 256n;
        const base = BASE + h.regions[0]!.fileoff;
        const total = BigInt(pages);
        let next = 0n;
        const worker = async (): Promise<void> => {
          while (next < total) {
            const at = next;
            next += chunk;
            const n = total - at < chunk ? total - at : chunk;
            const d = await client.fetch(KEY_PID, base + at * 4096n, n, { urgent: false });
            engine.supply(proc, base + at * 4096n, d);
          }
        };
        await Promise.all([worker(), worker(), worker(), worker()]);
      } else {
        engine.prefetch(proc, h.regions[0]!.addr, h.regions[0]!.len);
        while (engine.lazyBytes(proc) > 0n) await new Promise((r) => setImmediate(r));
      }
      allInMs = performance.now() - t0;
    }
    h.go();
    const ex = await h.finish(300_000);
    if (ex.code !== 0) throw new Error(`harness failed: ${ex.stdout.slice(-300)} ${ex.stderr}`);
    engine.release(proc);
    return { touch: how.actions[0] === 'touch' ? parseTouch(ex.stdout) : undefined, allInMs };
  } finally {
    h?.kill();
    await engine.close();
  }
}

/** Streams `file` over loopback TCP from a separate process to `dest`; resolves with ms. */
async function tcpCopy(file: string, dest: string): Promise<number> {
  const t0 = performance.now();
  const server = net.createServer();
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const sender = spawn(process.execPath, ['-e', `const s=require('net').connect(${port},'127.0.0.1',()=>require('fs').createReadStream(${JSON.stringify(file)}).pipe(s))`], { stdio: 'ignore' });
  const [sock] = (await once(server, 'connection')) as [net.Socket];
  const out = createWriteStream(dest);
  sock.pipe(out);
  await once(out, 'finish');
  server.close();
  await once(sender, 'exit');
  return performance.now() - t0;
}

export const suite: BenchSuite = {
  name: 'pageserver',
  async run(ctx: BenchContext): Promise<BenchFigure[]> {
    const latPages = ctx.quick ? 1000 : 5000;
    const migMiB = ctx.quick ? 16 : 128;
    const migPages = migMiB * 256;
    const rounds = ctx.quick ? 1 : 3;
    const pattern = join(ctx.tmpDir, 'pattern.img');
    const bytes = writePattern(pattern, Math.max(latPages, migPages));
    // The "source" image directory: one task pagemap covering the pattern.
    const imgDir = join(ctx.tmpDir, 'img');
    const img = await ImageDir.create(imgDir);
    const w = await img.pagemapWriter(KEY_PID, 1);
    await w.add(BASE, bytes.length / 4096, PE_LAZY | PE_PRESENT, bytes);
    await w.close();
    writeFileSync(join(imgDir, 'README'), 'bench images\n');
    const ps = await startPageServer(imgDir);
    const client = await PageServerClient.connect({ address: '127.0.0.1', port: ps.port });
    const figs: BenchFigure[] = [];
    try {
      const local: Touch[] = [];
      const remote: Touch[] = [];
      const viaJs: Touch[] = [];
      for (let r = 0; r < rounds; r++) {
        const touch = ['touch', '0', '0', String(latPages)];
        local.push((await run(ctx, pattern, latPages, { actions: touch })).touch!);
        remote.push((await run(ctx, pattern, latPages, { remote: client, native: true, actions: touch })).touch!);
        viaJs.push((await run(ctx, pattern, latPages, { remote: client, actions: touch })).touch!);
        ctx.log(`round ${r}: fault p50 local ${(local[r]!.p50Ns / 1000).toFixed(1)} us, remote ${(remote[r]!.p50Ns / 1000).toFixed(1)} us (JS path ${(viaJs[r]!.p50Ns / 1000).toFixed(1)} us)`);
      }
      // The floor of any remote design here: one GET round trip between two
      // node processes, no userfaultfd involved.
      const rtt: number[] = [];
      for (let i = 0; i < latPages; i++) {
        const t = process.hrtime.bigint();
        await client.fetch(KEY_PID, BASE + BigInt(i) * 4096n, 1, { urgent: true });
        rtt.push(Number(process.hrtime.bigint() - t) / 1000);
      }
      const us = (xs: Touch[], k: 'p50Ns' | 'p99Ns'): number => median(xs.map((x) => x[k])) / 1000;
      const r50 = us(remote, 'p50Ns');
      const l50 = us(local, 'p50Ns');
      figs.push(
        { name: 'fault service p50, remote (page server over loopback)', value: r50, unit: 'us', baseline: { name: 'local pages file p50', value: l50 }, target: '<= 3x', met: r50 <= 3 * l50, notes: `${latPages} sequential faults, engine 1 thread, page server in its own process; native path (engine link + native server replies)` },
        { name: 'fault service p99, remote (page server over loopback)', value: us(remote, 'p99Ns'), unit: 'us', baseline: { name: 'local pages file p99', value: us(local, 'p99Ns') } },
        { name: 'fault service p50, remote native path', value: r50, unit: 'us', baseline: { name: 'JS path p50 (need event, client GET, supply)', value: us(viaJs, 'p50Ns') }, notes: 'before/after of the native path, same run' },
        { name: 'fault service p99, remote native path', value: us(remote, 'p99Ns'), unit: 'us', baseline: { name: 'JS path p99', value: us(viaJs, 'p99Ns') } },
        { name: 'fault service p50, remote native path', value: r50, unit: 'us', baseline: { name: 'bare GET round trip p50 (JS client, no uffd)', value: median(rtt) }, notes: 'the native fault path costs about one JS client round trip' },
      );

      // Migration of migMiB: lazy (push over the page server) vs eager copy.
      const lazyMs: number[] = [];
      const eagerMs: number[] = [];
      for (let r = 0; r < rounds; r++) {
        const verify = ['touch', '0', '0', String(migPages)];
        lazyMs.push((await run(ctx, pattern, migPages, { remote: client, push: true, actions: verify })).allInMs);
        const copy = join(ctx.tmpDir, `copy-${r}.img`);
        const tcp = await tcpCopy(pattern, copy);
        const fill = (await run(ctx, copy, migPages, { push: true, actions: verify })).allInMs;
        eagerMs.push(tcp + fill);
        ctx.log(`round ${r}: ${migMiB} MiB lazy ${lazyMs[r]!.toFixed(0)} ms; eager ${(tcp + fill).toFixed(0)} ms (copy ${tcp.toFixed(0)} + fill ${fill.toFixed(0)})`);
      }
      figs.push({
        name: `migration of ${migMiB} MiB, lazy: all memory in the process`, value: median(lazyMs), unit: 'ms',
        baseline: { name: 'eager: TCP copy of the pages file, then fill', value: median(eagerMs) },
        notes: 'lazy: the process runs from t=0 while pages stream; eager: it runs only after the whole copy',
      });
      await client.close();
    } finally {
      client.destroy();
      ps.child.kill('SIGTERM');
      await once(ps.child, 'exit');
    }
    return figs;
  },
};
