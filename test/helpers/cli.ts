// Runs the lazy-restore CLI (bin/lazy-restore.js) as a child process with a
// bounded time, returning its exit code and output.
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const projectRoot: string = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const cliPath: string = join(projectRoot, 'bin', 'lazy-restore.js');

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
