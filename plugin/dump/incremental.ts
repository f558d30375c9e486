// Incremental dumps with userfaultfd write-protection (no soft-dirty here).
// One Incremental per dump command, used while the tree is frozen:
// - open(): validates the parent directory (a dump of these very pids:
//   pstree, and inventory.dump_uptime against each process's start time)
//   and takes copies of the tracking uffds from the parent's tracker;
// - planMemory(): per process, PAGEMAP_SCAN (PM_SCAN_WP_MATCHING |
//   PM_SCAN_CHECK_WPASYNC) reads the pages written since the last round and
//   re-protects them in the same walk; regions the scan refuses (mapped after
//   arming, moved, lost) count as dirty. Pre-dumps also arm: a uffd created
//   inside the process by injection (WP_ASYNC | WP_UNPOPULATED), ranges
//   registered in WP mode and write-protected. Clean pages the parent chain
//   holds become PE_PARENT entries;
// - commit(): the parent link, the tracker (started, kept or retired) and
//   its record. Any doubt about the tracking means a full dump with a
//   warning, never an incremental one built on stale dirty bits.
import { closeSync, existsSync, openSync, readFileSync, symlinkSync, rmSync, writevSync } from 'node:fs';
import { isAbsolute, relative, resolve } from 'node:path';
import { ImageDir, PAGE, PAGE_SIZE, PE_PARENT, PE_PRESENT, type PagemapEntry } from '../images/index.js';
import { CollectMode, SYS, injectSyscall, type DumpRegion } from '../inject/index.js';
import { addon } from '../native/addon.js';
import { RegisterMode, UffdFeature, WriteprotectMode, uffdApi, uffdRegister, uffdWriteprotect } from '../uffd/index.js';
import { Errno, UserError, sysError } from '../errors.js';
import {
  procStartTime, readTrackerRecord, removeTrackerRecord, retireTracker, startTracker, takeTrackedUffd, trackerProblem,
  writeTrackerRecord, type TrackerRecord,
} from './tracker.js';
import { O_CLOEXEC } from '../inject/constants.js';

const PM_SCAN_WP_MATCHING = 1n << 0n;
const PM_SCAN_CHECK_WPASYNC = 1n << 1n;
const PAGE_IS_WRITTEN = 1n << 1n;
const PAGE_IS_FILE = 1n << 2n;
const PAGE_IS_PRESENT = 1n << 3n;
const PAGE_IS_SWAPPED = 1n << 4n;
/** Pages per process_vm_readv batch of the dirty-page copier. */
const BATCH_PAGES = 1024;
const USER_HZ = 100n; // /proc/PID/stat start times are in USER_HZ ticks on x86-64
const O_NONBLOCK = 0o4000;

/** Host uptime in µs, as CRIU's inventory.dump_uptime. */
export function uptimeMicros(): bigint {
  const s = readFileSync('/proc/uptime', 'utf8').split(' ')[0]!;
  const [whole, frac = '0'] = s.split('.');
  return BigInt(whole!) * 1000000n + BigInt(frac.padEnd(6, '0').slice(0, 6));
}

export interface IncrementalOptions {
  imagesDir: string;
  /** As given: relative paths are relative to imagesDir (CRIU's rule). */
  prevImagesDir?: string;
  /** Arm (or keep) write tracking for a further round. */
  preDump: boolean;
  root: number;
  /** Tracker lifetime without a next dump (s); 0 = until the target exits. */
  trackTimeoutS: number;
  log: (line: string) => void;
  warn: (line: string) => void;
  /** The pid the images hold for a host pid (a container's own pid namespace); default: the same. */
  imagePid?: (host: number) => number;
}

export interface MemoryPlan {
  /**
   * What to copy, ascending, each with the index of the region it comes
   * from: whole regions (untracked: the dump's pagemap rules apply) or
   * written runs already known to hold data (from the scan's categories).
   */
  dirty: { g: DumpRegion; region: number; whole: boolean }[];
  /** Unchanged pages whose data the parent chain holds. */
  parent: PagemapEntry[];
}

interface ParentInfo {
  dir: ImageDir;
  path: string;
  link: string;
  pids: Set<number>;
  dumpTicks: bigint;
  record: TrackerRecord | undefined;
}

export class Incremental {
  /** pid → uffd (fd of this process). */
  private readonly uffds = new Map<number, number>();
  /** Processes whose tracking is continuous since the parent dump. */
  private readonly tracked = new Set<number>();
  pagesSkippedParent = 0;

  private constructor(private readonly opts: IncrementalOptions, private readonly parent: ParentInfo | undefined) {}

  get isIncremental(): boolean {
    return this.parent !== undefined;
  }

  static async open(opts: IncrementalOptions, pids: readonly number[]): Promise<Incremental> {
    if (opts.prevImagesDir === undefined) return new Incremental(opts, undefined);
    const path = resolve(opts.imagesDir, opts.prevImagesDir);
    if (!existsSync(path)) throw new UserError(`--prev-images-dir ${opts.prevImagesDir}: no such directory (ENOENT)`);
    const link = isAbsolute(opts.prevImagesDir) ? relative(resolve(opts.imagesDir), path) || '.' : opts.prevImagesDir;
    const full = (why: string): Incremental => {
      opts.warn(`warning: ${path}: ${why}; writing a full dump instead of an incremental one`);
      return new Incremental(opts, undefined);
    };
    let dir: ImageDir;
    let pstree;
    let inv;
    try {
      dir = await ImageDir.open(path);
      inv = await dir.inventory();
      pstree = await dir.pstree();
    } catch (e) {
      return full(`not a usable parent dump (${(e as Error).message})`);
    }
    const ip = opts.imagePid ?? ((p: number): number => p);
    if (pstree[0]?.pid !== ip(opts.root)) return full(`it is a dump of pid ${pstree[0]?.pid ?? '?'}, not of pid ${opts.root}`);
    if (inv.dump_uptime === undefined) return full('its inventory has no dump_uptime (cannot rule out pid reuse)');
    const record = readTrackerRecord(path);
    const parent: ParentInfo = {
      dir, path, link, pids: new Set(pstree.map((e) => e.pid)),
      dumpTicks: inv.dump_uptime / (1000000n / USER_HZ), record,
    };
    const self = new Incremental(opts, parent);
    if (!record) {
      self.opts.warn(`warning: ${path}: no write tracker recorded (not a pre-dump, or already used by a later dump): every page is copied`);
      return self;
    }
    const problem = trackerProblem(record, opts.root);
    if (problem !== undefined) {
      self.opts.warn(`warning: ${path}: write tracker lost (${problem}): every page is copied`);
      return self;
    }
    for (const pid of pids) {
      const started = procStartTime(pid);
      if (!parent.pids.has(ip(pid)) || started === undefined) continue;
      // Both clocks have 10 ms resolution: a process started in the very tick
      // of the parent dump is the same process (a pid cannot be freed and
      // reused within the dump that recorded it).
      if (started > parent.dumpTicks) {
        self.opts.warn(`warning: pid ${pid} started after ${path} was dumped (pid reuse): its pages are copied in full`);
        continue;
      }
      if (record.fds[String(pid)] === undefined) continue;
      try {
        self.uffds.set(pid, takeTrackedUffd(record, pid));
        self.tracked.add(pid);
      } catch (e) {
        self.opts.warn(`warning: pid ${pid}: write tracking lost (${(e as Error).message}): its pages are copied in full`);
      }
    }
    return self;
  }

  /** Dirty sub-regions and PE_PARENT entries of one frozen process. `gadget`: its vDSO syscall, for injection. */
  async planMemory(pid: number, regions: readonly DumpRegion[], inject: { gadget: bigint; timeoutMs: number }): Promise<MemoryPlan> {
    const tracked = this.tracked.has(pid);
    let uffd = this.uffds.get(pid);
    if (uffd === undefined && this.opts.preDump) {
      uffd = createTrackingUffd(pid, inject);
      this.uffds.set(pid, uffd);
    }
    const dirty: MemoryPlan['dirty'] = [];
    const clean: [bigint, bigint][] = [];
    const pm = openSync(`/proc/${pid}/pagemap`, 'r');
    try {
      regions.forEach((g, region) => {
        const start = g.start;
        const end = start + BigInt(g.nPages) * PAGE;
        // The vDSO is always copied whole (and is not ours to protect).
        const trackable = g.mode !== CollectMode.all;
        let written: BigUint64Array | undefined;
        if (trackable && tracked) {
          try {
            written = addon.pagemapScan(pm, start, end, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, PAGE_IS_WRITTEN,
              PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE);
          } catch (e) {
            // EPERM: this VMA is not under WP_ASYNC tracking (mapped or moved after arming).
            if ((e as { errno?: number }).errno !== Errno.EPERM) throw e;
          }
        }
        if (written === undefined) {
          dirty.push({ g, region, whole: true });
          if (trackable) this.opts.log(`pid ${pid}: 0x${start.toString(16)}-0x${end.toString(16)} untracked: copied whole`);
          if (trackable && uffd !== undefined && this.opts.preDump) this.arm(pid, uffd, start, end);
          return;
        }
        let at = start;
        for (let i = 0; i < written.length; i += 3) {
          const a = written[i]! < start ? start : written[i]!;
          const b = written[i + 1]! > end ? end : written[i + 1]!;
          if (a >= b) continue;
          if (at < a) clean.push([at, a]);
          at = b;
          // Written but gone (MADV_DONTNEED) or still the file's page: nothing to copy.
          const cat = written[i + 2]!;
          if ((cat & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED)) === 0n) continue;
          if ((cat & PAGE_IS_FILE) !== 0n && g.mode === CollectMode.privateFile) continue;
          dirty.push({ g: { start: a, nPages: Number((b - a) / PAGE), mode: g.mode }, region, whole: false });
        }
        if (at < end) clean.push([at, end]);
      });
    } finally {
      closeSync(pm);
    }
    const parent = tracked && this.parent ? await this.parentEntries(pid, clean) : [];
    return { dirty, parent };
  }

  /** Registers [start, end) for WP_ASYNC tracking and protects it; failures only leave it untracked (dirty next time). */
  private arm(pid: number, uffd: number, start: bigint, end: bigint): void {
    try {
      uffdRegister(uffd, start, end - start, RegisterMode.WP);
      uffdWriteprotect(uffd, start, end - start, WriteprotectMode.WP);
    } catch (e) {
      this.opts.log(`pid ${pid}: range 0x${start.toString(16)}-0x${end.toString(16)} not tracked (${(e as { code?: string }).code ?? (e as Error).message})`);
    }
  }

  /** Clean ranges (sorted) ∩ ranges the parent's pagemap has data for → PE_PARENT entries. */
  private async parentEntries(pid: number, clean: [bigint, bigint][]): Promise<PagemapEntry[]> {
    const out: PagemapEntry[] = [];
    const ip = this.opts.imagePid ?? ((p: number): number => p);
    if (clean.length === 0 || !this.parent!.pids.has(ip(pid))) return out;
    clean.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
    const reader = await this.parent!.dir.pagemap(ip(pid));
    let ci = 0;
    const emit = (a: bigint, b: bigint): void => {
      const last = out[out.length - 1];
      const n = (b - a) / PAGE;
      this.pagesSkippedParent += Number(n);
      if (last && last.vaddr + last.nr_pages! * PAGE === a) {
        last.nr_pages! += n;
        last.compat_nr_pages = Number(last.nr_pages! > 0xffffffffn ? 0n : last.nr_pages!);
        return;
      }
      out.push({ vaddr: a, compat_nr_pages: Number(n > 0xffffffffn ? 0n : n), flags: PE_PARENT, nr_pages: n });
    };
    for await (const batch of reader.batches()) {
      for (const e of batch) {
        if ((e.flags & (PE_PRESENT | PE_PARENT)) === 0) continue;
        while (ci < clean.length && clean[ci]![1] <= e.vaddr) ci++;
        for (let k = ci; k < clean.length && clean[k]![0] < e.end; k++) {
          const a = clean[k]![0] > e.vaddr ? clean[k]![0] : e.vaddr;
          const b = clean[k]![1] < e.end ? clean[k]![1] : e.end;
          if (a < b) emit(a, b);
        }
      }
    }
    return out;
  }

  /** After the images are written: parent link, tracker hand-over or retirement, records. */
  async commit(): Promise<void> {
    const { imagesDir, root } = this.opts;
    if (this.parent) {
      const linkPath = resolve(imagesDir, 'parent');
      rmSync(linkPath, { force: true });
      symlinkSync(this.parent.link, linkPath);
    }
    const old = this.parent?.record;
    try {
      if (this.opts.preDump) {
        // Keep the parent's tracker when it holds every uffd we use; else start a new one.
        const reuse = old !== undefined && trackerProblem(old, root) === undefined
          && [...this.uffds.keys()].every((p) => this.tracked.has(p) && old.fds[String(p)] !== undefined);
        let rec: TrackerRecord;
        if (reuse) {
          rec = { ...old, fds: Object.fromEntries([...this.uffds.keys()].map((p) => [String(p), old.fds[String(p)]!])) };
        } else {
          rec = await startTracker(root, this.uffds, this.opts.trackTimeoutS);
          if (old) retireTracker(old);
        }
        writeTrackerRecord(imagesDir, rec);
        this.opts.log(`write tracking held by lr-tracker pid ${rec.tracker}`);
      } else if (old) {
        retireTracker(old);
      }
      if (this.parent && old) removeTrackerRecord(this.parent.path);
    } finally {
      this.close();
    }
  }

  /** Drops our copies of the uffds (the tracker's, if any, keep tracking alive). */
  close(): void {
    for (const fd of this.uffds.values()) {
      try {
        closeSync(fd);
      } catch { /* already closed */ }
    }
    this.uffds.clear();
  }
}

const UFFD_USER_MODE_ONLY = 1;

/** A userfaultfd created inside `pid` (its stopped leader), taken out with pidfd_getfd and enabled for WP_ASYNC here. */
function createTrackingUffd(pid: number, inject: { gadget: bigint; timeoutMs: number }): number {
  const opts = { gadget: inject.gadget, timeoutMs: inject.timeoutMs };
  // A process without CAP_SYS_PTRACE (a container's, with
  // vm.unprivileged_userfaultfd=0) may only ask for a user-mode-only uffd;
  // write tracking (WP_ASYNC) is resolved by the kernel before that matters.
  let r = injectSyscall(pid, SYS.userfaultfd, [O_CLOEXEC | O_NONBLOCK], opts);
  if (r === -1n /* EPERM */) r = injectSyscall(pid, SYS.userfaultfd, [O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY], opts);
  if (r < 0n && r >= -4095n) throw sysError(Number(-r), 'userfaultfd (injected)', `tid ${pid}`);
  const remote = Number(r);
  let fd: number;
  try {
    const pidfd = addon.pidfdOpen(pid, 0);
    try {
      fd = addon.pidfdGetfd(pidfd, remote);
    } finally {
      closeSync(pidfd);
    }
  } finally {
    injectSyscall(pid, SYS.close, [remote], opts);
  }
  try {
    uffdApi(fd, UffdFeature.WP_ASYNC | UffdFeature.WP_UNPOPULATED);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return fd;
}

export interface CopiedRun {
  vaddr: bigint;
  nPages: number;
  region: number;
}

/**
 * Copies a MemoryPlan's dirty parts into the pages file from `offset` on, in
 * ascending order: whole regions through the dump's copier (`whole`),
 * written runs in large process_vm_readv batches here (thousands of
 * scattered single pages would cost the dump's copier one hand-off each).
 * All-zero pages are dropped as a full dump does.
 */
export function copyDirty(
  pid: number, pagesFd: number, plan: MemoryPlan,
  whole: (regions: DumpRegion[], offset: bigint) => { runs: { vaddr: bigint; nPages: number; region: number }[]; bytes: number; scanned: number; zero: number },
  readPage: (addr: bigint, into: Buffer) => void,
): { runs: CopiedRun[]; bytes: number; scanned: number; zero: number } {
  const out: CopiedRun[] = [];
  let bytes = 0, scanned = 0, zero = 0;
  const push = (vaddr: bigint, nPages: number, region: number): void => {
    const last = out[out.length - 1];
    if (last && last.region === region && last.vaddr + BigInt(last.nPages) * PAGE === vaddr) last.nPages += nPages;
    else out.push({ vaddr, nPages, region });
  };
  const buf = Buffer.allocUnsafe(BATCH_PAGES * PAGE_SIZE);
  const zeroPage = Buffer.alloc(PAGE_SIZE);
  let i = 0;
  const items = plan.dirty;
  while (i < items.length) {
    if (items[i]!.whole) {
      const group: { g: DumpRegion; region: number }[] = [];
      while (i < items.length && items[i]!.whole) group.push(items[i++]!);
      const r = whole(group.map((x) => x.g), BigInt(bytes));
      for (const x of r.runs) push(x.vaddr, x.nPages, group[x.region]!.region);
      bytes += r.bytes;
      scanned += r.scanned;
      zero += r.zero;
      continue;
    }
    // One batch of up to BATCH_PAGES pages from consecutive written runs.
    const pages: { addr: bigint; region: number }[] = [];
    const pairs: bigint[] = [];
    while (i < items.length && !items[i]!.whole && pages.length < BATCH_PAGES) {
      const it = items[i]!;
      const take = Math.min(it.g.nPages, BATCH_PAGES - pages.length);
      pairs.push(it.g.start, BigInt(take) * PAGE);
      for (let k = 0; k < take; k++) pages.push({ addr: it.g.start + BigInt(k) * PAGE, region: it.region });
      if (take === it.g.nPages) i++;
      else items[i] = { ...it, g: { ...it.g, start: it.g.start + BigInt(take) * PAGE, nPages: it.g.nPages - take } };
    }
    const total = pages.length * PAGE_SIZE;
    let got = 0;
    try {
      got = addon.processVmReadv(pid, buf.subarray(0, total), BigUint64Array.from(pairs));
    } catch (e) {
      if ((e as { code?: string }).code !== 'EFAULT') throw e;
    }
    // Pages process_vm_readv cannot reach (PROT_NONE...): /proc/PID/mem.
    for (got -= got % PAGE_SIZE; got < total; got += PAGE_SIZE) readPage(pages[got / PAGE_SIZE]!.addr, buf.subarray(got, got + PAGE_SIZE));
    const spans: Buffer[] = [];
    let spanStart = -1;
    for (let k = 0; k <= pages.length; k++) {
      const isData = k < pages.length && !buf.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE).equals(zeroPage);
      if (k < pages.length) {
        scanned++;
        if (isData) push(pages[k]!.addr, 1, pages[k]!.region);
        else zero++;
      }
      if (isData && spanStart < 0) spanStart = k;
      if (!isData && spanStart >= 0) {
        spans.push(buf.subarray(spanStart * PAGE_SIZE, k * PAGE_SIZE));
        spanStart = -1;
      }
    }
    let n = 0;
    for (const sp of spans) n += sp.length;
    if (n) {
      const w = writevSync(pagesFd, spans, bytes);
      if (w !== n) throw new Error(`short write to the pages file of pid ${pid} (${w} of ${n} bytes)`);
    }
    bytes += n;
  }
  return { runs: out, bytes, scanned, zero };
}
