// The page server (`lazy-restore page-server`), in CRIU's two modes:
//  - push (push-receiver.ts): a dumping client sends OPEN2/ADD_F/…/CLOSE and
//    we write the pagemaps and pages files of a dump. One connection, one
//    session, like CRIU.
//  - lazy (lazy-responder.ts): a lazy-pages daemon sends GETs and we answer
//    each in order per connection from a PageStore (natively when we can).
// This file owns the listening socket, the connections (connection.ts) and
// the session's life.
// Lazy sessions differ from CRIU's in two documented ways, both needed by
// our client: a session may use several connections at once (urgent faults
// and background transfer on separate connections), and a connection that
// drops without CLOSE does not end the session — the client may reconnect
// within `reconnectTimeoutMs`. A CRIU client (one connection, CLOSE at the
// end) sees exactly CRIU's behaviour. A GET for pages we do not hold closes
// the session cleanly: we never send a 0-page reply. A malformed or unknown
// command (or one cut off by a hang-up) drops only its own connection: a
// broken or foreign peer cannot end a well-behaved client's session.
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { UserError } from '../errors.js';
import { logger, type Logger } from '../log.js';
import type { Conn, PageServerStats } from './connection.js';
import { LazyResponder } from './lazy-responder.js';
import { CommandParser } from './parser.js';
import { ProtocolError } from './protocol.js';
import { PushReceiver } from './push-receiver.js';
import type { PageStore } from './store.js';
import { checkAddressPolicy, resolveAddress, systemMessage, type AnySocket, type TlsMaterial } from './transport.js';

export type { PageServerStats } from './connection.js';
export { FIRST_SERVER_PAGES_ID } from './push-receiver.js';

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

export class PageServer extends EventEmitter {
  private readonly st: PageServerStats = { sessions: 0, connections: 0, refusedConnections: 0, gets: 0, pagesServed: 0n, pagesReceived: 0n, pagemapsWritten: 0 };
  /** Lazy mode: answers GETs. */
  private responder: LazyResponder | undefined;
  /** Push mode: writes the images. */
  private readonly receiver: PushReceiver | undefined;
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
  private reconnectTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private finished = false;

  private constructor(private readonly opts: PageServerOptions, server: net.Server) {
    super();
    this.server = server;
    this.log = opts.log ?? logger('page-server');
    this.receiver = opts.lazy ? undefined : new PushReceiver(opts.imagesDir, this.st, this.log);
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
      ps.responder = await LazyResponder.open({
        imagesDir: opts.imagesDir,
        ...(opts.store ? { store: opts.store } : {}),
        native: !opts.tls && opts.nativeReplies !== false,
        ...(opts.nativeSpinMicros !== undefined ? { nativeSpinMicros: opts.nativeSpinMicros } : {}),
      }, {
        st: ps.st,
        log: ps.log,
        isFinished: () => ps.finished,
        onData: (conn, bytes) => ps.onData(conn, bytes),
        commandError: (conn, e) => ps.commandError(conn, e),
        sessionError: (conn, e) => ps.sessionError(conn, e),
        endSession: (conn) => ps.endSession(conn),
      });
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
        ps.responder?.store.close();
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
    return this.responder ? this.responder.stats(this.st) : { ...this.st };
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

  /** Stops the native thread of a connection (if any) before Node closes the socket. */
  private dropConn(c: Conn): void {
    this.responder?.detach(c);
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
    sock.on('drain', () => this.responder?.pump(conn));
    if (this.responder?.attach(conn)) return;
    sock.resume();
  }

  private armIdle(): void {
    const ms = this.opts.idleTimeoutMs;
    if (!this.opts.lazy || ms === undefined || this.finished) return;
    clearTimeout(this.idleTimer);
    const fire = (): void => {
      // GETs answered natively count as activity too.
      const idle = this.responder?.nativeIdleMs() ?? -1;
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
      if (this.responder) this.responder.onEvents(conn, events);
      else {
        for (const ev of events) {
          if (ev.type === 'command') this.receiver!.command(conn, ev.header);
          else if (ev.type === 'data') this.receiver!.data(ev.chunk);
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
      if (this.receiver!.closed && truncated === undefined) {
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
      if (!this.receiver!.closed) this.fail(new UserError(`page-server: connection from ${conn.peer} lost without CLOSE: the data were not flushed`));
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
    this.responder?.closeNative();
    for (const s of this.live) {
      // A socket ending gracefully (reply flushed) gets a moment, not forever.
      if (!s.destroyed) setTimeout(() => s.destroy(), 1000).unref();
    }
    this.responder?.closeOwnStore();
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
    this.receiver?.abort();
    this.outcome = { ok: false, error: e };
    this.teardown();
  }
}
