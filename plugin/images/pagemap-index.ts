// Compact in-memory index of a pagemap for random lookups (address → entry).
import { PAGE } from './memory.js';
import type { PagemapReader } from './pagemap-reader.js';


/** Compact sorted table of a pagemap's entries (typed arrays, ~25 bytes per entry). */
export class PagemapIndex {
  private constructor(
    readonly file: string,
    readonly pagesPath: string,
    readonly length: number,
    private readonly starts: BigUint64Array,
    private readonly counts: Float64Array,
    private readonly offsets: Float64Array,
    private readonly flagsArr: Uint8Array,
  ) {}

  static async build(reader: PagemapReader): Promise<PagemapIndex> {
    let cap = 1024;
    let starts = new BigUint64Array(cap);
    let counts = new Float64Array(cap);
    let offsets = new Float64Array(cap);
    let flags = new Uint8Array(cap);
    let n = 0;
    for await (const batch of reader.batches()) {
      if (n + batch.length > cap) {
        while (n + batch.length > cap) cap *= 2;
        const s = new BigUint64Array(cap); s.set(starts); starts = s;
        const c = new Float64Array(cap); c.set(counts); counts = c;
        const o = new Float64Array(cap); o.set(offsets); offsets = o;
        const f = new Uint8Array(cap); f.set(flags); flags = f;
      }
      for (const r of batch) {
        starts[n] = r.vaddr;
        counts[n] = r.nrPages;
        offsets[n] = r.pagesOffset ?? -1;
        flags[n] = r.flags;
        n++;
      }
    }
    return new PagemapIndex(reader.file, reader.pagesPath, n, starts, counts, offsets, flags);
  }

  /** Index of the entry containing `addr`, or -1. */
  find(addr: bigint): number {
    let lo = 0;
    let hi = this.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid]! <= addr) lo = mid + 1;
      else hi = mid - 1;
    }
    if (hi < 0) return -1;
    return addr < this.starts[hi]! + BigInt(this.counts[hi]!) * PAGE ? hi : -1;
  }

  entry(i: number): { vaddr: bigint; nrPages: number; flags: number; pagesOffset: number | undefined } {
    const o = this.offsets[i]!;
    return { vaddr: this.starts[i]!, nrPages: this.counts[i]!, flags: this.flagsArr[i]!, pagesOffset: o < 0 ? undefined : o };
  }
}
