// Runs the lazy-restore CLI (bin/lazy-restore.js) as a child process with a
// bounded time, returning its exit code and output.
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const projectRoot: string = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const cliPath: string = join(projectRoot, 'bin', 'lazy-restore.js');
/** The `criu` to give container runtimes (native/helpers/lr-criu.c): answers VERSION itself, runs the CLI for the rest. */
export const lrCriuPath: string = join(projectRoot, 'build', 'bin', 'lr-criu');

export interface CliResult { code: number; stdout: string; stderr: string }

export function runCli(args: string[], opts: { timeoutMs?: number; cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [cliPath, ...args], { timeout: opts.timeoutMs ?? 60_000, cwd: opts.cwd, env: opts.env ?? process.env, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          reject(new Error(`lazy-restore ${args.join(' ')}: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
      });
  });
}

/**
 * runCli in a child that dropped capability `cap` (e.g. 'sys_resource') from
 * its bounding set before exec: as root it then runs with every capability
 * but that one (util-linux setpriv), whatever the test process holds.
 */
export function runCliWithoutCap(cap: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile('/usr/bin/setpriv', [`--bounding-set=-${cap}`, `--inh-caps=-${cap}`, '--', process.execPath, cliPath, ...args], { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          reject(new Error(`setpriv -${cap} lazy-restore ${args.join(' ')}: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
      });
  });
}
