// Real server programs for checkpoint tests: started as session leaders
// (setsid, like daemons: no --shell-job needed) with stdio on files in a
// temp dir, a readiness line awaited in their log (bounded), HTTP GETs with
// a timeout, and disposal that SIGKILLs only the pid started here.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { tempDir } from './env.js';
import { until } from './proc.js';

const CLOSE_AND_EXEC = 'import os, sys\nos.closerange(3, 1 << 16)\nos.execvp(sys.argv[1], sys.argv[1:])';

export interface Server {
  child: ChildProcess;
  pid: number;
  dir: string;
  /** Resolves once node reaped the process (exit code or signal name). */
  exited: Promise<number | string>;
  log(): string;
  dispose(): Promise<void>;
}

/** Starts `cmd args` in a fresh temp dir (its cwd) and waits until its log matches `ready`. */
export async function startServer(cmd: string, args: string[], ready: RegExp, opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<Server> {
  const d = tempDir('events-inet-srv-');
  const logPath = join(d.path, 'server.log');
  const out = openSync(logPath, 'a');
  const nul = openSync('/dev/null', 'r');
  let child: ChildProcess;
  try {
    // Through a tiny exec wrapper that closes every fd above stdio: whatever
    // the test runner inherited (a shell's pipes) is not the server's.
    child = spawn('/usr/bin/python3', ['-c', CLOSE_AND_EXEC, cmd, ...args], { cwd: d.path, stdio: [nul, out, out], detached: true, env: opts.env ?? process.env });
  } finally {
    closeSync(out);
    closeSync(nul);
  }
  let alive = true;
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, sig) => {
    alive = false;
    resolve(code ?? sig ?? -1);
  }));
  const log = (): string => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
  const dispose = async (): Promise<void> => {
    if (alive) child.kill('SIGKILL');
    await exited;
    d.dispose();
  };
  try {
    await until(() => ready.test(log()) || !alive, opts.timeoutMs ?? 20000, () => `${cmd} ready (log: ${log().slice(-300)})`);
    if (!alive) throw new Error(`${cmd} exited before it was ready: ${log().slice(-300)}`);
  } catch (e) {
    await dispose();
    throw e;
  }
  return { child, pid: child.pid!, dir: d.path, exited, log, dispose };
}

/** GET http://host:port/path → status and body (bounded). */
export function httpGet(port: number, path: string, host = '127.0.0.1', timeoutMs = 10000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** Kills a restored root (SIGKILL, by pid) unless it is gone. */
export function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** TCP sockets of `pid` that are not listening (an HTTP client's connection the server has not closed yet). */
export function connectedTcpSockets(pid: number): number {
  const inodes = new Set<string>();
  for (const f of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${f}`));
      if (m) inodes.add(m[1]!);
    } catch {
      /* closed meanwhile */
    }
  }
  let n = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && inodes.has(f[9]!) && f[3] !== '0A') n++;
    }
  }
  return n;
}

/** Waits (bounded) until the server holds no connection, only its listening socket: a dump without --tcp-established needs that. */
export async function idle(pid: number, timeoutMs = 10000): Promise<void> {
  await until(() => connectedTcpSockets(pid) === 0, timeoutMs, `pid ${pid} to close its client connections`);
}
