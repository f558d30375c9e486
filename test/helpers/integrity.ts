// Shared by the integrity tests: a dumped demo-service and a corrupted pages file.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { ImageDir, PE_LAZY, PE_PRESENT } from '../../plugin/images/index.js';
import { helperPath } from '../../plugin/native/addon.js';
import { withTimeout } from './env.js';
import { waitForFile } from './workload.js';

/** Starts demo-service with `mib` MiB of data, dumps it (the dump kills it) and reaps it. */
export async function dumpDemo(dir: string, mib: number): Promise<{ pid: number; images: string; ctl: string }> {
  const ctl = join(dir, 'ctl');
  const images = join(dir, 'images');
  mkdirSync(ctl, { recursive: true });
  mkdirSync(images, { recursive: true });
  const child = spawn(helperPath('demo-service'), [ctl, String(mib)], { stdio: 'ignore', detached: true });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    await waitForFile(join(ctl, 'ready'), 20_000);
    await dump({ pid: child.pid!, imagesDir: images });
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  } finally {
    await withTimeout(exited, 10_000, 'demo-service reaped');
  }
  return { pid: child.pid!, images, ctl };
}

/** Flips one byte in the middle of the largest lazy-eligible run of pid's pages; returns file and offset. */
export async function flipDataByte(images: string, pid: number): Promise<{ file: string; offset: number }> {
  const dir = await ImageDir.open(images);
  const pm = await dir.pagemap(pid);
  let best: { off: number; len: number } | undefined;
  for await (const r of pm) {
    if ((r.flags & PE_PRESENT) && (r.flags & PE_LAZY) && (!best || r.nrPages * 4096 > best.len)) best = { off: r.pagesOffset!, len: r.nrPages * 4096 };
  }
  const file = pm.pagesPath;
  await pm.close();
  assert.ok(best && best.len >= 1 << 20, 'a large lazy run of data');
  const offset = best.off + best.len / 2 + 123;
  const fd = openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, offset);
    b[0] = b[0]! ^ 0x10;
    writeSync(fd, b, 0, 1, offset);
  } finally {
    closeSync(fd);
  }
  return { file, offset };
}

