// The native bulk pull of a process's remote ranges (post-copy background
// transfer): the engine streams large GETs on page-server connections of its
// own (PULL_STREAMS per process, one shared cursor) and copies every reply
// itself (native/engine/pull.cc), with no JavaScript per chunk. Used when the
// engine and the source can (plain TCP to a server that takes several
// connections) and no bandwidth cap applies; while it runs it holds one push
// slot of the process. If a stream fails, a new pull carries on from what is
// still lazy once the others ended (twice at most); after that the remote
// cursor's fetch() path pushes from the start (the engine copies only what is
// still missing). A page server lost for good still kills the process through
// the source's fatal path; faults never wait for a pull.
import { log } from '../log.js';
import type { EngineEventLike, FaultEngineLike } from './engine.js';
import { errText } from './helpers.js';
import type { Proc } from './proc.js';
import type { RemotePageSource } from './types.js';

/** Connections per process (LR_PULL_STREAMS overrides, 1..8; 0 = no pull, for comparisons). */
export const PULL_STREAMS = ((n: number) => (Number.isFinite(n) ? Math.min(8, Math.max(0, Math.floor(n))) : 2))(Number(process.env.LR_PULL_STREAMS ?? 2));
/** Pages per GET (LR_PULL_GET_PAGES overrides, 16..4096) and the window of each stream (8 GETs). */
const GET_PAGES = Math.min(4096, Math.max(16, Number(process.env.LR_PULL_GET_PAGES ?? 256) || 256));

/** New pulls after a failed one (each continues from what is still lazy). */
const RETRIES = 2;

type PullEnd = Extract<EngineEventLike, { type: 'pull-end' }>;

interface PullState {
  proc: Proc;
  ids: number[];
  /** Streams not ended yet (started or still connecting). */
  pending: number;
  /** Why a stream failed ('' = could not start, nothing to report). */
  failed: string | undefined;
  retries: number;
}

export interface PullHost {
  readonly engine: FaultEngineLike;
  readonly remote: RemotePageSource | undefined;
  /** A stream of p's pull ended having copied `pages`; `last`: every stream ended, p's push slot is free. */
  ended(p: Proc, pages: number, last: boolean): void;
  isClosed(): boolean;
}

export class RemotePulls {
  private readonly byProc = new Map<Proc, PullState>();
  private readonly byId = new Map<number, PullState>();

  constructor(private readonly host: PullHost) {}

  /** Starts p's pull if it can run and never ran; true = p's push slot is taken until ended(). */
  start(p: Proc): boolean {
    const { engine, remote } = this.host;
    if (PULL_STREAMS === 0 || this.byProc.has(p) || !p.remote.fresh || p.remote.ranges.length === 0) return false;
    if (!remote?.openPullSocket || !engine.startPull || !engine.stopPull) return false;
    const st: PullState = { proc: p, ids: [], pending: 0, failed: undefined, retries: 0 };
    this.byProc.set(p, st);
    this.open(st);
    return true;
  }

  /** Opens every stream of st's pull. */
  private open(st: PullState): void {
    const { engine, remote } = this.host;
    const p = st.proc;
    st.ids = [];
    st.failed = undefined;
    st.pending = PULL_STREAMS;
    for (let i = 0; i < PULL_STREAMS; i++) {
      void remote!.openPullSocket!().then((sock) => {
        if (!sock) return this.streamEnded(st, '', 0);
        try {
          if (p.state !== 'serving' || this.host.isClosed()) return this.streamEnded(st, '', 0);
          const id = engine.startPull!(p.engineProc, sock.fd, { getPages: GET_PAGES, windowPages: Math.min(65536, GET_PAGES * 8), stallMs: sock.stallMs });
          st.ids.push(id);
          this.byId.set(id, st);
        } catch (e) {
          this.streamEnded(st, `could not start (${errText(e)})`, 0);
        } finally {
          sock.close();
        }
      }, (e: unknown) => this.streamEnded(st, `has no connection (${errText(e)})`, 0));
    }
  }

  /** The engine's 'pull-end' of one stream. */
  onPullEnd(ev: PullEnd): void {
    this.host.engine.stopPull?.(ev.pull);
    const st = this.byId.get(ev.pull);
    this.byId.delete(ev.pull);
    if (st) this.streamEnded(st, ev.code === undefined ? undefined : `stopped (${ev.message ?? ev.code})`, ev.pages);
  }

  private streamEnded(st: PullState, why: string | undefined, pages: number): void {
    if (why !== undefined) st.failed ??= why;
    st.pending--;
    const p = st.proc;
    if (st.pending === 0) {
      if (st.failed === undefined) p.remote.finishAll();
      else if (st.failed && p.state === 'serving' && !this.host.isClosed() && st.retries < RETRIES) {
        st.retries++;
        log.warn(`lazy-pages: ${p.describe()}: native bulk transfer ${st.failed}; starting it again from what is still missing`);
        this.host.ended(p, pages, false);
        this.open(st);
        return;
      } else if (st.failed && p.state === 'serving') log.warn(`lazy-pages: ${p.describe()}: native bulk transfer ${st.failed}; pushing the rest through the page-server client`);
    }
    this.host.ended(p, pages, st.pending === 0);
  }
}
