// Images -> page sources: which VMAs are lazy, and the run-length table of
// ranges (file / zero / remote) that covers every lazy VMA completely. Pure
// logic over a stream of pagemap runs, so it is unit-tested without images;
// memory is proportional to the number of runs, never to the image size.
import { ImageError, UserError } from '../errors.js';
import {
  MAP_ANONYMOUS, MAP_HUGETLB, MAP_LOCKED, MAP_PRIVATE, MAP_SHARED, PAGE, PE_LAZY, PE_PARENT, PE_PRESENT, VMA_ANON_PRIVATE,
  VMA_ANON_SHARED, VMA_AREA_AIORING, VMA_AREA_GUARD, VMA_AREA_MEMFD, VMA_AREA_REGULAR, VMA_AREA_SHSTK, VMA_AREA_SOCKET,
  VMA_AREA_SYSVIPC, VMA_AREA_UPROBES, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR, VMA_EXT_PLUGIN, VMA_FILE_PRIVATE,
  VMA_FILE_SHARED,
} from '../images/memory.js';
import type { PageSource, PlannedRange } from './types.js';

const NOT_LAZY_STATUS = VMA_AREA_VSYSCALL | VMA_AREA_VDSO | VMA_ANON_SHARED | VMA_FILE_PRIVATE | VMA_FILE_SHARED
  | VMA_AREA_SYSVIPC | VMA_AREA_SOCKET | VMA_AREA_VVAR | VMA_AREA_AIORING | VMA_AREA_MEMFD | VMA_AREA_SHSTK
  | VMA_AREA_GUARD | VMA_AREA_UPROBES | VMA_EXT_PLUGIN;

/** The VMA fields the planner needs (a subset of VmaEntry). */
export interface VmaInfo {
  start: bigint;
  end: bigint;
  flags: number;
  status: number;
}

/** One pagemap entry, normalised: `flags` already has PE_PRESENT for legacy entries. */
export interface PagemapRun {
  vaddr: bigint;
  nrPages: bigint;
  flags: number;
  /** Byte offset of the data in the pages file (meaningful with PE_PRESENT). */
  offset: bigint;
}

/**
 * Lazy-eligible per IMAGE-FORMAT.md §4.3/§7.2: a regular private anonymous
 * mapping, not locked, not hugetlb, not vDSO/vvar/vsyscall (nor any special area).
 */
export function isLazyVma(v: VmaInfo): boolean {
  if ((v.status & VMA_AREA_REGULAR) === 0 || (v.status & VMA_ANON_PRIVATE) === 0) return false;
  if ((v.status & NOT_LAZY_STATUS) !== 0) return false;
  if ((v.flags & MAP_ANONYMOUS) === 0 || (v.flags & MAP_PRIVATE) === 0 || (v.flags & MAP_SHARED) !== 0) return false;
  if ((v.flags & (MAP_LOCKED | MAP_HUGETLB)) !== 0) return false;
  return v.end > v.start;
}

export interface PlanContext {
  pid: number;
  /** For messages. */
  pagemapFile: string;
  pagesFile: string;
  /** Size of the pages file in bytes: data must lie inside it. */
  pagesSize: bigint;
  /** Engine source id of the pages file. */
  fileSource: number;
  /** Resolves a PE_PARENT range to its pieces in the parent chain (the pieces tile [start, end)). */
  resolveParent?: (start: bigint, end: bigint) => Promise<PlannedRange[]>;
  /** True when a remote page source can serve PE_LAZY-only pages. */
  allowRemote: boolean;
}

export interface Plan {
  pid: number;
  ranges: PlannedRange[];
  /** Bytes served from (this or parent) pages files. */
  fileBytes: bigint;
  zeroBytes: bigint;
  remoteBytes: bigint;
  lazyVmas: number;
  /** Bytes of shared memory VMAs served from their objects (withSharedSpans). */
  sharedBytes?: bigint;
  sharedVmas?: number;
}

/** Builds the range table; ranges never cross a VMA boundary. */
export async function planRanges(vmas: readonly VmaInfo[], runs: AsyncIterable<PagemapRun> | Iterable<PagemapRun>, ctx: PlanContext): Promise<Plan> {
  const lazy = vmas.filter(isLazyVma).slice().sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  for (let i = 1; i < lazy.length; i++) {
    if (lazy[i]!.start < lazy[i - 1]!.end) throw new UserError(`pid ${ctx.pid}: overlapping VMAs at 0x${lazy[i]!.start.toString(16)} in mm image`);
  }
  const out = new RangeSink();
  let vi = 0;
  let cursor = lazy[0]?.start ?? 0n;
  let prevEnd = 0n;

  const finishVma = (): void => {
    const v = lazy[vi]!;
    if (cursor < v.end) out.push({ start: cursor, end: v.end, src: { kind: 'zero' } }, vi);
    vi++;
    cursor = lazy[vi]?.start ?? 0n;
  };

  for await (const run of runs) {
    const a = run.vaddr;
    const len = run.nrPages * PAGE;
    const b = a + len;
    if (a % PAGE !== 0n) throw new ImageError(ctx.pagemapFile, undefined, `pid ${ctx.pid}: entry at 0x${a.toString(16)} is not page-aligned`);
    if (a < prevEnd) throw new ImageError(ctx.pagemapFile, undefined, `pid ${ctx.pid}: entries not ascending at 0x${a.toString(16)}`);
    prevEnd = b;
    const present = (run.flags & PE_PRESENT) !== 0;
    if (present && run.offset + len > ctx.pagesSize) {
      throw new ImageError(ctx.pagesFile, Number(run.offset), `pid ${ctx.pid}: pagemap entry 0x${a.toString(16)}+${run.nrPages} pages points past the end of the pages file (${ctx.pagesSize} bytes): truncated or corrupt image`);
    }
    if (len === 0n) continue;
    while (vi < lazy.length && lazy[vi]!.end <= a) finishVma();
    while (vi < lazy.length && lazy[vi]!.start < b) {
      const v = lazy[vi]!;
      const is = a > cursor ? a : cursor;
      const ie = b < v.end ? b : v.end;
      if (is < ie) {
        if (cursor < is) out.push({ start: cursor, end: is, src: { kind: 'zero' } }, vi);
        for (const piece of await sourcePieces(run, is, ie, ctx)) out.push(piece, vi);
        cursor = ie;
      }
      if (v.end <= b) finishVma();
      else break;
    }
  }
  while (vi < lazy.length) finishVma();
  return { pid: ctx.pid, ranges: out.ranges, fileBytes: out.fileBytes, zeroBytes: out.zeroBytes, remoteBytes: out.remoteBytes, lazyVmas: lazy.length };
}

async function sourcePieces(run: PagemapRun, is: bigint, ie: bigint, ctx: PlanContext): Promise<PlannedRange[]> {
  if ((run.flags & PE_PRESENT) !== 0) {
    return [{ start: is, end: ie, src: { kind: 'file', source: ctx.fileSource, offset: run.offset + (is - run.vaddr) } }];
  }
  if ((run.flags & PE_PARENT) !== 0) {
    if (!ctx.resolveParent) throw new ImageError(ctx.pagemapFile, undefined, `pid ${ctx.pid}: entry 0x${run.vaddr.toString(16)} has its data in the parent image, but there is no parent directory`);
    const pieces = await ctx.resolveParent(is, ie);
    let at = is;
    for (const p of pieces) {
      if (p.start !== at) break;
      at = p.end;
    }
    if (at !== ie) throw new ImageError(ctx.pagemapFile, undefined, `pid ${ctx.pid}: missing 0x${at.toString(16)} in parent pagemap`);
    return pieces;
  }
  if ((run.flags & PE_LAZY) !== 0) {
    if (!ctx.allowRemote) {
      throw new UserError(`${ctx.pagemapFile}: pid ${ctx.pid}: pages at 0x${run.vaddr.toString(16)} are lazy without data in the images (dump --lazy-pages); they need a page server (none configured)`);
    }
    return [{ start: is, end: ie, src: { kind: 'remote', imageAddr: is } }];
  }
  throw new ImageError(ctx.pagemapFile, undefined, `pid ${ctx.pid}: entry 0x${run.vaddr.toString(16)} has flags ${run.flags} (no data anywhere)`);
}

/** Appends ranges, merging neighbours of the same VMA whose sources continue each other. */
class RangeSink {
  ranges: PlannedRange[] = [];
  fileBytes = 0n;
  zeroBytes = 0n;
  remoteBytes = 0n;
  private lastVma = -1;

  push(r: PlannedRange, vma: number): void {
    if (r.end <= r.start) return;
    const len = r.end - r.start;
    if (r.src.kind === 'file') this.fileBytes += len;
    else if (r.src.kind === 'zero') this.zeroBytes += len;
    else if (r.src.kind === 'remote') this.remoteBytes += len;
    const last = this.ranges[this.ranges.length - 1];
    if (last && this.lastVma === vma && last.end === r.start && continues(last, r)) {
      last.end = r.end;
      return;
    }
    this.ranges.push({ start: r.start, end: r.end, src: r.src });
    this.lastVma = vma;
  }
}

function continues(prev: PlannedRange, next: PlannedRange): boolean {
  const p: PageSource = prev.src;
  const n: PageSource = next.src;
  if (p.kind === 'zero') return n.kind === 'zero';
  if (p.kind === 'file') return n.kind === 'file' && n.source === p.source && n.offset === p.offset + (prev.end - prev.start);
  if (p.kind === 'shared') return n.kind === 'shared' && n.object === p.object && n.offset === p.offset + (prev.end - prev.start);
  return n.kind === 'remote' && n.imageAddr === p.imageAddr + (prev.end - prev.start);
}

/**
 * Adds the spans of shared memory VMAs (object offsets, plugin/lazy/shmem.ts)
 * to a plan's private ranges: sorted, and refused if any overlaps (the
 * images would be inconsistent).
 */
export function withSharedSpans(plan: Plan, spans: readonly PlannedRange[]): Plan {
  if (spans.length === 0) return plan;
  const ranges = [...plan.ranges, ...spans].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i]!.start < ranges[i - 1]!.end) throw new UserError(`pid ${plan.pid}: shared memory VMA at 0x${ranges[i]!.start.toString(16)} overlaps another lazy range in the mm image`);
  }
  let sharedBytes = 0n;
  for (const s of spans) sharedBytes += s.end - s.start;
  return { ...plan, ranges, sharedBytes, sharedVmas: spans.length };
}

/** Sum of bytes that must be copied (file + remote), i.e. what is "lazy" for completion. */
export function dataBytes(ranges: readonly PlannedRange[]): bigint {
  let n = 0n;
  for (const r of ranges) if (r.src.kind !== 'zero') n += r.end - r.start;
  return n;
}

/**
 * A parent pagemap loaded as sorted parallel arrays (one slot per entry), to
 * resolve PE_PARENT ranges piecewise (IMAGE-FORMAT.md §4.4).
 */
export class ParentPagemap {
  private readonly starts: bigint[] = [];
  private readonly ends: bigint[] = [];
  private readonly flags: number[] = [];
  private readonly offsets: bigint[] = [];

  constructor(
    readonly pagemapFile: string,
    private readonly fileSource: number,
    private readonly grandParent: ((start: bigint, end: bigint) => Promise<PlannedRange[]>) | undefined,
  ) {}

  add(run: PagemapRun, pagesSize: bigint, pagesFile: string): void {
    const len = run.nrPages * PAGE;
    if ((run.flags & PE_PRESENT) !== 0 && run.offset + len > pagesSize) {
      throw new ImageError(pagesFile, Number(run.offset), `parent entry 0x${run.vaddr.toString(16)} points past the end of the pages file (${pagesSize} bytes)`);
    }
    const prev = this.ends[this.ends.length - 1];
    if (prev !== undefined && run.vaddr < prev) throw new ImageError(this.pagemapFile, undefined, `entries not ascending at 0x${run.vaddr.toString(16)}`);
    this.starts.push(run.vaddr);
    this.ends.push(run.vaddr + len);
    this.flags.push(run.flags);
    this.offsets.push(run.offset);
  }

  async resolve(start: bigint, end: bigint): Promise<PlannedRange[]> {
    const out: PlannedRange[] = [];
    // first entry whose end > start
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.ends[mid]! <= start) lo = mid + 1;
      else hi = mid;
    }
    let at = start;
    for (let i = lo; i < this.starts.length && at < end; i++) {
      const s = this.starts[i]!;
      if (s > at) break;
      const e = this.ends[i]! < end ? this.ends[i]! : end;
      const f = this.flags[i]!;
      if ((f & PE_PRESENT) !== 0) {
        out.push({ start: at, end: e, src: { kind: 'file', source: this.fileSource, offset: this.offsets[i]! + (at - s) } });
      } else if ((f & PE_PARENT) !== 0 && this.grandParent) {
        out.push(...(await this.grandParent(at, e)));
      } else {
        break;
      }
      at = e;
    }
    if (at < end) throw new ImageError(this.pagemapFile, undefined, `missing 0x${at.toString(16)}-0x${end.toString(16)} in parent pagemap`);
    return out;
  }
}

/**
 * Where in the pages files the data of `wanted` (address ranges, e.g. a
 * recorded working set, in its order) lies: per source, (offset, length)
 * spans in the order of `wanted`. Zero, remote and shared pieces have none.
 */
export function fileSpansOf(ranges: readonly PlannedRange[], wanted: readonly { start: bigint; end: bigint }[]): Map<number, { offset: bigint; length: bigint }[]> {
  const out = new Map<number, { offset: bigint; length: bigint }[]>();
  for (const w of wanted) {
    // first range whose end > w.start (ranges are sorted and disjoint)
    let lo = 0;
    let hi = ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ranges[mid]!.end <= w.start) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < ranges.length && ranges[i]!.start < w.end; i++) {
      const r = ranges[i]!;
      if (r.src.kind !== 'file') continue;
      const s = w.start > r.start ? w.start : r.start;
      const e = w.end < r.end ? w.end : r.end;
      if (s >= e) continue;
      let spans = out.get(r.src.source);
      if (!spans) out.set(r.src.source, (spans = []));
      spans.push({ offset: r.src.offset + (s - r.start), length: e - s });
    }
  }
  return out;
}
