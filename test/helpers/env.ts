// Shared test utilities: temp dirs (removed after), fd-leak checks, bounded
// waits and child processes started and reaped by the test itself.
import { readdirSync, readlinkSync } from 'node:fs';
import tmp from 'tmp';

tmp.setGracefulCleanup();

/** A temp directory removed (recursively) when dispose() is called. */
export function tempDir(prefix = 'lr-test-'): { path: string; dispose: () => void } {
  const d = tmp.dirSync({ prefix, unsafeCleanup: true });
  return { path: d.name, dispose: () => d.removeCallback() };
}

/** Snapshot of this process's open fds: number -> link target. */
export function openFds(): Map<number, string> {
  const m = new Map<number, string>();
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      m.set(Number(name), readlinkSync(`/proc/self/fd/${name}`));
    } catch {
      /* the fd used by readdir itself is gone by now */
    }
  }
  return m;
}

/** Fds open now that were not open in `before` (ignoring ones that come and go in node itself). */
export function leakedFds(before: Map<number, string>): string[] {
  const after = openFds();
  const leaks: string[] = [];
  for (const [fd, target] of after) {
    if (before.get(fd) === target) continue;
    if (target.startsWith('anon_inode:[eventpoll]') || target.startsWith('anon_inode:[eventfd]')) continue;
    leaks.push(`${fd} -> ${target}`);
  }
  return leaks;
}

/** Rejects if `p` does not settle within `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** True when running as root (most integration tests need it). */
export const isRoot: boolean = process.getuid?.() === 0;
