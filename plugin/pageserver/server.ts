// The page server (`lazy-restore page-server`), in CRIU's two modes:
//  - push: a dumping client sends OPEN2/ADD_F/…/CLOSE and we write
//    pagemap-<id>.img + pages-<n>.img (n from 0x10001), byte-compatible with
//    a local dump (§6.5). One connection, one session, like CRIU.
//  - lazy: a lazy-pages daemon sends GETs and we answer each, strictly in
//    order per connection, with ADD_F|PRESENT and M ≤ N pages clamped to the
//    contiguous stored run (§6.6), from a PageStore.
// Lazy sessions differ from CRIU's in two documented ways, both needed by
// our client: a session may use several connections at once (urgent faults
// and background transfer on separate connections), and a connection that
// drops without CLOSE does not end the session — the client may reconnect
// within `reconnectTimeoutMs`. A CRIU client (one connection, CLOSE at the
// end) sees exactly CRIU's behaviour. A GET for pages we do not hold closes
// the session cleanly: we never send a 0-page reply. A malformed or unknown
// command (or one cut off by a hang-up) drops only its own connection: a
// broken or foreign peer cannot end a well-behaved client's session.
// Latency: in lazy mode without TLS each connection is accepted paused and
// handed to a native responder (native/engine/responder.cc) that answers the
// GETs it can serve from the store's runs on its own thread (one send per
// reply, a short busy-poll for the next GET); anything else comes back here
// with the bytes it read, and this code carries on exactly as before.
import { EventEmitter } from 'node:events';
import { closeSync, existsSync, openSync, unlinkSync, writeSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { logger, type Logger } from '../log.js';
import { CommandParser } from './parser.js';
import {
  HEADER_SIZE,
  PAGE_SHIFT,
  PAGE_SIZE,
  PE_PARENT,
  PE_PRESENT,
  PS_IOV_ADD,
  PS_IOV_ADD_F,
  PS_IOV_CLOSE,
  PS_IOV_FORCE_CLOSE,
  PS_IOV_GET,
  PS_IOV_HOLE,
  PS_IOV_OPEN,
  PS_IOV_OPEN2,
  PS_IOV_PARENT,
  ProtocolError,
  commandName,
  decodeDstId,
  int32Reply,
  open2Reply,
  writeHeader,
  type PsHeader,
} from './protocol.js';
import { PagemapFileWriter } from './pagemap-file.js';
import { addon } from '../native/addon.js';
import type { NativePageResponderHandle, RawHandback } from '../native/types.js';
import { ImageDirPageStore, type PageStore } from './store.js';
import { checkAddressPolicy, resolveAddress, socketFd, systemMessage, type AnySocket, type TlsMaterial } from './transport.js';

/** First pages-<n>.img id a page server uses (CRIU's convention). */
export const FIRST_SERVER_PAGES_ID = 0x10001;

export interface PageServerOptions {
  /** Directory written (push) or served (lazy, unless `store` is given). */
  imagesDir: string;
  /** Address to bind; nothing else is bound. */
  address: string;
  /** TCP port; 0 lets the kernel choose (see `PageServer.port`). */
  port?: number;
  /** Serve GETs (lazy mode) instead of receiving pushed pages. */
  lazy?: boolean;
  /** Lazy mode: where pages come from (default: the images directory). */
  store?: PageStore;
  /** Mutual TLS: both ends present certificates signed by `ca`. */
  tls?: TlsMaterial;
  /** Allow plain TCP on a non-loopback address. */
  insecure?: boolean;
  /** Lazy mode: serve session after session until close(). */
  keepGoing?: boolean;
  /**
   * Lazy mode: connections one session may hold at once (default 16: our
   * client uses two lanes plus one native link per engine thread, and dead
   * connections linger after a silent link cut until they are evicted).
   */
  maxConnections?: number;
  /** Lazy mode: how long a session with no connection waits for the client to come back (default 60 s). */
  reconnectTimeoutMs?: number;
  /**
   * Lazy mode: end the session when nothing arrived from the client for this
   * long (default: never). Behind a silently cut link the server cannot tell
   * a dead client from an idle one: this bounds how long the source waits.
   */
  idleTimeoutMs?: number;
  /**
   * Lazy mode without TLS: answer GETs natively (default true; false keeps
   * every byte in JavaScript).
   */
  nativeReplies?: boolean;
  /** Native replies: busy-poll this long for the next GET after a reply (default 200). */
  nativeSpinMicros?: number;
  log?: Logger;
}

export interface PageServerStats {
  sessions: number;
  connections: number;
  refusedConnections: number;
  gets: number;
  pagesServed: bigint;
  pagesReceived: bigint;
  pagemapsWritten: number;
}

interface Conn {
  id: number;
  sock: AnySocket;
  peer: string;
  parser: CommandParser;
  queue: PsHeader[];
  closed: boolean;
  /** Id of the native responder thread serving it, while it does. */
  native: number | undefined;
}

interface OpenPagemap {
  dst: bigint;
  writer: PagemapFileWriter;
  pagesPath: string;
  pagesFd: number;
  lastEnd: bigint;
  pending: bigint; // page-data bytes still expected for the current ADD
}

// Stop answering GETs on a connection while this much reply data is queued
// in its socket (a client may pipeline many large GETs).
const WRITE_HIGH_WATER = 8 << 20;

export class PageServer extends EventEmitter {
  private readonly st: PageServerStats = { sessions: 0, connections: 0, refusedConnections: 0, gets: 0, pagesServed: 0n, pagesReceived: 0n, pagemapsWritten: 0 };
  private responder: NativePageResponderHandle | undefined;
  private nativeConns = new Map<number, Conn>();
  readonly done: Promise<PageServerStats>;
  private resolveDone!: (s: PageServerStats) => void;
  private rejectDone!: (e: Error) => void;
  private server: net.Server;
  private conns = new Set<Conn>();
  /** Every accepted socket not yet closed: `done` settles only when this is empty. */
  private live = new Set<AnySocket>();
  private listening = true;
  private nextConnId = 1;
  private log: Logger;
  private store: PageStore | undefined;
  private ownsStore = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private finished = false;
  // push-mode state
  private pagemap: OpenPagemap | undefined;
  private nextPagesId = FIRST_SERVER_PAGES_ID;
  private created: string[] = [];
  private pushClosed = false;

  private constructor(private readonly opts: PageServerOptions, server: net.Server) {
    super();
    this.server = server;
    this.log = opts.log ?? logger('page-server');
    this.done = new Promise((res, rej) => {
      this.resolveDone = res;
      this.rejectDone = rej;
    });
    this.done.catch(() => undefined); // observed through `done` by the caller
  }

  /** Binds and listens; resolves once connections can be accepted. */
  static async start(opts: PageServerOptions): Promise<PageServer> {
    const ip = await resolveAddress(opts.address);
    checkAddressPolicy(ip, opts.address, { tls: opts.tls !== undefined, insecure: opts.insecure === true });
    if (!existsSync(opts.imagesDir)) throw new UserError(`images directory ${opts.imagesDir}: ENOENT`);
    const server = opts.tls
      ? tls.createServer({ ca: opts.tls.ca, cert: opts.tls.cert, key: opts.tls.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' })
      // Paused: nothing is read before we know who reads (Node or the native responder).
      : net.createServer({ pauseOnConnect: true });
    const ps = new PageServer(opts, server);
    if (opts.lazy) {
      if (opts.store) ps.store = opts.store;
      else {
        ps.store = await ImageDirPageStore.open(opts.imagesDir);
        ps.ownsStore = true;
      }
      if (!opts.tls && opts.nativeReplies !== false) ps.startResponder();
    }
    server.on(opts.tls ? 'secureConnection' : 'connection', (s: AnySocket) => ps.accept(s));
    if (opts.tls) {
      server.on('tlsClientError', (e: Error, s: tls.TLSSocket) => {
        ps.st.refusedConnections++;
        const peer = `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}`;
        ps.log.warn(`refused TLS client ${peer}: ${systemMessage(e)}`);
        ps.emit('refused', peer, e);
      });
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => {
        ps.store?.close();
        reject(new UserError(`page-server: listen on ${opts.address}:${opts.port ?? 0}: ${systemMessage(e)}`, { cause: e }));
      });
      server.listen({ host: ip, port: opts.port ?? 0, backlog: 4 }, () => resolve());
    });
    server.on('error', (e) => ps.fail(new UserError(`page-server: ${systemMessage(e)}`, { cause: e })));
    ps.log.info(`listening on ${ps.address}:${ps.port} (${opts.lazy ? 'lazy' : 'push'}${opts.tls ? ', TLS' : ''})`);
    return ps;
  }

  /** Counters so far (GETs and pages answered natively included). */
  get stats(): PageServerStats {
    const n = this.responder?.stats();
    return n ? { ...this.st, gets: this.st.gets + n.gets, pagesServed: this.st.pagesServed + BigInt(n.pages) } : { ...this.st };
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  get address(): string {
    return (this.server.address() as net.AddressInfo).address;
  }

  get lazy(): boolean {
    return this.opts.lazy === true;
  }

  /** Stops listening and drops every connection; `done` rejects if a session was still open. */
  async close(): Promise<void> {
    if (!this.finished) {
      if (this.opts.keepGoing && this.conns.size === 0) this.finish();
      else this.fail(new UserError('page-server: stopped before the session ended'));
    }
    await this.done.catch(() => undefined);
  }

  private startResponder(): void {
    const runs = this.store?.runs?.();
    if (runs === undefined) return;
    const spin = this.opts.nativeSpinMicros ?? 200;
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
    if (h.reason === 'error') this.log.debug(`connection #${conn.id} from ${conn.peer}: native replies stopped: ${h.code ?? h.errno}`);
    if (h.bytes.length > 0) this.onData(conn, h.bytes);
    // Also after the session ended here: Node must read the peer's EOF to
    // finish closing the socket (`done` waits for every socket).
    if (!conn.sock.destroyed) conn.sock.resume();
  }

  /** Stops the native thread of a connection (if any) before Node closes the socket. */
  private dropConn(c: Conn): void {
    if (c.native !== undefined) {
      this.nativeConns.delete(c.native);
      this.responder?.stop(c.native);
      c.native = undefined;
    }
    c.sock.destroy();
  }

  private accept(sock: AnySocket): void {
    this.live.add(sock);
    sock.once('close', () => {
      this.live.delete(sock);
      this.settle();
    });
    const peer = `${sock.remoteAddress ?? '?'}:${sock.remotePort ?? '?'}`;
    const limit = this.opts.lazy ? (this.opts.maxConnections ?? 16) : 1;
    if (this.opts.lazy && !this.finished && this.conns.size >= limit) {
      // A client that reconnects after a silent link cut leaves dead
      // connections behind that we cannot tell from live ones: the newest
      // connection is the likely live one, so the oldest gives way.
      const oldest = this.conns.values().next().value as Conn;
      this.log.warn(`connection #${oldest.id} from ${oldest.peer} dropped: a session holds at most ${limit} connections`);
      oldest.closed = true;
      this.conns.delete(oldest);
      this.dropConn(oldest);
    }
    if (this.finished || (!this.opts.lazy && this.st.connections > 0)) {
      this.st.refusedConnections++;
      this.log.warn(`refusing connection from ${peer}: ${this.finished ? 'server is finishing' : 'session already has its connections'}`);
      sock.destroy();
      this.emit('refused', peer);
      return;
    }
    sock.setNoDelay(true);
    // A client behind a cut link never sends FIN: keepalive probes are how
    // an idle dead connection is noticed (then the reconnect timeout runs).
    sock.setKeepAlive(true, 1000);
    const conn: Conn = { id: this.nextConnId++, sock, peer, parser: new CommandParser(), queue: [], closed: false, native: undefined };
    this.conns.add(conn);
    this.st.connections++;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.log.info(`connection #${conn.id} from ${peer}`);
    this.armIdle();
    this.emit('connection', peer);
    sock.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    sock.on('end', () => this.onEnd(conn));
    sock.on('error', (e) => {
      this.log.warn(`connection #${conn.id} from ${peer}: ${systemMessage(e)}`);
    });
    sock.on('close', () => this.onClosed(conn));
    sock.on('drain', () => this.pump(conn));
    const fd = this.responder && !this.finished ? socketFd(sock) : undefined;
    if (fd !== undefined) {
      try {
        conn.native = this.responder!.serve(fd);
        this.nativeConns.set(conn.native, conn);
        return;
      } catch (e) {
        this.log.warn(`connection #${conn.id}: native replies unavailable (${systemMessage(e)}); serving from JS`);
      }
    }
    sock.resume();
  }

  private armIdle(): void {
    const ms = this.opts.idleTimeoutMs;
    if (!this.opts.lazy || ms === undefined || this.finished) return;
    clearTimeout(this.idleTimer);
    const fire = (): void => {
      // GETs answered natively count as activity too.
      const idle = this.responder?.stats().idleMs ?? -1;
      if (idle >= 0 && idle < ms) {
        this.idleTimer = setTimeout(fire, Math.max(1, Math.ceil(ms - idle)));
        return;
      }
      this.fail(new UserError(`page-server: nothing received from the client for ${ms} ms (--idle-timeout); ending the session`));
    };
    this.idleTimer = setTimeout(fire, ms);
  }

  private onData(conn: Conn, chunk: Buffer): void {
    if (conn.closed || this.finished) return;
    this.armIdle();
    try {
      const events = conn.parser.push(chunk);
      if (this.opts.lazy) {
        for (const ev of events) if (ev.type === 'command') conn.queue.push(ev.header);
        this.pump(conn);
      } else {
        for (const ev of events) {
          if (ev.type === 'command') this.pushCommand(conn, ev.header);
          else if (ev.type === 'data') this.pushData(ev.chunk);
        }
      }
    } catch (e) {
      this.commandError(conn, e);
    }
  }

  /**
   * A malformed or unknown command. In a lazy session it is that
   * connection's fault, not the session's: only it is dropped (the session
   * may hold other connections, possibly another client's), so one broken
   * or foreign peer cannot end the transfer of a well-behaved one.
   */
  private commandError(conn: Conn, e: unknown): void {
    if (!(this.opts.lazy && e instanceof ProtocolError)) {
      this.sessionError(conn, e);
      return;
    }
    if (conn.closed) return;
    this.log.error(`connection #${conn.id} from ${conn.peer}: ${e.message}; dropping this connection (the session goes on)`);
    // Closed before the socket's 'close': no wait for this peer to come back.
    conn.closed = true;
    this.conns.delete(conn);
    this.dropConn(conn);
    this.emit('connection-error', new UserError(`page-server: connection #${conn.id} from ${conn.peer}: ${e.message}`, { cause: e }));
  }

  // --- lazy mode ----------------------------------------------------------

  /** Answers queued GETs in order while the socket accepts more data. */
  private pump(conn: Conn): void {
    try {
      while (conn.queue.length > 0 && !conn.closed && !this.finished) {
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
            this.log.info(`session closed by ${conn.peer} (${this.st.gets} GETs, ${this.st.pagesServed} pages)`);
            this.endSession(conn);
            return;
          default:
            throw new ProtocolError(`${commandName(h.cmd)} is not valid in a lazy session (expected GET or CLOSE)`);
        }
      }
      if (conn.sock.isPaused()) conn.sock.resume();
    } catch (e) {
      this.commandError(conn, e);
    }
  }

  private serveGet(conn: Conn, h: PsHeader): boolean {
    this.st.gets++;
    const pid = h.dstId <= 0x7fffffffn ? Number(h.dstId) : -1;
    const found = pid > 0 ? this.store!.lookup(pid, h.vaddr, h.nrPages) : undefined;
    if (found === undefined) {
      // CRIU's client cannot take a 0-page reply and there is no error
      // reply: the only safe answer is to end the session.
      this.sessionError(conn, new ProtocolError(`GET pid ${h.dstId} 0x${h.vaddr.toString(16)} (${h.nrPages} pages): no stored pages there; closing the session`));
      return false;
    }
    const buf = Buffer.allocUnsafe(HEADER_SIZE + Number(found.pages) * PAGE_SIZE);
    writeHeader(buf, 0, { cmd: PS_IOV_ADD_F, flags: PE_PRESENT, nrPages: found.pages, vaddr: h.vaddr, dstId: h.dstId });
    found.fill(buf, HEADER_SIZE);
    conn.sock.write(buf);
    this.st.pagesServed += found.pages;
    return true;
  }

  // --- push mode ----------------------------------------------------------

  private pushCommand(conn: Conn, h: PsHeader): void {
    if (this.pushClosed) throw new ProtocolError(`${commandName(h.cmd)} after CLOSE`);
    switch (h.cmd) {
      case PS_IOV_OPEN2:
        this.openPagemap(h.dstId);
        conn.sock.write(open2Reply(this.hasParent(h.dstId)));
        return;
      case PS_IOV_OPEN:
        this.openPagemap(h.dstId);
        return;
      case PS_IOV_PARENT:
        conn.sock.write(int32Reply(this.hasParent(h.dstId) ? 1 : 0));
        return;
      case PS_IOV_ADD:
      case PS_IOV_ADD_F:
      case PS_IOV_HOLE: {
        // An ADD for another pagemap silently opens it (legacy clients).
        if (this.pagemap?.dst !== h.dstId) this.openPagemap(h.dstId);
        const pm = this.pagemap!;
        const flags = h.cmd === PS_IOV_ADD ? PE_PRESENT : h.cmd === PS_IOV_HOLE ? PE_PARENT : h.flags;
        if (h.vaddr < pm.lastEnd) {
          throw new ProtocolError(`${commandName(h.cmd)} at 0x${h.vaddr.toString(16)} is below the end of the previous entry 0x${pm.lastEnd.toString(16)} (entries must ascend)`);
        }
        pm.writer.add({ vaddr: h.vaddr, nrPages: h.nrPages, flags });
        pm.lastEnd = h.vaddr + (h.nrPages << PAGE_SHIFT);
        if ((flags & PE_PRESENT) !== 0) {
          pm.pending = h.nrPages << PAGE_SHIFT;
          this.st.pagesReceived += h.nrPages;
        }
        return;
      }
      case PS_IOV_CLOSE:
      case PS_IOV_FORCE_CLOSE:
        this.closePagemap();
        this.pushClosed = true;
        conn.sock.write(int32Reply(0));
        this.log.info(`push session closed: ${this.st.pagemapsWritten} pagemaps, ${this.st.pagesReceived} pages`);
        // CRIU waits for the client to close its end; so do we (onEnd).
        return;
      case PS_IOV_GET:
        throw new ProtocolError('GET received by a page server not started with --lazy-pages');
      default:
        throw new ProtocolError(`unexpected ${commandName(h.cmd)}`);
    }
  }

  private pushData(chunk: Buffer): void {
    const pm = this.pagemap!;
    let off = 0;
    while (off < chunk.length) off += writeSync(pm.pagesFd, chunk, off, chunk.length - off);
    pm.pending -= BigInt(chunk.length);
  }

  private pagemapName(dst: bigint): string {
    const d = decodeDstId(dst);
    return d.kind === 'task' ? `pagemap-${d.id}.img` : `pagemap-shmem-${d.id}.img`;
  }

  private hasParent(dst: bigint): boolean {
    const parent = join(this.opts.imagesDir, 'parent');
    return existsSync(parent) && existsSync(join(parent, this.pagemapName(dst)));
  }

  private openPagemap(dst: bigint): void {
    this.closePagemap();
    const name = this.pagemapName(dst);
    const pagesId = this.nextPagesId++;
    const pagesPath = join(this.opts.imagesDir, `pages-${pagesId}.img`);
    const path = join(this.opts.imagesDir, name);
    let writer: PagemapFileWriter;
    try {
      writer = new PagemapFileWriter(path, pagesId);
    } catch (e) {
      throw new UserError(`${path}: ${systemMessage(e)}`);
    }
    this.created.push(path);
    let pagesFd: number;
    try {
      pagesFd = openSync(pagesPath, 'wx', 0o600);
    } catch (e) {
      writer.close();
      throw new UserError(`${pagesPath}: ${systemMessage(e)}`);
    }
    this.created.push(pagesPath);
    this.pagemap = { dst, writer, pagesPath, pagesFd, lastEnd: 0n, pending: 0n };
    this.st.pagemapsWritten++;
  }

  private closePagemap(): void {
    const pm = this.pagemap;
    if (!pm) return;
    this.pagemap = undefined;
    try {
      pm.writer.close();
    } finally {
      closeSync(pm.pagesFd);
    }
  }

  // --- session end --------------------------------------------------------

  private onEnd(conn: Conn): void {
    if (conn.closed || this.finished) return;
    let truncated: string | undefined;
    try {
      conn.parser.finish();
    } catch (e) {
      truncated = e instanceof Error ? e.message : String(e);
    }
    if (!this.opts.lazy) {
      if (this.pushClosed && truncated === undefined) {
        conn.sock.end();
        this.endSession(conn);
      } else {
        this.sessionError(conn, new ProtocolError(`connection closed without CLOSE: the data were not flushed${truncated ? ` (${truncated})` : ''}`));
      }
      return;
    }
    // A peer that hangs up in the middle of a command: that connection only.
    if (truncated !== undefined) this.commandError(conn, new ProtocolError(truncated));
    // Lazy: a connection without CLOSE may come back; see onClosed.
  }

  private onClosed(conn: Conn): void {
    if (conn.closed) return;
    conn.closed = true;
    this.conns.delete(conn);
    if (this.finished) return;
    if (!this.opts.lazy) {
      if (!this.pushClosed) this.fail(new UserError(`page-server: connection from ${conn.peer} lost without CLOSE: the data were not flushed`));
      return;
    }
    if (this.conns.size === 0) {
      const ms = this.opts.reconnectTimeoutMs ?? 60_000;
      this.log.warn(`connection from ${conn.peer} lost without CLOSE; waiting ${ms} ms for the client to reconnect`);
      this.reconnectTimer = setTimeout(() => {
        this.fail(new UserError(`page-server: client did not reconnect within ${ms} ms after the connection from ${conn.peer} was lost`));
      }, ms);
    }
  }

  private sessionError(conn: Conn, e: unknown): void {
    const msg = e instanceof Error ? e.message : String(e);
    this.log.error(`connection #${conn.id} from ${conn.peer}: ${msg}`);
    if (this.opts.lazy && this.opts.keepGoing) {
      this.emit('session-error', new UserError(`page-server: ${msg}`));
      this.endSession(conn, true);
      return;
    }
    this.fail(e instanceof UserError ? e : new UserError(`page-server: ${conn.peer}: ${msg}`, { cause: e }));
  }

  /** A session ended (CLOSE, or a clean refusal in --keep-going mode). */
  private endSession(conn: Conn, failed = false): void {
    for (const c of this.conns) {
      if (c === conn) continue;
      c.closed = true;
      this.dropConn(c);
    }
    this.conns.clear();
    conn.closed = true;
    if (failed) this.dropConn(conn);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.st.sessions++;
    this.emit('session', { ...this.stats });
    if (this.opts.lazy && this.opts.keepGoing) return;
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.outcome = { ok: true };
    this.teardown();
  }

  private outcome: { ok: true } | { ok: false; error: Error } | undefined;

  /** Stops listening, drops connections, then settles `done` once every socket is closed. */
  private teardown(): void {
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.idleTimer);
    this.server.close(() => {
      this.listening = false;
      this.settle();
    });
    for (const c of this.conns) this.dropConn(c);
    this.conns.clear();
    // Every native thread is joined before the store's fds are closed.
    this.responder?.close();
    this.nativeConns.clear();
    for (const s of this.live) {
      // A socket ending gracefully (reply flushed) gets a moment, not forever.
      if (!s.destroyed) setTimeout(() => s.destroy(), 1000).unref();
    }
    if (this.ownsStore) this.store?.close();
    this.settle();
  }

  private settle(): void {
    if (this.outcome === undefined || this.listening || this.live.size > 0) return;
    const o = this.outcome;
    this.outcome = undefined;
    if (o.ok) this.resolveDone({ ...this.stats });
    else this.rejectDone(o.error);
  }

  private fail(e: Error): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.reconnectTimer);
    try {
      this.closePagemap();
    } catch {
      /* already failing */
    }
    if (!this.opts.lazy && !this.pushClosed) {
      // Half-written pagemaps must not be mistaken for a dump.
      for (const p of this.created) {
        try {
          unlinkSync(p);
        } catch {
          /* best effort */
        }
      }
    }
    this.outcome = { ok: false, error: e };
    this.teardown();
  }
}
