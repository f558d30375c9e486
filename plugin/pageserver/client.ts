// PageServerClient: fetches lazy pages from a page server (ours, or CRIU's
// `page-server --lazy-pages` / `dump --lazy-pages`) with PS_IOV_GET.
//  - Pipelining: any number of GETs outstanding per connection; replies come
//    in request order and are matched to a FIFO by vaddr and pid (§6.6).
//  - Short replies (M < N) are accepted and the rest is re-requested.
//  - Priority: urgent fetches (page faults) use their own connection, so
//    they never wait behind background transfer; with `singleConnection`
//    (for servers that take one connection, like CRIU's) background GETs
//    are kept small and one at a time, so an urgent GET waits at most one
//    small reply.
//  - Failures: a dropped or stalled connection is reconnected with backoff
//    and its unanswered GETs are re-sent; callers just keep waiting. If the
//    server stays unreachable for `timeoutMs`, every pending fetch rejects
//    with PageServerUnavailableError and 'error' is emitted, so the daemon
//    can kill the restored tree instead of letting it run on zeros.
//  - close() sends PS_IOV_CLOSE and waits for the status (the server then
//    exits; a `dump --lazy-pages` source then kills the frozen tree).
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { ExitCode, UserError } from '../errors.js';
import { logger, type Logger } from '../log.js';
import { ReplyParser, type Reply } from './parser.js';
import { PAGE_SHIFT, PAGE_SIZE, ProtocolError, closeHeader, getHeader } from './protocol.js';
import { checkAddressPolicy, connectSocket, resolveAddress, systemMessage, type AnySocket, type TlsMaterial } from './transport.js';

export interface PageServerClientOptions {
  address: string;
  port: number;
  tls?: TlsMaterial;
  /** Check the server certificate's name against `address` (default true). */
  verifyName?: boolean;
  /** Allow plain TCP to a non-loopback address. */
  insecure?: boolean;
  /** One connection for everything (strict priority, small background GETs). */
  singleConnection?: boolean;
  /** Give up after the server has been unreachable this long (default 30 s). */
  timeoutMs?: number;
  /** A connection with unanswered GETs and no byte received for this long is considered dead (default 2 s). */
  stallTimeoutMs?: number;
  /** Largest single GET in pages (default 1024 = 4 MiB; 16 for background GETs with singleConnection). */
  maxGetPages?: number;
  log?: Logger;
}

export interface FetchOptions {
  /** A page fault is waiting: never queue it behind background transfer. */
  urgent?: boolean;
}

export interface PageServerClientStats {
  fetches: number;
  gets: number;
  shortReplies: number;
  pagesReceived: bigint;
  reconnects: number;
  resent: number;
}

/** The page server could not be reached in time; pages cannot be served. */
export class PageServerUnavailableError extends UserError {
  constructor(message: string, cause?: unknown) {
    super(message, { cause, exitCode: ExitCode.restoredFailed });
    this.name = 'PageServerUnavailableError';
  }
}

interface Req {
  pid: number;
  vaddr: bigint;
  pages: bigint;
  got: bigint;
  buf: Buffer | undefined;
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
}

interface Get {
  req: Req;
  vaddr: bigint;
  pages: bigint;
  /** Page index of `vaddr` within the request. */
  index: bigint;
}

type LaneName = 'urgent' | 'background';

interface Lane {
  name: LaneName;
  sock: AnySocket | undefined;
  parser: ReplyParser;
  inflight: Get[];
  queue: Get[];
  reconnecting: boolean;
  lostAt: number | undefined;
  /** When the current connection was made, and whether it has carried data since. */
  attachedAt: number | undefined;
  gotData: boolean;
  /** lostAt of the outage the current connection ended (kept if it fails at once). */
  outageStart: number | undefined;
  delay: number;
  /** TLS connections the server dropped right after the handshake, in a row. */
  tlsDrops: number;
  stallTimer: NodeJS.Timeout | undefined;
  /** Why the last connection of this lane was lost. */
  lastError: unknown;
  closeWaiter: { resolve: (v: number) => void; reject: (e: Error) => void } | undefined;
}

export class PageServerClient extends EventEmitter {
  readonly stats: PageServerClientStats = { fetches: 0, gets: 0, shortReplies: 0, pagesReceived: 0n, reconnects: 0, resent: 0 };
  private lanes: Lane[];
  private log: Logger;
  private fatalError: Error | undefined;
  private closing = false;
  private closed = false;
  private readonly timeoutMs: number;
  private readonly stallMs: number;
  private readonly maxGet: bigint;
  private readonly maxBackgroundGet: bigint;

  private constructor(private readonly opts: PageServerClientOptions) {
    super();
    this.log = opts.log ?? logger('page-client');
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.stallMs = opts.stallTimeoutMs ?? 2_000;
    this.maxGet = BigInt(opts.maxGetPages ?? 1024);
    this.maxBackgroundGet = opts.singleConnection ? (this.maxGet < 16n ? this.maxGet : 16n) : this.maxGet;
    const mk = (name: LaneName): Lane => ({ name, sock: undefined, parser: new ReplyParser(), inflight: [], queue: [], reconnecting: false, lostAt: undefined, attachedAt: undefined, gotData: false, outageStart: undefined, delay: 0, tlsDrops: 0, stallTimer: undefined, lastError: undefined, closeWaiter: undefined });
    this.lanes = opts.singleConnection ? [mk('urgent')] : [mk('urgent'), mk('background')];
  }

  /** Connects every lane (retrying until `timeoutMs`); TLS errors fail at once. */
  static async connect(opts: PageServerClientOptions): Promise<PageServerClient> {
    const ip = await resolveAddress(opts.address);
    checkAddressPolicy(ip, opts.address, { tls: opts.tls !== undefined, insecure: opts.insecure === true });
    const c = new PageServerClient({ ...opts, address: ip });
    try {
      await Promise.all(c.lanes.map((l) => c.establish(l, Date.now())));
    } catch (e) {
      c.destroy(e instanceof Error ? e : new Error(String(e)));
      throw e;
    }
    return c;
  }

  /**
   * Fetches `pages` pages of `pid` starting at dump-time address `vaddr`.
   * Resolves with exactly pages·4096 bytes.
   */
  fetch(pid: number, vaddr: bigint, pages: bigint | number, opts: FetchOptions = {}): Promise<Buffer> {
    const n = BigInt(pages);
    if (this.fatalError) return Promise.reject(this.fatalError);
    if (this.closing) return Promise.reject(new UserError('page-server client is closing'));
    if (!Number.isInteger(pid) || pid <= 0) return Promise.reject(new RangeError(`bad pid ${pid}`));
    if (n <= 0n || (vaddr & 0xfffn) !== 0n) return Promise.reject(new RangeError(`bad fetch 0x${vaddr.toString(16)} ${n} pages`));
    this.stats.fetches++;
    return new Promise((resolve, reject) => {
      const req: Req = { pid, vaddr, pages: n, got: 0n, buf: undefined, resolve, reject };
      if (!opts.urgent) this.backgroundReqs.add(req);
      const lane = opts.urgent || this.lanes.length === 1 ? this.lanes[0]! : this.lanes[1]!;
      const limit = opts.urgent ? this.maxGet : this.maxBackgroundGet;
      for (let i = 0n; i < n; i += limit) {
        const cnt = n - i < limit ? n - i : limit;
        const g: Get = { req, vaddr: vaddr + (i << PAGE_SHIFT), pages: cnt, index: i };
        if (opts.urgent || this.lanes.length > 1) this.submit(lane, g);
        else this.queueBackground(lane, g);
      }
    });
  }

  /** One connection for everything (a server that takes one connection, like CRIU's). */
  get singleConnection(): boolean {
    return this.opts.singleConnection === true;
  }

  /** A connection with unanswered GETs and nothing received this long is considered dead. */
  get stallTimeoutMs(): number {
    return this.stallMs;
  }

  /** Plain TCP (no TLS): raw connections can be handed to the native engine. */
  get plainTcp(): boolean {
    return this.opts.tls === undefined;
  }

  /**
   * A new plain TCP connection to the same server, outside this client's
   * lanes (the caller owns it): for a native fast path that speaks the
   * protocol itself. Refused with TLS. Nothing is read from it here.
   */
  async connectRaw(timeoutMs = 2_000): Promise<net.Socket> {
    if (this.opts.tls) throw new UserError('page-server client: raw connections are plain TCP only');
    if (this.closed || this.closing) throw this.fatalError ?? new UserError('page-server client is closing');
    const sock = await connectSocket({ address: this.opts.address, port: this.opts.port, timeoutMs });
    sock.pause();
    return sock as net.Socket;
  }

  /** GETs sent but not answered yet, per lane (for tests and progress). */
  get inflight(): { urgent: number; background: number } {
    return { urgent: this.lanes[0]!.inflight.length, background: this.lanes[1]?.inflight.length ?? 0 };
  }

  /**
   * Ends the session: sends PS_IOV_CLOSE once everything queued is answered,
   * waits for the server's status, and closes the connections.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.fatalError) throw this.fatalError;
    this.closing = true;
    // Outstanding fetches finish first: the server exits after CLOSE.
    await this.drained();
    const bg = this.lanes[1];
    if (bg) {
      this.clearStall(bg);
      bg.sock?.end();
      bg.sock = undefined;
    }
    const lane = this.lanes[0]!;
    const status = await new Promise<number>((resolve, reject) => {
      lane.closeWaiter = { resolve, reject };
      this.sendClose(lane);
    });
    this.closed = true;
    this.clearStall(lane);
    lane.sock?.end();
    lane.sock = undefined;
    if (status !== 0) throw new UserError(`page server ${this.opts.address}:${this.opts.port} answered CLOSE with status ${status}`);
  }

  /** Drops the connections at once; pending fetches reject with `reason`. */
  destroy(reason: Error = new UserError('page-server client destroyed')): void {
    if (this.closed && this.fatalError) return;
    this.closed = true;
    this.fatalError ??= reason;
    for (const lane of this.lanes) {
      this.clearStall(lane);
      lane.sock?.destroy();
      lane.sock = undefined;
      const reqs = new Set([...lane.inflight, ...lane.queue].map((g) => g.req));
      lane.inflight = [];
      lane.queue = [];
      for (const r of reqs) r.reject(this.fatalError);
      lane.closeWaiter?.reject(this.fatalError);
      lane.closeWaiter = undefined;
    }
  }

  private drained(): Promise<void> {
    const busy = (): boolean => this.lanes.some((l) => l.inflight.length > 0 || l.queue.length > 0);
    if (!busy()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.fatalError) {
          this.off('reply', check);
          this.off('fatal', check);
          reject(this.fatalError);
        } else if (!busy()) {
          this.off('reply', check);
          this.off('fatal', check);
          resolve();
        }
      };
      this.on('reply', check);
      this.on('fatal', check);
    });
  }

  // --- sending ------------------------------------------------------------

  private submit(lane: Lane, g: Get): void {
    if (lane.sock === undefined) {
      lane.queue.push(g);
      return;
    }
    this.send(lane, g);
  }

  /** singleConnection: one small background GET at a time on the shared lane. */
  private queueBackground(lane: Lane, g: Get): void {
    lane.queue.push(g);
    this.flushBackground(lane);
  }

  private flushBackground(lane: Lane): void {
    if (lane.sock === undefined) return;
    while (lane.queue.length > 0 && !lane.inflight.some((x) => this.isBackground(x))) {
      this.send(lane, lane.queue.shift()!);
    }
  }

  private backgroundReqs = new WeakSet<Req>();
  private isBackground(g: Get): boolean {
    return this.backgroundReqs.has(g.req);
  }

  private send(lane: Lane, g: Get): void {
    lane.inflight.push(g);
    lane.parser.expect({ kind: 'pages', maxPages: g.pages });
    this.stats.gets++;
    lane.sock!.write(getHeader(g.req.pid, g.vaddr, g.pages));
    if (lane.stallTimer === undefined) this.armStall(lane);
  }

  private sendClose(lane: Lane): void {
    if (lane.sock === undefined) return; // sent after reconnect
    lane.parser.expect({ kind: 'i32' });
    lane.sock.write(closeHeader());
    if (lane.stallTimer === undefined) this.armStall(lane);
  }

  // --- receiving ----------------------------------------------------------

  private onData(lane: Lane, sock: AnySocket, chunk: Buffer): void {
    if (lane.sock !== sock) return;
    let replies: Reply[];
    try {
      replies = lane.parser.push(chunk);
    } catch (e) {
      this.fatal(new UserError(`page server ${this.opts.address}:${this.opts.port}: ${e instanceof Error ? e.message : String(e)}`, { cause: e }));
      return;
    }
    lane.gotData = true;
    lane.tlsDrops = 0;
    this.armStall(lane);
    for (const r of replies) {
      if (r.kind === 'i32') {
        lane.closeWaiter?.resolve(r.value);
        lane.closeWaiter = undefined;
        continue;
      }
      if (r.kind !== 'pages') continue;
      const g = lane.inflight.shift();
      if (g === undefined || r.header.vaddr !== g.vaddr || r.header.dstId !== BigInt(g.req.pid)) {
        // Still unanswered: fatal() must reject its fetch too (it would wait forever).
        if (g !== undefined) lane.inflight.unshift(g);
        this.fatal(new UserError(`page server ${this.opts.address}:${this.opts.port}: reply for pid ${r.header.dstId} 0x${r.header.vaddr.toString(16)} does not match the oldest request${g ? ` (pid ${g.req.pid} 0x${g.vaddr.toString(16)})` : ''}`, { cause: new ProtocolError('reply mismatch') }));
        return;
      }
      this.complete(lane, g, r.header.nrPages, r.data);
    }
    if (lane.inflight.length === 0 && lane.closeWaiter === undefined) this.clearStall(lane);
    if (this.lanes.length === 1) this.flushBackground(lane);
    if (replies.length > 0) this.emit('reply');
  }

  private complete(lane: Lane, g: Get, m: bigint, data: Buffer): void {
    const req = g.req;
    this.stats.pagesReceived += m;
    if (m < g.pages) {
      // Short reply: the server stopped at the end of a stored run.
      this.stats.shortReplies++;
      this.send(lane, { req, vaddr: g.vaddr + (m << PAGE_SHIFT), pages: g.pages - m, index: g.index + m });
    }
    req.got += m;
    if (req.got === req.pages && g.index === 0n && m === req.pages) {
      req.resolve(data);
      return;
    }
    req.buf ??= Buffer.allocUnsafe(Number(req.pages) * PAGE_SIZE);
    data.copy(req.buf, Number(g.index) * PAGE_SIZE);
    if (req.got === req.pages) req.resolve(req.buf);
  }

  // --- connection management ----------------------------------------------

  private async establish(lane: Lane, since: number, initialDelay = 0): Promise<void> {
    let delay = 20;
    let lastErr: unknown;
    if (initialDelay > 0) await new Promise((r) => setTimeout(r, initialDelay));
    for (;;) {
      if (this.closed) throw this.fatalError ?? new UserError('page-server client closed');
      const left = since + this.timeoutMs - Date.now();
      if (left <= 0) {
        // Connections that were made but then died (a server that accepts and
        // never answers) leave no connect error: name why the last one was lost.
        const why = lastErr ?? lane.lastError;
        throw new PageServerUnavailableError(
          `page server ${this.opts.address}:${this.opts.port} unreachable for ${this.timeoutMs} ms (${lane.name} connection; last error: ${systemMessage(why)})`,
          why,
        );
      }
      try {
        const sock = await connectSocket({ address: this.opts.address, port: this.opts.port, tls: this.opts.tls, verifyName: this.opts.verifyName, timeoutMs: Math.max(50, Math.min(left, 2_000)) });
        this.attach(lane, sock);
        return;
      } catch (e) {
        if (this.opts.tls && /before secure TLS connection/.test(e instanceof Error ? e.message : "") && ++lane.tlsDrops >= 3) {
          throw new UserError(`page server ${this.opts.address}:${this.opts.port} refused the TLS handshake ${lane.tlsDrops} times: is this client's certificate signed by a CA the server trusts?`, { cause: e });
        }
        if (isTlsFailure(e)) throw new UserError(`page server ${this.opts.address}:${this.opts.port}: TLS handshake failed: ${systemMessage(e)}`, { cause: e });
        lastErr = e;
        this.emit('retry', lane.name, e);
      }
      await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(1, since + this.timeoutMs - Date.now()))));
      delay = Math.min(delay * 2, 500);
    }
  }

  private attach(lane: Lane, sock: AnySocket): void {
    lane.sock = sock;
    lane.parser.reset();
    sock.on('data', (chunk: Buffer) => this.onData(lane, sock, chunk));
    sock.on('error', (e) => this.lost(lane, sock, e));
    sock.on('close', () => this.lost(lane, sock, new Error('connection closed by the page server')));
    // Re-send what was unanswered on the old connection, in order.
    const pending = lane.queue;
    lane.queue = [];
    if (lane.lostAt !== undefined) {
      this.stats.reconnects++;
      this.stats.resent += pending.length;
      this.log.info(`${lane.name} connection to ${this.opts.address}:${this.opts.port} re-established after ${Date.now() - lane.lostAt} ms; re-sending ${pending.length} GETs`);
      this.emit('reconnect', lane.name);
    }
    lane.outageStart = lane.lostAt;
    lane.lostAt = undefined;
    lane.attachedAt = Date.now();
    lane.gotData = false;
    for (const g of pending) {
      if (this.lanes.length === 1 && this.isBackground(g)) lane.queue.push(g);
      else this.send(lane, g);
    }
    if (this.lanes.length === 1) this.flushBackground(lane);
    if (lane.closeWaiter) this.sendClose(lane);
  }

  private lost(lane: Lane, sock: AnySocket, e: unknown): void {
    if (lane.sock !== sock) return;
    sock.destroy();
    lane.sock = undefined;
    lane.lastError = e;
    this.clearStall(lane);
    if (this.closed || this.fatalError) return;
    if (isTlsFailure(e)) {
      this.fatal(new UserError(`page server ${this.opts.address}:${this.opts.port}: TLS failure: ${systemMessage(e)}`, { cause: e }));
      return;
    }
    if (lane.name === 'background' && this.closing && lane.inflight.length === 0) return;
    lane.queue = [...lane.inflight, ...lane.queue];
    lane.inflight = [];
    // A connection that dies at once without carrying anything (a server
    // that accepts and drops, a black hole) is one more failed attempt of
    // the same outage: keep its start time and back off.
    const quick = lane.attachedAt !== undefined && !lane.gotData && Date.now() - lane.attachedAt < 5_000;
    // With TLS 1.3 a server that rejects our certificate completes the
    // handshake and then hangs up: the client cannot see why. Several such
    // drops in a row are reported as the likely cause instead of retrying.
    if (this.opts.tls && quick && ++lane.tlsDrops >= 3) {
      this.fatal(new UserError(`page server ${this.opts.address}:${this.opts.port} closed the TLS connection right after the handshake ${lane.tlsDrops} times: is this client's certificate signed by a CA the server trusts?`, { cause: e }));
      return;
    }
    lane.delay = quick ? Math.min(Math.max(lane.delay * 2, 20), 500) : 0;
    lane.lostAt ??= quick && lane.outageStart !== undefined ? lane.outageStart : Date.now();
    this.log.warn(`${lane.name} connection to ${this.opts.address}:${this.opts.port} lost (${systemMessage(e)}); reconnecting, ${lane.queue.length} GETs waiting`);
    this.emit('disconnect', lane.name, e);
    if (lane.reconnecting) return;
    lane.reconnecting = true;
    this.establish(lane, lane.lostAt, lane.delay)
      .catch((err: unknown) => this.fatal(err instanceof Error ? err : new Error(String(err))))
      .finally(() => {
        lane.reconnecting = false;
      });
  }

  private armStall(lane: Lane): void {
    this.clearStall(lane);
    const sock = lane.sock;
    if (sock === undefined) return;
    lane.stallTimer = setTimeout(() => {
      this.lost(lane, sock, Object.assign(new Error(`no reply for ${this.stallMs} ms`), { code: 'ETIMEDOUT' }) /* a stall, not a failed syscall: no errno/syscall, so messages say just ETIMEDOUT */);
    }, this.stallMs);
  }

  private clearStall(lane: Lane): void {
    clearTimeout(lane.stallTimer);
    lane.stallTimer = undefined;
  }

  private fatal(e: Error): void {
    if (this.fatalError) return;
    const pids = new Set(this.lanes.flatMap((l) => [...l.inflight, ...l.queue].map((g) => g.req.pid)));
    this.log.error(`${e.message}${pids.size ? `; pages of pid ${[...pids].join(', ')} cannot be served` : ''}`);
    this.destroy(e);
    this.emit('fatal', e);
    // 'error' only when someone listens: pending fetches already reject.
    if (this.listenerCount('error') > 0) this.emit('error', e);
  }
}

function isTlsFailure(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && /^ERR_SSL|^ERR_TLS|CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|HOSTNAME_MISMATCH/.test(code);
}
