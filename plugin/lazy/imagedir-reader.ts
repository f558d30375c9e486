// RawImageReader over plugin/images' ImageDir (the CRIU image library): the
// pagemap is streamed in batches (the reader validates ordering, flags and
// that present pages lie inside the pages file), never loaded whole.
import { ImageDir } from '../images/imagedir.js';
import type { RawImageReader } from './images.js';
import type { PagemapRun, VmaInfo } from './plan.js';
import { planLazyShmem, type LazyShmemTable } from './shmem.js';

class ImageDirReader implements RawImageReader {
  private pidList: Promise<number[]> | undefined;
  constructor(private readonly images: ImageDir) {}

  get dir(): string {
    return this.images.dir;
  }

  pids(): Promise<number[]> {
    this.pidList ??= this.images.pstree().then((es) => es.map((e) => e.pid));
    return this.pidList;
  }

  async vmas(pid: number): Promise<VmaInfo[]> {
    const mm = await this.images.mm(pid);
    return mm.vmas.map((v) => ({ start: v.start, end: v.end, flags: v.flags, status: v.status }));
  }

  async pagemap(pid: number): Promise<{ pagemapFile: string; pagesFile: string; runs: AsyncIterable<PagemapRun>; close(): Promise<void> } | undefined> {
    if (!(await this.images.hasPagemap(pid))) return undefined;
    const reader = await this.images.pagemap(pid);
    async function* runs(): AsyncGenerator<PagemapRun> {
      for await (const batch of reader.batches()) {
        for (const r of batch) {
          yield { vaddr: r.vaddr, nrPages: BigInt(r.nrPages), flags: r.flags, offset: BigInt(r.pagesOffset ?? 0) };
        }
      }
    }
    return { pagemapFile: reader.file, pagesFile: reader.pagesPath, runs: runs(), close: () => reader.close() };
  }

  lazyShmem(): Promise<LazyShmemTable> {
    return planLazyShmem(this.images);
  }

  async parent(): Promise<RawImageReader | undefined> {
    const p = await this.images.parent();
    return p ? new ImageDirReader(p) : undefined;
  }
}

export async function openImageDirReader(dir: string): Promise<RawImageReader> {
  return new ImageDirReader(await ImageDir.open(dir));
}
