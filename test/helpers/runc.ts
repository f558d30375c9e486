// Debian's runc driving our CLI as its criu (a `criu` symlink to
// build/bin/lr-criu, which answers VERSION itself and runs bin/lazy-restore.js
// for every other request): a busybox-static container bundle in a temp dir
// whose shell loop counts into /tmp/count (on the bundle's rootfs, so the
// test reads it from outside), runc commands with bounded time, and a
// bounded wait for the counter.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { lrCriuPath } from './cli.js';
import { BUSYBOX, COUNT_LOOP, ECHO_COUNT_LOOP, makeBusyboxRootfs, readCount, waitForCountFile } from './counting-rootfs.js';

export { BUSYBOX };

export const RUNC = '/usr/sbin/runc';

/** Why runc tests cannot run here, or undefined. */
export function runcUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  if (!existsSync(RUNC)) return 'runc is not installed (apt-get install runc)';
  if (!existsSync(BUSYBOX)) return 'busybox-static is not installed';
  return undefined;
}

export interface RunResult { code: number; stdout: string; stderr: string }

/** `cmd args` bounded by `timeoutMs`, with `env` (default: ours); its exit code and output. */
export function run(cmd: string, args: string[], timeoutMs = 60_000, env?: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20, env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 255) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * runc with every stdio on /dev/null (a detached container inherits runc's
 * stdio; pipes would be foreign files to dump), its own log in `log`.
 */
export function runQuiet(args: string[], log: string, timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(RUNC, ['--log', log, ...args], { stdio: 'ignore' });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      let stderr = '';
      try {
        stderr = readFileSync(log, 'utf8');
      } catch { /* no log */ }
      resolve({ code: code ?? 255, stdout: '', stderr });
    });
  });
}

export interface Bundle {
  dir: string;
  /** The `criu` symlink runc gets with --criu. */
  criu: string;
  /** The counter file as seen from outside (bundle rootfs /tmp/count). */
  countFile: string;
  id: string;
  runc(args: string[], timeoutMs?: number): Promise<RunResult>;
  /** runc [--criu ours] ARGS with stdio on /dev/null (run -d, restore -d). */
  quiet(args: string[], opts?: { criu?: boolean; timeoutMs?: number }): Promise<RunResult>;
  /** runc --criu <our criu> ARGS. */
  withCriu(args: string[], timeoutMs?: number): Promise<RunResult>;
  count(): number;
  /** The container's init as the host sees it (runc state), or 0. */
  pid(): Promise<number>;
  status(): Promise<string>;
  destroy(): Promise<void>;
}

export interface BundleOptions {
  /** The loop also echoes each count to stdout. */
  echo?: boolean;
  /** Edits config.json before it is written. */
  edit?: (cfg: Record<string, unknown>) => void;
}

/** A bundle under `dir` running (not yet started) the counting loop. */
export async function makeBundle(dir: string, id: string, opts: BundleOptions = {}): Promise<Bundle> {
  const rootfs = join(dir, 'rootfs');
  makeBusyboxRootfs(rootfs, ['sh', 'sleep', 'cat', 'ps', 'hostname', 'ls']);
  const spec = await run(RUNC, ['spec', '--bundle', dir]);
  if (spec.code !== 0) throw new Error(`runc spec: ${spec.stderr}`);
  const cfgPath = join(dir, 'config.json');
  const cfg = JSON.parse(readFileSync(cfgPath, 'utf8')) as { process: { terminal: boolean; args: string[] }; root: { readonly: boolean }; hostname?: string };
  cfg.process.terminal = false;
  cfg.process.args = ['/bin/sh', '-c', opts.echo ? ECHO_COUNT_LOOP : COUNT_LOOP];
  // CRIU needs a writable root too (it makes a temporary directory in it).
  cfg.root.readonly = false;
  cfg.hostname = 'lr-runc';
  opts.edit?.(cfg as unknown as Record<string, unknown>);
  writeFileSync(cfgPath, JSON.stringify(cfg, null, 1));
  const binDir = join(dir, '..', 'bin');
  mkdirSync(binDir, { recursive: true });
  const criu = join(binDir, 'criu');
  if (!existsSync(criu)) symlinkSync(lrCriuPath, criu);
  const countFile = join(rootfs, 'tmp', 'count');
  const b: Bundle = {
    dir, criu, countFile, id,
    runc: (args, t) => run(RUNC, args, t),
    quiet: (args, o = {}) => runQuiet([...(o.criu ? ['--criu', criu] : []), ...args], join(dir, '..', `runc-${id}.log`), o.timeoutMs),
    withCriu: (args, t) => run(RUNC, ['--criu', criu, ...args], t),
    count: () => readCount(countFile),
    pid: async () => {
      const r = await run(RUNC, ['state', id]);
      if (r.code !== 0) return 0;
      return (JSON.parse(r.stdout) as { pid: number }).pid;
    },
    status: async () => {
      const r = await run(RUNC, ['state', id]);
      if (r.code !== 0) return 'gone';
      return (JSON.parse(r.stdout) as { status: string }).status;
    },
    destroy: async () => {
      await run(RUNC, ['delete', '-f', id]);
    },
  };
  return b;
}

/** Resolves once the bundle's counter reaches at least `min` (bounded);
 *  every non-zero count read on the way is pushed to `seen`. */
export function waitForCount(b: Bundle, min: number, timeoutMs: number, seen?: number[]): Promise<number> {
  return waitForCountFile(b.countFile, min, timeoutMs, seen);
}
