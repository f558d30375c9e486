// Whole commands, lazy-restore vs CRIU 4.2 (issue 14), side by side on the
// same workload (build/bin/bench-mem-service: N MiB of patterned memory that
// verifies itself after a restore) and the same flow, alternating runs,
// medians, ratios lazy-restore / CRIU:
//   dump                      `dump -t PID -D DIR` (whole command)
//   eager answer              `restore -D DIR -d`, then SIGUSR1: until the program's verified answer
//   lazy answer               `lazy-pages -D DIR` (status byte), `restore --lazy-pages -d`, SIGUSR1: until the answer (all memory touched)
//   first response            the same with 1 GiB of which the program touches 1% (one page in 100);
//                             lazy-restore also with a recorded working set (CRIU has none)
//   post-copy total/downtime  workload in its own pid namespace (`unshare -pf setsid`), `dump --lazy-pages --port`,
//                             copy the images, `lazy-pages --page-server`, `restore --lazy-pages -d` (+ --pidns for
//                             lazy-restore): dump start -> verified answer, and dump start -> restore returned
// Every command runs under build/bin/bench-reaper (a child subreaper that reaps
// whatever the command leaves behind at once and reports when the command
// itself exited). CRIU is the binary named by CRIU=/path (skipped with a
// clear line without it); its post-copy needs fs.pipe-max-size >= 4 MiB,
// raised here for the run and put back. Physical baselines (no CRIU needed):
// raw process_vm_readv + write, raw read + process_vm_writev, loopback TCP.
// --quick: 16 MiB (first response 64 MiB), one run each, no post-copy at 2 GiB.
// For a run on a shared machine: VS_CRIU_SIZES=16,512,2048 (sizes of the
// dump/eager/lazy rows and the physical baselines), VS_CRIU_REPS=N (runs per
// tool and row), VS_CRIU_ROWS=dump,eager,lazy,first,postcopy,physical (which
// groups run; dump is needed by eager and lazy at the same size),
// VS_CRIU_POSTCOPY_SIZES=16,512,2048 (post-copy sizes; default 2048).
// NODE_EXTRA_CA_CERTS is cleared for the commands (see commandEnv).
import { spawn, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { helperPath } from '../../plugin/native/addon.js';
import { logTail } from '../log-tail.js';
import { median, type BenchContext, type BenchFigure, type BenchSuite } from '../types.js';

const cliMain = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'lazy-restore.js');
const STEP_MS = Number(process.env.BENCH_STEP_MS ?? 300_000);

interface Tool { name: 'criu' | 'lazy-restore'; argv: string[] }

/** Process groups of the reapers still running (each command runs in its own group). */
const live = new Set<number>();
/** After a failed step: SIGKILL every command still running, with what it started in its group. */
function killAll(): void {
  for (const g of live) try { process.kill(-g, 'SIGKILL'); } catch { /* gone */ }
}

const nowMs = (): number => performance.timeOrigin + performance.now();

/** A command under bench-reaper: fd 3 is its status fd (first byte = ready), the reaper reports on fd 4. */
interface Run {
  /** Wall time (ms, epoch) when the command itself exited, and its status. */
  cmd: Promise<{ code: number; atMs: number }>;
  /** The command and everything it left behind are gone (the reaper's status = the command's). */
  all: Promise<number>;
  /** First byte on its status fd. */
  status: Promise<void>;
  stderr: () => string;
  pid: number;
}

/**
 * The commands' environment: ours, without NODE_EXTRA_CA_CERTS unless
 * VS_CRIU_KEEP_CA_CERTS=1. A sandbox that sets it for every process (this
 * one does) makes node parse that certificate bundle at every start-up,
 * before any of our code runs (~40 ms CPU per command; no command here uses
 * the default TLS trust store), which a normal install does not pay.
 */
const commandEnv: NodeJS.ProcessEnv = (() => {
  const env = { ...process.env };
  if (process.env.VS_CRIU_KEEP_CA_CERTS !== '1') delete env.NODE_EXTRA_CA_CERTS;
  return env;
})();

function run(tool: Tool, args: string[]): Run {
  const child = spawn(helperPath('bench-reaper'), ['4', ...tool.argv, ...args], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'], detached: true, env: commandEnv });
  live.add(child.pid!);
  child.on('close', () => live.delete(child.pid!));
  let err = '';
  child.stderr!.on('data', (b: Buffer) => { err += b.toString(); if (err.length > 20000) err = err.slice(-10000); });
  const all = new Promise<number>((res) => child.on('close', (code) => res(code ?? -1)));
  const report = child.stdio[4] as NodeJS.ReadableStream;
  let line = '';
  const cmd = new Promise<{ code: number; atMs: number }>((res, rej) => {
    report.on('data', (b: Buffer) => { line += b.toString(); });
    report.on('end', () => {
      const m = /^exit (-?\d+) (\d+)/.exec(line);
      if (m) res({ code: Number(m[1]), atMs: Number(BigInt(m[2]!) / 1000n) / 1000 });
      else rej(new Error(`${tool.name} ${args.join(' ')}: no exit report (${err.trim().slice(-300)})`));
    });
  });
  cmd.catch(() => {});
  const st = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
  const status = new Promise<void>((res, rej) => {
    st.once('data', () => { res(); st.destroy(); });
    st.on('end', () => rej(new Error(`${tool.name} ${args[0]}: exited before its status byte: ${err.trim().slice(-300)}`)));
    st.on('error', () => {});
  });
  status.catch(() => {});
  return { cmd, all, status, stderr: () => err, pid: child.pid! };
}

async function ok(r: Run, what: string): Promise<number> {
  const c = await bounded(r.cmd, what);
  if (c.code !== 0) throw new Error(`${what}: exit ${c.code}: ${r.stderr().trim().slice(-500)}`);
  return c.atMs;
}

function bounded<T>(p: Promise<T>, what: string, ms = STEP_MS): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, rej) => { t = setTimeout(() => rej(new Error(`timed out: ${what}`)), ms); })]).finally(() => clearTimeout(t));
}

function waitFile(path: string, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const w = watch(dirname(path), () => { if (existsSync(path)) done(); });
    const timer = setTimeout(() => { w.close(); reject(new Error(`timed out waiting for ${what}`)); }, STEP_MS);
    const done = (): void => { clearTimeout(timer); w.close(); resolve(); };
    if (existsSync(path)) done();
  });
}

/** The program's verdict: its CLOCK_REALTIME (ms) when it finished checking. */
async function answer(ctrl: string): Promise<number> {
  const f = join(ctrl, 'result');
  await waitFile(f, 'the verified answer');
  const text = readFileSync(f, 'utf8').trim();
  const m = /^ok (\d+)/.exec(text);
  if (!m) throw new Error(`the restored program says: ${text}`);
  return Number(BigInt(m[1]!) / 1000n) / 1000;
}

/** A running bench-mem-service (its host pid), started fresh. */
interface Service { pid: number; exited: Promise<void> }

async function startService(ctrl: string, mib: number, percent: number, pidns: boolean): Promise<Service> {
  rmSync(ctrl, { recursive: true, force: true });
  mkdirSync(ctrl, { recursive: true });
  const prog = helperPath('bench-mem-service');
  const args = [ctrl, String(mib), String(percent)];
  const child = pidns
    ? spawn('unshare', ['-pf', 'setsid', prog, ...args], { stdio: 'ignore' })
    : spawn(prog, args, { stdio: 'ignore', detached: true });
  const exited = new Promise<void>((res) => child.on('close', () => res()));
  await Promise.race([waitFile(join(ctrl, 'ready'), 'the workload to fill its memory'), exited.then(() => { throw new Error('bench-mem-service exited early'); })]);
  let pid = child.pid!;
  if (pidns) pid = Number(readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0]);
  rmSync(join(ctrl, 'ready'));
  return { pid, exited };
}

/** The restored program: the pid file's process, or its child (lazy-restore --pidns: the file names the namespace's init). */
function serviceOf(pidfile: string): number {
  const p = Number(readFileSync(pidfile, 'utf8'));
  const comm = (x: number): string => { try { return readFileSync(`/proc/${x}/comm`, 'utf8').trim(); } catch { return ''; } };
  if (comm(p).startsWith('bench-mem-serv')) return p;
  for (const c of readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).map(Number)) if (comm(c).startsWith('bench-mem-serv')) return c;
  throw new Error(`no bench-mem-service at pid ${p} or below`);
}

function freshDir(d: string): string {
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true });
  return d;
}

function clearRun(ctrl: string, images: string): void {
  rmSync(join(ctrl, 'result'), { force: true });
  for (const f of readdirSync(images)) if (f.endsWith('.pid') || f.endsWith('.socket')) rmSync(join(images, f), { force: true });
}

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const a = s.address(); s.close(() => (typeof a === 'object' && a ? res(a.port) : rej(new Error('no port')))); });
  });
}

// ---- the flows (same for both tools) ---------------------------------------

async function timeDump(tool: Tool, ctrl: string, images: string, mib: number, percent = 100): Promise<number> {
  const svc = await startService(ctrl, mib, percent, false);
  freshDir(images);
  // Untimed: write back what earlier runs left dirty, so neither tool's dump is
  // throttled by the other's pages still going to disk.
  execFileSync('sync', { timeout: STEP_MS });
  const t0 = nowMs();
  const end = await ok(run(tool, ['dump', '-t', String(svc.pid), '-D', images, '-o', 'dump.log']), `${tool.name} dump`);
  await bounded(svc.exited, 'the dumped workload to be killed');
  return end - t0;
}

async function timeEager(tool: Tool, ctrl: string, images: string): Promise<number> {
  clearRun(ctrl, images);
  const t0 = nowMs();
  const r = run(tool, ['restore', '-D', images, '-d', '-o', 'restore.log', '--pidfile', 'r.pid']);
  await ok(r, `${tool.name} restore -d`);
  process.kill(serviceOf(join(images, 'r.pid')), 'SIGUSR1');
  const at = await answer(ctrl);
  await bounded(r.all, 'the restored workload to exit');
  return at - t0;
}

/** `lazy-pages` (status byte) then `restore --lazy-pages -d`, SIGUSR1: ms until the answer and until restore returned. */
async function timeLazy(tool: Tool, ctrl: string, images: string, extra: string[] = []): Promise<{ answer: number; returned: number }> {
  clearRun(ctrl, images);
  const t0 = nowMs();
  const lp = run(tool, ['lazy-pages', '-D', images, '-o', 'lazy-pages.log', '--status-fd', '3', ...extra]);
  try {
    await bounded(lp.status, `${tool.name} lazy-pages to listen`);
    const r = run(tool, ['restore', '-D', images, '--lazy-pages', '-d', '-o', 'restore.log', '--pidfile', 'r.pid']);
    const back = await ok(r, `${tool.name} restore --lazy-pages -d`);
    process.kill(serviceOf(join(images, 'r.pid')), 'SIGUSR1');
    const at = await answer(ctrl);
    await bounded(r.all, 'the restored workload to exit');
    await bounded(lp.all, `${tool.name} lazy-pages to exit once served`);
    return { answer: at - t0, returned: back - t0 };
  } catch (e) {
    killAll();
    throw e;
  }
}

/** lazy-restore's own one-command flow: `restore --lazy-pages -d` (detached daemon). */
async function timeLazyOneCommand(tool: Tool, ctrl: string, images: string): Promise<number> {
  clearRun(ctrl, images);
  const t0 = nowMs();
  const r = run(tool, ['restore', '-D', images, '--lazy-pages', '-d', '-o', 'restore.log', '--pidfile', 'r.pid']);
  try {
    await ok(r, `${tool.name} restore --lazy-pages -d`);
    process.kill(serviceOf(join(images, 'r.pid')), 'SIGUSR1');
    const at = await answer(ctrl);
    await bounded(r.all, 'the workload and the detached daemon to exit');
    return at - t0;
  } catch (e) {
    killAll();
    throw new Error(`${(e as Error).message}; lazy-pages.log: ${logTail(join(images, 'lazy-pages.log'), { chars: 600 })}; restore.log: ${logTail(join(images, 'restore.log'), { chars: 600 })}`);
  }
}

/**
 * Post-copy on one host: ms from the dump's start to the verified answer, and to restore returned;
 * phases (ms from the dump's start): the source page server listens, the destination daemon listens.
 */
async function timePostCopy(tool: Tool, ctrl: string, dir: string, mib: number): Promise<{ total: number; downtime: number; listen: number; daemon: number }> {
  const svc = await startService(ctrl, mib, 100, true);
  const src = freshDir(join(dir, 'src'));
  const dst = join(dir, 'dst');
  rmSync(dst, { recursive: true, force: true });
  const port = await freePort();
  const t0 = nowMs();
  const dump = run(tool, ['dump', '-t', String(svc.pid), '-D', src, '-o', 'dump.log', '--lazy-pages', '--address', '127.0.0.1', '--port', String(port), '--status-fd', '3']);
  let lp: Run | undefined;
  try {
    await bounded(dump.status, `${tool.name} dump --lazy-pages to listen`);
    const listen = nowMs() - t0;
    cpSync(src, dst, { recursive: true, filter: (s) => !s.endsWith('.log') });
    lp = run(tool, ['lazy-pages', '-D', dst, '-o', 'lazy-pages.log', '--page-server', '--address', '127.0.0.1', '--port', String(port), '--status-fd', '3']);
    await bounded(lp.status, `${tool.name} lazy-pages --page-server to listen`);
    const daemon = nowMs() - t0;
    // A dump of a pid namespace's init is restored into a new one by both tools.
    const r = run(tool, ['restore', '-D', dst, '--lazy-pages', '-d', '-o', 'restore.log', '--pidfile', 'r.pid']);
    const back = await ok(r, `${tool.name} restore --lazy-pages -d`);
    process.kill(serviceOf(join(dst, 'r.pid')), 'SIGUSR1');
    const at = await answer(ctrl);
    await bounded(r.all, 'the restored workload to exit');
    await bounded(lp.all, 'lazy-pages to exit');
    await bounded(dump.all, 'the source dump to end');
    await bounded(svc.exited, 'the source workload to be killed');
    return { total: at - t0, downtime: back - t0, listen, daemon };
  } catch (e) {
    killAll();
    try { process.kill(svc.pid, 'SIGKILL'); } catch { /* gone */ }
    throw e;
  }
}

// ---- physical baselines ---------------------------------------------------------

function physical(args: string[]): number {
  return Number(execFileSync(helperPath('bench-physical'), args, { encoding: 'utf8', timeout: STEP_MS }).trim());
}

// ---- the suite -------------------------------------------------------------------

function pipeMaxSize(): number {
  return Number(readFileSync('/proc/sys/fs/pipe-max-size', 'utf8').trim());
}

/** Alternating runs: criu, ours, criu, ours... (ours only without CRIU). */
async function alternate<T>(tools: Tool[], reps: number, f: (t: Tool) => Promise<T>): Promise<Map<Tool['name'], T[]>> {
  const out = new Map<Tool['name'], T[]>();
  for (let i = 0; i < reps; i++) {
    for (const t of i % 2 ? [...tools].reverse() : tools) {
      const v = await f(t);
      if (!out.has(t.name)) out.set(t.name, []);
      out.get(t.name)!.push(v);
    }
  }
  return out;
}

export const suite: BenchSuite = {
  name: 'vs-criu',
  async run(ctx: BenchContext): Promise<BenchFigure[]> {
    try {
      return await runSuite(ctx);
    } catch (e) {
      killAll();
      throw e;
    }
  },
};

async function runSuite(ctx: BenchContext): Promise<BenchFigure[]> {
  {
    const criuPath = process.env.CRIU;
    const ours: Tool = { name: 'lazy-restore', argv: [process.execPath, cliMain] };
    const criu: Tool | undefined = criuPath && existsSync(criuPath) ? { name: 'criu', argv: [criuPath] } : undefined;
    if (!criu) ctx.log(`CRIU=${criuPath ?? ''} ${criuPath ? 'does not exist' : 'is not set'}: the CRIU side of every row is skipped (set CRIU=/path/to/criu 4.2)`);
    const tools = criu ? [criu, ours] : [ours];
    if (process.env.NODE_EXTRA_CA_CERTS && process.env.VS_CRIU_KEEP_CA_CERTS !== '1') ctx.log('NODE_EXTRA_CA_CERTS is cleared for the commands (node would parse it at every start-up; VS_CRIU_KEEP_CA_CERTS=1 keeps it)');
    const figs: BenchFigure[] = [];
    const load = (): string => `load ${loadavg().map((x) => x.toFixed(1)).join('/')}`;
    const fmtRuns = (xs: number[]): string => xs.map((x) => x.toFixed(0)).join(', ');
    const row = (name: string, m: Map<Tool['name'], number[]>, target: number | undefined, unit = 'ms', oursKey: Tool['name'] = 'lazy-restore'): void => {
      const o = m.get(oursKey)!;
      const c = m.get('criu');
      const v = median(o);
      const notes = `lazy-restore ${fmtRuns(o)}${c ? `; criu ${fmtRuns(c)}` : '; CRIU skipped (CRIU=/path not set)'}; ${load()}`;
      ctx.log(`${name}: ${notes}`);
      if (c) {
        const b = median(c);
        figs.push({ name, value: v, unit, baseline: { name: 'CRIU 4.2', value: b }, ...(target !== undefined ? { target: `<= ${target}x CRIU`, met: v / b <= target } : {}), notes });
      } else {
        figs.push({ name, value: v, unit, notes });
      }
    };
    const envList = (name: string): string[] | undefined => process.env[name]?.split(',').map((x) => x.trim()).filter(Boolean);
    const sizes = ctx.quick ? [16] : (envList('VS_CRIU_SIZES')?.map(Number) ?? [16, 512, 2048]);
    const envReps = Number(process.env.VS_CRIU_REPS ?? 0);
    const reps = (mib: number): number => (ctx.quick ? 1 : envReps > 0 ? envReps : mib >= 2048 ? 3 : 5);
    const rows = new Set(envList('VS_CRIU_ROWS') ?? ['dump', 'eager', 'lazy', 'first', 'postcopy', 'physical']);
    const ctrl = join(ctx.tmpDir, 'ctrl');
    const img = (t: Tool, tag: string): string => join(ctx.tmpDir, `${t.name}-${tag}`);

    for (const mib of rows.has('dump') ? sizes : []) {
      // dump (whole command); leaves each tool's images for the restores.
      const dumps = await alternate(tools, reps(mib), (t) => timeDump(t, ctrl, img(t, `${mib}`), mib));
      row(`dump, ${mib} MiB`, dumps, 1.0);
      if (rows.has('eager')) {
        const eager = await alternate(tools, reps(mib), (t) => timeEager(t, ctrl, img(t, `${mib}`)));
        row(`eager restore -d -> verified answer, ${mib} MiB`, eager, 1.0);
      }
      if (rows.has('lazy')) {
      // Two commands (both tools), then lazy-restore's one command (restore --lazy-pages -d
      // starts its own detached daemon; CRIU has no such flow: its two-command figure is the baseline).
      const both = await alternate(tools, reps(mib), async (t) => ({
        two: (await timeLazy(t, ctrl, img(t, `${mib}`))).answer,
        one: t === ours ? await timeLazyOneCommand(t, ctrl, img(t, `${mib}`)) : 0,
      }));
      const lazy = new Map([...both].map(([n, xs]) => [n, xs.map((x) => x.two)]));
      row(`lazy restore (lazy-pages + restore --lazy-pages -d) -> verified answer, ${mib} MiB`, lazy, 0.8);
      const one = new Map<Tool['name'], number[]>([['lazy-restore', both.get('lazy-restore')!.map((x) => x.one)]]);
      if (lazy.has('criu')) one.set('criu', lazy.get('criu')!);
      row(`lazy restore, one command (restore --lazy-pages -d, detached daemon) -> verified answer, ${mib} MiB`, one, 0.8);
      }
      for (const t of tools) rmSync(img(t, `${mib}`), { recursive: true, force: true });
    }

    // First response: a 1 GiB service touching 1% of its memory.
    if (rows.has('first')) {
      const mib = ctx.quick ? 64 : 1024;
      const n = ctx.quick ? 1 : 5;
      for (const t of tools) await timeDump(t, ctrl, img(t, 'first'), mib, 1);
      const first = await alternate(tools, n, async (t) => (await timeLazy(t, ctrl, img(t, 'first'))).answer);
      row(`first response (1% touched), ${mib} MiB`, first, 0.5);
      // Record a working set once, then restore with it.
      await timeLazy(ours, ctrl, img(ours, 'first'), ['--record-working-set=30']);
      const ws = await alternate([ours], n, async (t) => (await timeLazy(t, ctrl, img(t, 'first'))).answer);
      if (first.has('criu')) ws.set('criu', first.get('criu')!);
      row(`first response (1% touched) with a recorded working set, ${mib} MiB`, ws, 0.25);
      for (const t of tools) rmSync(img(t, 'first'), { recursive: true, force: true });
    }

    // Post-copy on one host.
    for (const mib of rows.has('postcopy') ? (ctx.quick ? [16] : (envList('VS_CRIU_POSTCOPY_SIZES')?.map(Number) ?? [2048])) : []) {
      const before = pipeMaxSize();
      const raise = criu !== undefined && before < 4 << 20;
      if (raise) writeFileSync('/proc/sys/fs/pipe-max-size', String(4 << 20));
      try {
        const pc = await alternate(tools, ctx.quick ? 1 : envReps > 0 ? envReps : 3, (t) => timePostCopy(t, ctrl, img(t, 'postcopy'), mib));
        const pick = (k: 'total' | 'downtime' | 'listen' | 'daemon'): Map<Tool['name'], number[]> => new Map([...pc].map(([n, xs]) => [n, xs.map((x) => x[k])]));
        for (const [n, xs] of pc) {
          ctx.log(`post-copy ${mib} MiB, ${n}: source listens at ${fmtRuns(xs.map((x) => x.listen))} ms, destination daemon at ${fmtRuns(xs.map((x) => x.daemon))} ms`);
        }
        row(`post-copy ${mib} MiB: dump start -> source page server listens`, pick('listen'), undefined);
        row(`post-copy ${mib} MiB: dump start -> verified answer`, pick('total'), 0.4);
        row(`post-copy ${mib} MiB: downtime (dump start -> restore returned)`, pick('downtime'), 1.0);
      } finally {
        if (raise) writeFileSync('/proc/sys/fs/pipe-max-size', String(before));
        for (const t of tools) rmSync(img(t, 'postcopy'), { recursive: true, force: true });
      }
    }

    // Physical baselines (what the machine allows, no image format).
    for (const mib of rows.has('physical') ? sizes : []) {
      const f = join(ctx.tmpDir, 'raw.img');
      const d: number[] = [], r: number[] = [], tcp: number[] = [];
      for (let i = 0; i < (ctx.quick ? 1 : Math.max(3, envReps)); i++) {
        d.push(physical(['dump', String(mib), f]));
        r.push(physical(['restore', f]));
        tcp.push(physical(['tcp', String(mib)]));
      }
      rmSync(f, { force: true });
      figs.push({ name: `physical: raw process_vm_readv + write, ${mib} MiB`, value: median(d), unit: 'ms', notes: `${fmtRuns(d)}; ${load()}` });
      figs.push({ name: `physical: raw read + process_vm_writev, ${mib} MiB`, value: median(r), unit: 'ms', notes: `${fmtRuns(r)}; ${load()}` });
      figs.push({ name: `physical: loopback TCP, ${mib} MiB`, value: median(tcp), unit: 'ms', notes: `${fmtRuns(tcp)}; ${load()}` });
    }
    return figs;
  }
}
