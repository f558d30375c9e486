// Working-set record and replay (issue 8, part 1). Recording turns the
// engine's fault log (faulting pages, in order) into runs of consecutive
// pages written as lr-workingset-<pid>.img; replay reads that image back
// into ranges the engine copies first (FaultEngine.prefetchFirst). Addresses
// are dump-time addresses: a restored process maps its VMAs where they were,
// and a process is recorded only until its first mremap.
import { join } from 'node:path';
import { ImageError } from '../errors.js';
import { ImageDir } from '../images/imagedir.js';
import { PAGE, PAGE_SIZE } from '../images/memory.js';
import type { WorkingSetRange } from '../images/types.js';


/** Pages one process faulted, first touch only, in fault order. */
export class WorkingSetRecorder {
  private readonly seen = new Set<bigint>();
  private readonly runs: { vaddr: bigint; pages: bigint; atNs: bigint }[] = [];
  /** Set at the process's first remap: later addresses are no longer dump-time addresses. */
  frozen = false;
  /** Written (or given up) already. */
  done = false;

  constructor(readonly startNs: bigint) {}

  get pages(): number {
    return this.seen.size;
  }

  /** Adds the faulting page at `addr` (any address inside it), touched at monotonic time `tNs`. */
  add(addr: bigint, tNs: bigint): void {
    if (this.frozen || this.done) return;
    const page = addr - (addr % PAGE);
    if (this.seen.has(page)) return;
    this.seen.add(page);
    const last = this.runs[this.runs.length - 1];
    if (last && last.vaddr + last.pages * PAGE === page) last.pages++;
    else this.runs.push({ vaddr: page, pages: 1n, atNs: tNs > this.startNs ? tNs - this.startNs : 0n });
  }

  ranges(): WorkingSetRange[] {
    return this.runs.map((r) => ({ vaddr: r.vaddr, nr_pages: r.pages, at_ns: r.atNs }));
  }
}

export function workingSetPath(dir: string, pid: number): string {
  return join(dir, `lr-workingset-${pid}.img`);
}

/** Writes lr-workingset-<pid>.img; returns its path. */
export async function writeWorkingSet(dir: string, pid: number, startedWallNs: bigint, rec: WorkingSetRecorder): Promise<string> {
  const img = await ImageDir.open(dir);
  await img.writeWorkingSet({ pid, started_ns: startedWallNs, page_size: PAGE_SIZE }, rec.ranges());
  return workingSetPath(dir, pid);
}

/**
 * The recorded working set of `pid` as run-time ranges in fault order
 * (undefined when none was recorded). A malformed image is an ImageError
 * naming the file; the caller decides whether to go on without it.
 */
export async function loadWorkingSet(dir: string, pid: number): Promise<{ start: bigint; end: bigint }[] | undefined> {
  const img = await ImageDir.open(dir);
  const ws = await img.workingSet(pid);
  if (!ws) return undefined;
  const file = workingSetPath(dir, pid);
  if (ws.head.pid !== pid) throw new ImageError(file, undefined, `working set is for pid ${ws.head.pid}, not ${pid}`);
  if (ws.head.page_size !== undefined && ws.head.page_size !== PAGE_SIZE) throw new ImageError(file, undefined, `page size ${ws.head.page_size} is not ${PAGE_SIZE}`);
  const out: { start: bigint; end: bigint }[] = [];
  for (const r of ws.ranges) {
    if (r.vaddr % PAGE !== 0n || r.nr_pages <= 0n || r.vaddr + r.nr_pages * PAGE > 1n << 64n) {
      throw new ImageError(file, undefined, `bad range at 0x${r.vaddr.toString(16)} (${r.nr_pages} pages)`);
    }
    const end = r.vaddr + r.nr_pages * PAGE;
    const last = out[out.length - 1];
    // Consecutive runs (split by recording order only) go as one large copy.
    if (last && last.end === r.vaddr) last.end = end;
    else out.push({ start: r.vaddr, end });
  }
  return out;
}
