// The background push: what to copy before it faults, when and how fast.
// Windows near recent faults first, then address order (local images), or
// the remote ranges in address order (page server); at most maxInFlight
// windows at a time, under the bandwidth cap. The engine serves faults
// before push windows.
import { isSystemError } from '../errors.js';
import { PAGE } from '../images/memory.js';
import type { EngineEventLike, FaultEngineLike } from './engine.js';
import { errText, toError } from './helpers.js';
import type { Proc } from './proc.js';
import { isAlive } from './procfs.js';
import type { Span } from './span.js';
import { RemotePulls } from './remote-pull.js';
import { TokenBucket } from './token-bucket.js';
import type { LazyProcessState, RemotePageSource } from './types.js';

/** Hot addresses kept per process. */
const HOT_MAX = 4;

/** What the scheduler needs from the server. */
export interface PushHost {
  readonly engine: FaultEngineLike;
  readonly remote: RemotePageSource | undefined;
  procs(): Iterable<Proc>;
  /** Restore finished, not closed, push on, not recording a working set. */
  pushAllowed(): boolean;
  finish(p: Proc, state: LazyProcessState): void;
  fail(p: Proc, why: string, error: Error): void;
}

export class PushScheduler {
  /** Windows issued and not yet reported, all processes. */
  private inFlight = 0;
  /** Pages the push copied, all processes. */
  pushedPages = 0;
  private readonly bucket: TokenBucket;
  /** Native bulk pulls of remote ranges (no bandwidth cap only). */
  private readonly pulls: RemotePulls | undefined;

  /**
   * Local pushes are one window per process that the engine walks itself
   * (address order, going on from each fault it serves in it): no
   * JavaScript round trip per window, so the push never idles between
   * windows. Windows of `chunk` bytes chosen here (near fault holes, then
   * address order) when a bandwidth cap meters them or a chunk size was
   * asked for.
   */
  private readonly follow: boolean;

  constructor(
    private readonly host: PushHost,
    private readonly chunk: bigint,
    private readonly maxInFlight: number,
    bandwidthBytesPerSec: number | undefined,
    wholeProcessWindows = false,
  ) {
    this.follow = wholeProcessWindows && !bandwidthBytesPerSec && !host.remote;
    this.bucket = new TokenBucket(bandwidthBytesPerSec, () => this.pump());
    if (!bandwidthBytesPerSec) {
      this.pulls = new RemotePulls({
        engine: host.engine,
        remote: host.remote,
        isClosed: () => !host.pushAllowed(),
        ended: (p, pages, last) => {
          this.count(p, BigInt(pages) * PAGE);
          if (!last) return;
          if (p.pushInFlight > 0) {
            p.pushInFlight--;
            this.inFlight--;
          }
          if (p.completePending && p.pushInFlight === 0) this.host.finish(p, 'complete');
          this.pump();
        },
      });
    }
  }

  /** The engine's 'pull-end' of a bulk pull stream. */
  onPullEnd(ev: Extract<EngineEventLike, { type: 'pull-end' }>): void {
    this.pulls?.onPullEnd(ev);
  }

  /** Issues background chunks while there is room; the engine serves faults before them. */
  pump(): void {
    if (!this.host.pushAllowed()) return;
    let progress = true;
    while (this.inFlight < this.maxInFlight && progress) {
      progress = false;
      for (const p of this.host.procs()) {
        if (this.inFlight >= this.maxInFlight) break;
        if (p.state !== 'serving' || p.pushInFlight > 0 || p.push.paused || p.completePending) continue;
        if (this.host.remote && this.pulls?.start(p)) {
          p.pushInFlight++;
          this.inFlight++;
          progress = true;
          continue;
        }
        if (!this.bucket.take(Number(this.chunk))) return;
        const remote = this.nextRemoteChunk(p);
        if (remote) {
          this.bucket.refund(Number(this.chunk - remote.len));
          p.pushInFlight++;
          this.inFlight++;
          void this.pushRemote(p, remote);
          progress = true;
          continue;
        }
        const next = this.follow ? this.wholeWindow(p) : this.nextChunk(p);
        if (!next) {
          this.bucket.refund(Number(this.chunk));
          continue;
        }
        p.pushInFlight++;
        this.inFlight++;
        try {
          if (this.follow) this.host.engine.prefetch(p.engineProc, next.start, next.len, { followFaults: true });
          else this.host.engine.prefetch(p.engineProc, next.start, next.len);
          progress = true;
        } catch (e) {
          p.pushInFlight--;
          this.inFlight--;
          if (isSystemError(e) && (e.code === 'ESRCH' || e.code === 'ENOSPC')) this.host.finish(p, 'exited');
          else this.host.fail(p, `prefetch: ${errText(e)}`, toError(e));
        }
      }
    }
  }

  /** The engine reported a push window of p (`copied` bytes). */
  onPrefetched(p: Proc, copied: bigint): void {
    if (p.pushInFlight > 0) {
      p.pushInFlight--;
      this.inFlight--;
    }
    this.count(p, copied);
    // A whole-process window that placed nothing: what is left cannot be
    // copied yet; wait for the next fault instead of spinning.
    if (this.follow && copied === 0n) p.push.paused = true;
    if (p.completePending && p.pushInFlight === 0) this.host.finish(p, 'complete');
  }

  /** p is done (complete, exited or killed): its windows in flight no longer count. */
  writeOff(p: Proc): void {
    if (p.pushInFlight > 0) {
      this.inFlight -= p.pushInFlight;
      p.pushInFlight = 0;
    }
  }

  close(): void {
    this.bucket.close();
  }

  private count(p: Proc, copied: bigint): void {
    p.pushedBytes += copied;
    p.push.passCopied += copied;
    if (copied > 0n) p.pushedChunks++;
    this.pushedPages += Number(copied / PAGE);
  }

  // ---- remote background push (plugin/pageserver) ---------------------------

  /** Next chunk of p's remote ranges (dump-time addresses), or undefined when all were fetched. */
  private nextRemoteChunk(p: Proc): { start: bigint; len: bigint } | undefined {
    if (!this.host.remote) return undefined;
    return p.remote.next(this.chunk);
  }

  /** Fetches a remote chunk on the source's background path and supplies it. */
  private async pushRemote(p: Proc, chunk: { start: bigint; len: bigint }): Promise<void> {
    try {
      const data = await this.host.remote!.fetch(p.imagePid, chunk.start, Number(chunk.len), { urgent: false });
      if (p.state !== 'serving') return;
      const copied = this.host.engine.supply(p.engineProc, chunk.start, data);
      this.count(p, copied);
    } catch (e) {
      this.host.fail(p, `remote page source: ${errText(e)}`, toError(e));
    } finally {
      // finish()/fail() may already have written off this window.
      if (p.pushInFlight > 0) {
        p.pushInFlight--;
        this.inFlight--;
      }
      if (p.completePending && p.pushInFlight === 0) this.host.finish(p, 'complete');
      this.pump();
    }
  }

  // ---- local background push -------------------------------------------------

  /** One window over every range of p still lazy (the engine walks it), or undefined when none is left. */
  private wholeWindow(p: Proc): { start: bigint; len: bigint } | undefined {
    const ranges = this.rangesOf(p);
    if (ranges === undefined || ranges.length === 0) return undefined;
    const start = ranges[0]!.start;
    return { start, len: ranges[ranges.length - 1]!.end - start };
  }

  /** Next window of process p: near recent faults first, then address order. */
  private nextChunk(p: Proc): { start: bigint; len: bigint } | undefined {
    const c = p.push;
    if (c.hotCheck) {
      c.hotCheck = false;
      this.findFaultHoles(p);
    }
    while (c.hot.length > 0) {
      const addr = c.hot.pop()!;
      const start = addr - (addr % this.chunk);
      c.noteEdges(start, start + this.chunk);
      return { start, len: this.chunk };
    }
    for (let pass = 0; pass < 2; pass++) {
      if (pass === 1 || !c.snapshot) {
        if (pass === 1 && c.passChunks > 0 && c.passCopied === 0n) {
          // A whole pass copied nothing (pages the engine cannot copy yet):
          // wait for the next fault instead of spinning.
          c.paused = true;
          c.passChunks = 0;
          c.snapshot = undefined;
          return undefined;
        }
        const ranges = this.rangesOf(p);
        if (ranges === undefined) return undefined;
        c.snapshot = ranges;
        c.snapIndex = 0;
        c.cursor = 0n;
        c.passChunks = 0;
        c.passCopied = 0n;
      }
      const snap = c.snapshot;
      while (c.snapIndex < snap.length && snap[c.snapIndex]!.end <= c.cursor) c.snapIndex++;
      if (c.snapIndex < snap.length) {
        const r = snap[c.snapIndex]!;
        const start = r.start > c.cursor ? r.start : c.cursor;
        c.cursor = start + this.chunk;
        c.passChunks++;
        c.noteEdges(start, c.cursor);
        return { start, len: this.chunk };
      }
      if (snap.length === 0) return undefined;
    }
    return undefined;
  }

  /**
   * The engine's remaining lazy ranges of p. If the engine cannot say (it
   * lost the process), the process is finished as exited when it is gone and
   * killed otherwise — never left with the push silently stopped.
   */
  private rangesOf(p: Proc): Span[] | undefined {
    try {
      return this.host.engine.lazyRanges(p.engineProc);
    } catch (e) {
      if (p.identity && !isAlive(p.identity)) this.host.finish(p, 'exited');
      else this.host.fail(p, `the fault engine cannot list its lazy ranges: ${errText(e)}`, toError(e));
      return undefined;
    }
  }

  /** Remaining-range edges we did not make are fault holes: push around them next. */
  private findFaultHoles(p: Proc): void {
    const known = p.push.knownEdges;
    if (!known) return;
    const ranges = this.rangesOf(p);
    if (ranges === undefined) return;
    const found: bigint[] = [];
    for (const r of ranges) {
      if (!known.has(r.start)) found.push(r.start);
      if (!known.has(r.end)) found.push(r.end > this.chunk ? r.end - this.chunk : 0n);
      if (found.length >= HOT_MAX * 4) break;
    }
    for (const a of found.slice(-HOT_MAX)) p.push.hot.push(a);
    if (p.push.hot.length > HOT_MAX) p.push.hot = p.push.hot.slice(-HOT_MAX);
  }
}
