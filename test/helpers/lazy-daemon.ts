// Our lazy-pages daemon (the CLI) run as a child of the test.
import { spawn } from 'node:child_process';
import { cliPath } from './cli.js';
import { withTimeout } from './env.js';

/** Our lazy-pages daemon on IMAGES/lazy-pages.socket (extra: more options); resolves once it listens (--status-fd). */
export async function startLazyPagesDaemon(images: string, extra: string[] = []): Promise<{ exit: Promise<{ code: number | null; stderr: string }> }> {
  const child = spawn(process.execPath, [cliPath, 'lazy-pages', '-D', images, '--status-fd', '3', ...extra], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const exit = new Promise<{ code: number | null; stderr: string }>((resolve) => child.on('close', (code) => resolve({ code, stderr })));
  try {
    await withTimeout(new Promise<void>((resolve, reject) => {
      (child.stdio[3] as NodeJS.ReadableStream).once('data', () => resolve());
      child.once('close', () => reject(new Error(`lazy-pages exited before listening: ${stderr}`)));
    }), 20_000, 'lazy-pages listening');
  } catch (e) {
    child.kill('SIGKILL');
    await exit;
    throw e;
  }
  return { exit: withTimeout(exit, 60_000, 'lazy-pages exit') };
}
