// Shared set-up for the tests of the engine's remote paths (native GETs,
// bulk pull): a fault engine serving a uffd-harness whose one region is
// remote, the images a page server serves for it, and raw connections
// whose fd is handed to the engine.
import { once } from 'node:events';
import net from 'node:net';
import { join } from 'node:path';
import { ImageDir } from '../../plugin/images/index.js';
import { PE_LAZY, PE_PRESENT } from '../../plugin/pageserver/protocol.js';
import { socketFd } from '../../plugin/pageserver/transport.js';
import { FaultEngine, type EngineEvent } from '../../plugin/uffd/engine.js';
import { withTimeout } from './env.js';
import { startHarness, writePattern, type Harness } from './uffd.js';

export type NeedEvent = Extract<EngineEvent, { type: 'need' }>;

/** Waits for a condition driven by other processes/threads, bounded. */
export async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  await withTimeout((async () => {
    while (!pred()) await new Promise((r) => setTimeout(r, 5));
  })(), ms, what);
}

/** Images of task `pid` whose lazy pages are the pattern bytes at dump-time address `base` (served by a page server). */
export async function patternImages(dir: string, bytes: Buffer, base: bigint, pid: number): Promise<void> {
  const img = await ImageDir.create(dir);
  const w = await img.pagemapWriter(pid, 1);
  await w.add(base, bytes.length / 4096, PE_LAZY | PE_PRESENT, bytes);
  await w.close();
}

/** Connects a raw socket to port and hands its fd to `use` (which must keep its own duplicate); the socket is then destroyed. */
export async function withConnectedFd<T>(port: number, use: (fd: number) => T): Promise<T> {
  const sock = net.connect({ host: '127.0.0.1', port });
  await withTimeout(once(sock, 'connect'), 5000, 'connect');
  sock.pause();
  try {
    return use(socketFd(sock)!);
  } finally {
    sock.destroy();
  }
}

export interface Rig {
  engine: FaultEngine;
  events: EngineEvent[];
  h: Harness;
  proc: number;
  bytes: Buffer;
}

export interface RigOptions {
  dir: string;
  pages: number;
  actions: string[];
  faultAround: number;
  /** Dump-time address of pattern page 0 and the remote pid. */
  base: bigint;
  pid: number;
  /** Called before the harness starts (e.g. to attach links). */
  link?: (e: FaultEngine) => Promise<void>;
  onNeed?: (ev: NeedEvent, e: FaultEngine, bytes: Buffer) => void;
}

/** Engine (1 thread) serving a harness whose region is remote (dump-time base + offset). */
export async function remoteRig(o: RigOptions): Promise<Rig> {
  const pat = join(o.dir, 'pattern.img');
  const bytes = writePattern(pat, o.pages);
  const events: EngineEvent[] = [];
  let engine!: FaultEngine;
  engine = FaultEngine.create({
    threads: 1,
    faultAroundPages: o.faultAround,
    onEvents: (evs) => {
      for (const ev of evs) {
        events.push(ev);
        if (ev.type === 'need') o.onNeed?.(ev, engine, bytes);
      }
    },
  });
  try {
    await o.link?.(engine);
    const h = await startHarness({ dir: o.dir, pattern: pat, regions: [o.pages], actions: o.actions });
    const r = h.regions[0]!;
    const proc = engine.adopt(h.uffd, [{ start: r.addr, end: r.addr + r.len, src: { kind: 'remote', imageAddr: o.base + r.fileoff } }], { remotePid: o.pid });
    return { engine, events, h, proc, bytes };
  } catch (e) {
    await engine.close();
    throw e;
  }
}

/** Answers a 'need' from the pattern bytes at dump-time address `base` (the JS path, as the daemon would). */
export function supplyFrom(bytes: Buffer, base: bigint) {
  return (ev: NeedEvent, e: FaultEngine): void => {
    const off = Number(ev.imageAddr - base);
    e.supply(ev.proc, ev.imageAddr, bytes.subarray(off, off + Number(ev.len)));
  };
}
