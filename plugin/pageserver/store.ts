// Where a lazy page server gets the pages it serves. A store answers "give
// me up to N pages of pid P from dump-time address V", clamped to the
// contiguous run of stored pages that contains V (§6.6: M ≤ N), or says it
// holds nothing at V. Two stores:
//  - ImageDirPageStore: pagemaps + pages files of a normal dump (data read
//    with pread, nothing loaded up front);
//  - ProcessMemoryPageStore: the memory of a frozen source process
//    (/proc/PID/mem), for `dump --lazy-pages`, so pages never touch disk.
import { closeSync, openSync, readSync } from 'node:fs';
import { UserError } from '../errors.js';
import { ImageDir } from '../images/index.js';
import { PAGE_SHIFT, PAGE_SIZE, PE_PRESENT } from './protocol.js';

export interface StoredPages {
  /** Pages available from the requested address (1 ≤ pages ≤ requested). */
  pages: bigint;
  /** Copies the pages into `buf` at `off` (buf must hold pages·4096 bytes there). */
  fill(buf: Buffer, off: number): void;
}

/** A contiguous stored run: pages [start, end) of pid at `fileOff` in `fd` (owned by the store). */
export interface StoredRun {
  pid: number;
  start: bigint;
  end: bigint;
  fd: number;
  fileOff: bigint;
}

export interface PageStore {
  lookup(pid: number, vaddr: bigint, maxPages: bigint): StoredPages | undefined;
  /**
   * Every run, for a native reply path that serves the same answers as
   * lookup() (optional: stores without it are served from JS only). The fds
   * stay valid until close().
   */
  runs?(): StoredRun[];
  /** Total pages held (for progress reports). */
  readonly totalPages: bigint;
  close(): void;
}

interface Run {
  start: bigint;
  end: bigint;
  /** Offset of `start` in the backing file (pages file or /proc/PID/mem). */
  fileOff: bigint;
  fd: number;
  what: string;
}

/** Sorted, non-overlapping runs of one process, binary-searched by address. */
class RunTable {
  private runs: Run[] = [];

  add(r: Run): void {
    const last = this.runs[this.runs.length - 1];
    if (last && r.start < last.end) throw new UserError(`${r.what}: range 0x${r.start.toString(16)} overlaps or is out of order`);
    // Adjacent in memory and in the file: one run, so a GET spanning
    // several pagemap entries is answered in one reply.
    if (last && last.end === r.start && last.fd === r.fd && last.fileOff + (last.end - last.start) === r.fileOff) {
      last.end = r.end;
      return;
    }
    this.runs.push({ ...r });
  }

  find(addr: bigint): Run | undefined {
    let lo = 0;
    let hi = this.runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.runs[mid]!;
      if (addr < r.start) hi = mid - 1;
      else if (addr >= r.end) lo = mid + 1;
      else return r;
    }
    return undefined;
  }

  all(): readonly Run[] {
    return this.runs;
  }

  get pages(): bigint {
    return this.runs.reduce((n, r) => n + ((r.end - r.start) >> PAGE_SHIFT), 0n);
  }
}

abstract class RunStore implements PageStore {
  protected tables = new Map<number, RunTable>();
  protected fds: number[] = [];

  lookup(pid: number, vaddr: bigint, maxPages: bigint): StoredPages | undefined {
    const r = this.tables.get(pid)?.find(vaddr);
    if (r === undefined) return undefined;
    const avail = (r.end - vaddr) >> PAGE_SHIFT;
    const pages = avail < maxPages ? avail : maxPages;
    const pos = r.fileOff + (vaddr - r.start);
    return {
      pages,
      fill: (buf, off) => {
        const len = Number(pages) * PAGE_SIZE;
        let done = 0;
        while (done < len) {
          const n = readSync(r.fd, buf, off + done, len - done, pos + BigInt(done));
          if (n === 0) throw new UserError(`${r.what}: unexpected end of data at offset ${pos + BigInt(done)}`);
          done += n;
        }
      },
    };
  }

  runs(): StoredRun[] {
    const out: StoredRun[] = [];
    for (const [pid, t] of this.tables) for (const r of t.all()) out.push({ pid, start: r.start, end: r.end, fd: r.fd, fileOff: r.fileOff });
    return out;
  }

  get totalPages(): bigint {
    let n = 0n;
    for (const t of this.tables.values()) n += t.pages;
    return n;
  }

  close(): void {
    for (const fd of this.fds.splice(0)) closeSync(fd);
  }
}

/** Serves the PE_PRESENT pages of every task pagemap in an image directory. */
export class ImageDirPageStore extends RunStore {
  private constructor(readonly dir: string) {
    super();
  }

  static async open(dir: string): Promise<ImageDirPageStore> {
    const images = await ImageDir.open(dir);
    const store = new ImageDirPageStore(dir);
    try {
      for (const f of await images.list()) {
        const m = /^pagemap-(\d+)\.img$/.exec(f.name);
        if (!m) continue;
        const pid = Number(m[1]);
        const reader = await images.pagemap(pid);
        let fd: number | undefined;
        const table = new RunTable();
        for await (const batch of reader.batches()) {
          for (const r of batch) {
            if ((r.flags & PE_PRESENT) === 0 || r.pagesOffset === undefined) continue;
            if (fd === undefined) {
              try {
                fd = openSync(reader.pagesPath, 'r');
              } catch (e) {
                throw new UserError(`${reader.pagesPath} (pid ${pid}): ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
              }
              store.fds.push(fd);
            }
            table.add({ start: r.vaddr, end: r.end, fileOff: BigInt(r.pagesOffset), fd, what: reader.pagesPath });
          }
        }
        store.tables.set(pid, table);
      }
    } catch (e) {
      store.close();
      throw e;
    }
    return store;
  }

  get pids(): number[] {
    return [...this.tables.keys()].sort((a, b) => a - b);
  }
}

export interface MemoryRange {
  /** The pid the images (and so the destination) know the process by. */
  pid: number;
  vaddr: bigint;
  nrPages: bigint;
  /** Where to read it here when that differs (a container's own pid namespace). */
  hostPid?: number;
}

/**
 * Serves ranges straight from the memory of stopped processes. The caller
 * keeps them stopped (ptrace-frozen) for the store's lifetime, so what is
 * read is what was dumped.
 */
export class ProcessMemoryPageStore extends RunStore {
  constructor(ranges: MemoryRange[]) {
    super();
    const fdOf = new Map<number, number>();
    const sorted = [...ranges].sort((a, b) => a.pid - b.pid || (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0));
    try {
      for (const r of sorted) {
        let fd = fdOf.get(r.pid);
        if (fd === undefined) {
          const host = r.hostPid ?? r.pid;
          try {
            fd = openSync(`/proc/${host}/mem`, 'r');
          } catch (e) {
            throw new UserError(`pid ${host}: open /proc/${host}/mem: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
          }
          fdOf.set(r.pid, fd);
          this.fds.push(fd);
          this.tables.set(r.pid, new RunTable());
        }
        this.tables.get(r.pid)!.add({ start: r.vaddr, end: r.vaddr + (r.nrPages << PAGE_SHIFT), fileOff: r.vaddr, fd, what: `/proc/${r.hostPid ?? r.pid}/mem` });
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }
}
