// A busybox-static root file system for containers (runc bundles, podman
// images) whose shell loop counts into /tmp/count, and bounded reads of
// that counter from outside (inotify on its directory, no polling sleeps).
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, watch } from 'node:fs';
import { join } from 'node:path';

export const BUSYBOX = '/bin/busybox';

/** The container's shell: counts into /tmp/count ten times a second. */
export const COUNT_LOOP = 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done';
/** The same loop also writing each count to its stdout. */
export const ECHO_COUNT_LOOP = 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count; echo $i; sleep 0.1; done';

/** `rootfs` with bin/busybox, a symlink to it for each tool, and an empty tmp. */
export function makeBusyboxRootfs(rootfs: string, tools: readonly string[]): void {
  mkdirSync(join(rootfs, 'bin'), { recursive: true });
  mkdirSync(join(rootfs, 'tmp'));
  copyFileSync(BUSYBOX, join(rootfs, 'bin', 'busybox'));
  for (const x of tools) symlinkSync('busybox', join(rootfs, 'bin', x));
}

/** The counter in `file`, 0 while it is missing or empty. */
export function readCount(file: string): number {
  try {
    return Number(readFileSync(file, 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

/** Resolves once the counter in `file` reaches at least `min` (bounded);
 *  every non-zero count read on the way is pushed to `seen`. */
export function waitForCountFile(file: string, min: number, timeoutMs: number, seen?: number[]): Promise<number> {
  return new Promise((resolve, reject) => {
    let done = false;
    const check = (): void => {
      if (done) return;
      const c = readCount(file);
      if (c > 0) seen?.push(c);
      if (c >= min) {
        done = true;
        clearTimeout(timer);
        w.close();
        resolve(c);
      }
    };
    const w = watch(join(file, '..'), () => check());
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      w.close();
      reject(new Error(`counter ${file} stayed at ${readCount(file)} (< ${min}) for ${timeoutMs} ms`));
    }, timeoutMs);
    check();
  });
}
