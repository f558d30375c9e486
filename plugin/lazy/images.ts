// Reading what the daemon needs from an image directory (pstree, mm,
// pagemap + pages files, the parent chain) and turning it into one Plan per
// process (plan.ts). The raw reading goes through RawImageReader, which
// imagedir-reader.ts implements over plugin/images' ImageDir.
import { statSync } from 'node:fs';
import { ImageError, UserError } from '../errors.js';
import { ParentPagemap, planRanges, withSharedSpans, type PagemapRun, type Plan, type VmaInfo } from './plan.js';
import { EMPTY_LAZY_SHMEM, type LazyShmemObject, type LazyShmemTable } from './shmem.js';
import type { PlannedRange } from './types.js';

/** The raw reads (one image directory level). */
export interface RawImageReader {
  readonly dir: string;
  /** Virtual pids of every process in pstree.img. */
  pids(): Promise<number[]>;
  vmas(pid: number): Promise<VmaInfo[]>;
  /**
   * The process's pagemap with normalised runs; undefined when it has no
   * pagemap image. Iterating `runs` to the end closes the file; `close()`
   * closes it whenever (idempotent: also when the runs were never read).
   */
  pagemap(pid: number): Promise<{ pagemapFile: string; pagesFile: string; runs: AsyncIterable<PagemapRun>; close(): Promise<void> } | undefined>;
  /** The reader of `parent/` when it exists. */
  parent(): Promise<RawImageReader | undefined>;
  /** The shared memory objects served lazily (plugin/lazy/shmem.ts); absent: none. */
  lazyShmem?(): Promise<LazyShmemTable>;
}

/** Registers a shared memory object with the engine; returns its object id. */
export type AddSharedObject = (o: LazyShmemObject, addSource: (path: string) => number) => number;

/** What the server asks of the images. */
export interface LazyImageProvider {
  readonly dir: string;
  pids(): Promise<number[]>;
  /**
   * Builds the lazy plan of `pid`; `addSource` registers a pages file with
   * the engine, `addShared` a shared memory object (once per object for the
   * provider's lifetime). Without `addShared`, a process with lazily served
   * shared memory is refused (its VMAs would otherwise read zeros).
   */
  plan(pid: number, addSource: (path: string) => number, addShared?: AddSharedObject): Promise<Plan>;
}

export class ImagePlanner implements LazyImageProvider {
  constructor(
    private readonly reader: RawImageReader,
    private readonly allowRemote: boolean,
  ) {}

  get dir(): string {
    return this.reader.dir;
  }

  pids(): Promise<number[]> {
    return this.reader.pids();
  }

  private shmem: Promise<LazyShmemTable> | undefined;
  private readonly sharedIds = new Map<string, number>();

  /** Spans of `pid`'s lazily served shared memory, registering their objects on first use. */
  private async sharedSpans(pid: number, addSource: (path: string) => number, addShared: AddSharedObject | undefined): Promise<PlannedRange[]> {
    this.shmem ??= this.reader.lazyShmem?.() ?? Promise.resolve(EMPTY_LAZY_SHMEM);
    const table = await this.shmem;
    const vmas = table.vmas.get(pid) ?? [];
    if (vmas.length === 0) return [];
    if (!addShared) throw new UserError(`pid ${pid}: its shared memory is left to the lazy-pages daemon, which cannot serve shared memory here`);
    return vmas.map((v) => {
      let id = this.sharedIds.get(v.key);
      if (id === undefined) {
        id = addShared(table.objects.get(v.key)!, addSource);
        this.sharedIds.set(v.key, id);
      }
      return { start: v.start, end: v.end, src: { kind: 'shared', object: id, offset: v.offset } };
    });
  }

  async plan(pid: number, addSource: (path: string) => number, addShared?: AddSharedObject): Promise<Plan> {
    const known = await this.reader.pids();
    if (!known.includes(pid)) throw new UserError(`${this.reader.dir}: pid ${pid} is not in pstree.img`);
    const shared = await this.sharedSpans(pid, addSource, addShared);
    return withSharedSpans(await this.privatePlan(pid, addSource), shared);
  }

  private async privatePlan(pid: number, addSource: (path: string) => number): Promise<Plan> {
    const vmas = await this.reader.vmas(pid);
    const pm = await this.reader.pagemap(pid);
    const sources = new Map<string, number>();
    const source = (path: string): number => {
      let s = sources.get(path);
      if (s === undefined) {
        s = addSource(path);
        sources.set(path, s);
      }
      return s;
    };
    if (!pm) return planRanges(vmas, [], { pid, pagemapFile: `${this.reader.dir}/pagemap-${pid}.img`, pagesFile: '', pagesSize: 0n, fileSource: -1, allowRemote: this.allowRemote });
    // A failure before or while the runs are read (a pages file whose
    // checksums do not fit, a bad parent) must not leave the pagemap open.
    try {
      const pagesSize = sizeOf(pm.pagesFile, pid);
      const parent = await this.reader.parent();
      const resolveParent = parent ? await parentResolver(parent, pid, source) : undefined;
      return await planRanges(vmas, pm.runs, {
        pid,
        pagemapFile: pm.pagemapFile,
        pagesFile: pm.pagesFile,
        pagesSize,
        fileSource: pagesSize > 0n ? source(pm.pagesFile) : -1,
        allowRemote: this.allowRemote,
        ...(resolveParent ? { resolveParent } : {}),
      });
    } finally {
      await pm.close();
    }
  }
}

/** Size of a pages file; a missing one holds nothing (entries with data then fail validation). */
function sizeOf(path: string, pid: number): bigint {
  try {
    return BigInt(statSync(path).size);
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'EIO';
    if (code === 'ENOENT') return 0n;
    throw new UserError(`${path}: pid ${pid}: cannot open pages file: ${code}`, { cause: e });
  }
}

/** Loads `reader`'s pagemap of `pid` (and, lazily, its own parents) for PE_PARENT lookups. */
async function parentResolver(reader: RawImageReader, pid: number, source: (path: string) => number): Promise<((start: bigint, end: bigint) => Promise<PlannedRange[]>) | undefined> {
  let loaded: ParentPagemap | undefined;
  return async (start, end) => {
    if (!loaded) {
      const pm = await reader.pagemap(pid);
      if (!pm) throw new ImageError(`${reader.dir}/pagemap-${pid}.img`, undefined, `pid ${pid}: parent image has no pagemap for this pid`);
      try {
        const size = sizeOf(pm.pagesFile, pid);
        const grand = await reader.parent();
        const grandResolve = grand ? await parentResolver(grand, pid, source) : undefined;
        const table = new ParentPagemap(pm.pagemapFile, size > 0n ? source(pm.pagesFile) : -1, grandResolve);
        for await (const run of pm.runs) table.add(run, size, pm.pagesFile);
        loaded = table;
      } finally {
        await pm.close();
      }
    }
    return loaded.resolve(start, end);
  };
}

/** The real provider over an image directory (plugin/images). */
export async function openImageProvider(dir: string, allowRemote: boolean): Promise<LazyImageProvider> {
  const { openImageDirReader } = await import('./imagedir-reader.js');
  return new ImagePlanner(await openImageDirReader(dir), allowRemote);
}
