// A remote lazy restore in miniature, for the page-server tests: a
// lazy-handover restorer (one process mapping pattern pages at an address,
// verifying them once served) waiting on dir/lazy.sock, the source's images
// of it (data in pages files, dir/src) and the destination's (PE_LAZY only,
// like dump --lazy-pages, dir/dst).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PE_LAZY, PE_PRESENT } from '../../plugin/images/index.js';
import { tempDir } from './env.js';
import { pattern, startHandover, type Handover } from './lazy.js';
import { writeLazyImages } from './lazy-images.js';

/** `pages` pages at `addr`, the 64-bit word at address a holding a ^ seed. */
export interface PatternMap { addr: bigint; pages: number; seed: bigint }

/** Writes root/src (the data, PE_LAZY|PE_PRESENT) and root/dst (PE_LAZY only) images of `pid` mapping `map`. */
export async function writeRemoteLazyImages(root: string, pid: number, map: PatternMap): Promise<{ src: string; dst: string }> {
  const src = join(root, 'src');
  const dst = join(root, 'dst');
  mkdirSync(src);
  mkdirSync(dst);
  const vmas = [{ start: map.addr, end: map.addr + BigInt(map.pages) * 4096n }];
  await writeLazyImages(src, [{ pid, vmas, entries: [{ vaddr: map.addr, pages: map.pages, flags: PE_LAZY | PE_PRESENT, data: pattern(map.addr, map.pages * 4096, map.seed) }] }]);
  await writeLazyImages(dst, [{ pid, vmas, entries: [{ vaddr: map.addr, pages: map.pages, flags: PE_LAZY }] }]);
  return { src, dst };
}

export interface RemoteLazyCase {
  /** The temp dir holding lazy.sock, src/ and dst/. */
  dir: string;
  /** Where the restorer connects once told to go (the lazy-pages socket). */
  sock: string;
  h: Handover;
  /** The restorer's process whose memory is served. */
  pid: number;
  src: string;
  dst: string;
  /** SIGKILLs the restorer if it still runs and removes the dir. */
  dispose(): void;
}

/** Starts the restorer (ready, not yet connected) and writes both sides' images of its process. */
export async function startRemoteLazyCase(map: PatternMap): Promise<RemoteLazyCase> {
  const d = tempDir();
  const sock = join(d.path, 'lazy.sock');
  let h: Handover | undefined;
  const dispose = (): void => {
    if (h && h.child.exitCode === null && h.child.signalCode === null) h.child.kill('SIGKILL');
    d.dispose();
  };
  try {
    h = await startHandover([sock, '--map', `0x${map.addr.toString(16)}:${map.pages}:0x${map.seed.toString(16)}`, '--verify']);
    const pid = h.pids[0]!;
    const { src, dst } = await writeRemoteLazyImages(d.path, pid, map);
    return { dir: d.path, sock, h, pid, src, dst, dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}
