// The page server's lazy mode: a lazy-pages daemon sends GETs and we answer
// each, strictly in order per connection, with ADD_F|PRESENT and M ≤ N
// pages clamped to the contiguous stored run (§6.6), from a PageStore.
// Without TLS each connection is first handed to a native responder
// (native/engine/responder.cc) that answers the GETs it can serve from the
// store's runs on its own thread; anything else comes back here with the
// bytes it read, and is answered the same way from JavaScript.
import type { Logger } from '../log.js';
import { addon } from '../native/addon.js';
import type { NativePageResponderHandle, RawHandback } from '../native/types.js';
import type { Conn, PageServerStats } from './connection.js';
import type { CommandEvent } from './parser.js';
import {
  HEADER_SIZE,
  PAGE_SIZE,
  PE_PRESENT,
  PS_IOV_ADD_F,
  PS_IOV_CLOSE,
  PS_IOV_FORCE_CLOSE,
  PS_IOV_GET,
  ProtocolError,
  commandName,
  int32Reply,
  writeHeader,
  type PsHeader,
} from './protocol.js';
import { ImageDirPageStore, type PageStore } from './store.js';
import { socketFd, systemMessage } from './transport.js';

// Stop answering GETs on a connection while this much reply data is queued
// in its socket (a client may pipeline many large GETs).
const WRITE_HIGH_WATER = 8 << 20;

/** What the responder needs from the server's session handling. */
export interface LazyHost {
  /** The server's counters (gets, pagesServed are counted here). */
  readonly st: PageServerStats;
  readonly log: Logger;
  isFinished(): boolean;
  /** Bytes read from a connection (also those the native responder hands back). */
  onData(conn: Conn, bytes: Buffer): void;
  /** A bad command on one connection (only it is dropped). */
  commandError(conn: Conn, e: unknown): void;
  /** The session cannot go on. */
  sessionError(conn: Conn, e: unknown): void;
  /** CLOSE: the session ended well. */
  endSession(conn: Conn): void;
}

export interface LazyResponderOptions {
  imagesDir: string;
  /** Where pages come from (default: the images directory, owned and closed by the responder). */
  store?: PageStore;
  /** Answer GETs natively (without TLS; default true). */
  native: boolean;
  /** Native replies: busy-poll this long for the next GET after a reply (default 200). */
  nativeSpinMicros?: number;
}

export class LazyResponder {
  private responder: NativePageResponderHandle | undefined;
  private readonly nativeConns = new Map<number, Conn>();

  private constructor(private readonly host: LazyHost, readonly store: PageStore, private readonly ownsStore: boolean) {}

  static async open(opts: LazyResponderOptions, host: LazyHost): Promise<LazyResponder> {
    const r = opts.store ? new LazyResponder(host, opts.store, false) : new LazyResponder(host, await ImageDirPageStore.open(opts.imagesDir), true);
    if (opts.native) r.startNative(opts.nativeSpinMicros ?? 200);
    return r;
  }

  /** The server's counters with the GETs and pages answered natively added. */
  stats(st: PageServerStats): PageServerStats {
    const n = this.responder?.stats();
    return n ? { ...st, gets: st.gets + n.gets, pagesServed: st.pagesServed + BigInt(n.pages) } : { ...st };
  }

  /** Milliseconds since the native responder last read a GET (-1: none or no native responder). */
  nativeIdleMs(): number {
    return this.responder?.stats().idleMs ?? -1;
  }

  /** A new connection (accepted paused): the native responder takes it if it can; true if it did. */
  attach(conn: Conn): boolean {
    const fd = this.responder && !this.host.isFinished() ? socketFd(conn.sock) : undefined;
    if (fd === undefined) return false;
    try {
      conn.native = this.responder!.serve(fd);
      this.nativeConns.set(conn.native, conn);
      return true;
    } catch (e) {
      this.host.log.warn(`connection #${conn.id}: native replies unavailable (${systemMessage(e)}); serving from JS`);
      return false;
    }
  }

  /** Stops the native thread of a connection (if any) before the socket is closed. */
  detach(conn: Conn): void {
    if (conn.native === undefined) return;
    this.nativeConns.delete(conn.native);
    this.responder?.stop(conn.native);
    conn.native = undefined;
  }

  /** Commands read from a connection: queued, then answered in order. */
  onEvents(conn: Conn, events: readonly CommandEvent[]): void {
    for (const ev of events) if (ev.type === 'command') conn.queue.push(ev.header);
    this.pump(conn);
  }

  /** Answers queued GETs in order while the socket accepts more data. */
  pump(conn: Conn): void {
    try {
      while (conn.queue.length > 0 && !conn.closed && !this.host.isFinished()) {
        if (conn.sock.writableLength >= WRITE_HIGH_WATER) {
          conn.sock.pause();
          return;
        }
        const h = conn.queue.shift()!;
        switch (h.cmd) {
          case PS_IOV_GET:
            if (!this.serveGet(conn, h)) return;
            break;
          case PS_IOV_CLOSE:
          case PS_IOV_FORCE_CLOSE:
            conn.sock.end(int32Reply(0));
            this.host.log.info(`session closed by ${conn.peer} (${this.host.st.gets} GETs, ${this.host.st.pagesServed} pages)`);
            this.host.endSession(conn);
            return;
          default:
            throw new ProtocolError(`${commandName(h.cmd)} is not valid in a lazy session (expected GET or CLOSE)`);
        }
      }
      if (conn.sock.isPaused()) conn.sock.resume();
    } catch (e) {
      this.host.commandError(conn, e);
    }
  }

  /** Joins every native thread (before the store's fds are closed). */
  closeNative(): void {
    this.responder?.close();
    this.nativeConns.clear();
  }

  /** Closes the store if the responder opened it. */
  closeOwnStore(): void {
    if (this.ownsStore) this.store.close();
  }

  private startNative(spin: number): void {
    const runs = this.store.runs?.();
    if (runs === undefined) return;
    if (!Number.isInteger(spin) || spin < 0 || spin > 100_000) throw new RangeError('nativeSpinMicros must be 0..100000');
    const r = new addon.NativePageResponder(BigInt(spin), (h) => this.onHandback(h));
    const byPid = new Map<number, bigint[]>();
    for (const x of runs) {
      let v = byPid.get(x.pid);
      if (!v) byPid.set(x.pid, (v = []));
      v.push(x.start, x.end, BigInt(x.fd), x.fileOff);
    }
    try {
      for (const [pid, v] of byPid) r.setRuns(pid, BigUint64Array.from(v));
    } catch (e) {
      r.close();
      throw e;
    }
    this.responder = r;
  }

  /** The native responder gave a connection back: go on in JS from the bytes it read. */
  private onHandback(h: RawHandback): void {
    const conn = this.nativeConns.get(h.conn);
    this.nativeConns.delete(h.conn);
    this.responder?.stop(h.conn);
    if (!conn || conn.native !== h.conn) return;
    conn.native = undefined;
    if (h.reason === 'error') this.host.log.debug(`connection #${conn.id} from ${conn.peer}: native replies stopped: ${h.code ?? h.errno}`);
    if (h.bytes.length > 0) this.host.onData(conn, h.bytes);
    // Also after the session ended here: Node must read the peer's EOF to
    // finish closing the socket (`done` waits for every socket).
    if (!conn.sock.destroyed) conn.sock.resume();
  }

  private serveGet(conn: Conn, h: PsHeader): boolean {
    this.host.st.gets++;
    const pid = h.dstId <= 0x7fffffffn ? Number(h.dstId) : -1;
    const found = pid > 0 ? this.store.lookup(pid, h.vaddr, h.nrPages) : undefined;
    if (found === undefined) {
      // CRIU's client cannot take a 0-page reply and there is no error
      // reply: the only safe answer is to end the session.
      this.host.sessionError(conn, new ProtocolError(`GET pid ${h.dstId} 0x${h.vaddr.toString(16)} (${h.nrPages} pages): no stored pages there; closing the session`));
      return false;
    }
    const buf = Buffer.allocUnsafe(HEADER_SIZE + Number(found.pages) * PAGE_SIZE);
    writeHeader(buf, 0, { cmd: PS_IOV_ADD_F, flags: PE_PRESENT, nrPages: found.pages, vaddr: h.vaddr, dstId: h.dstId });
    found.fill(buf, HEADER_SIZE);
    conn.sock.write(buf);
    this.host.st.pagesServed += found.pages;
    return true;
  }
}
