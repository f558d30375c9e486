// The remote page source the lazy-pages daemon plugs in for ranges the
// images do not hold (PE_LAZY without PE_PRESENT): each request becomes
// PS_IOV_GETs on a PageServerClient. Faults ('need' events) are urgent;
// background push passes { urgent: false } and uses the other connection.
// When the server stays unreachable past the timeout, `onFatal` listeners
// learn it once, so the daemon can kill the restored tree at once instead
// of waiting for each process's next fault.
// Native links (bindEngine): over plain TCP the source also opens one raw
// connection per engine thread and hands it to the engine, which then sends
// urgent GETs and copies the replies itself. Protocol decisions stay here:
// which server, which policy (no links with TLS or a single-connection
// server), and reconnection — a failed link is reopened with backoff while
// its GETs (and faults meanwhile) take the fetch() path.
import { UserError } from '../errors.js';
import { logger, type Logger } from '../log.js';
import type { EngineLinks } from '../lazy/types.js';
import { PAGE_SIZE } from './protocol.js';
import { PageServerClient, type PageServerClientOptions, type PageServerClientStats } from './client.js';
import { socketFd, systemMessage } from './transport.js';

const MAX_LINKS = 8;

export interface RemoteFetchOptions {
  urgent?: boolean;
}

export class PageServerPageSource {
  private fatalListeners: ((e: Error) => void)[] = [];
  private fatal: Error | undefined;
  /** Bytes delivered, split by priority (for progress lines). */
  urgentBytes = 0;
  backgroundBytes = 0;
  urgentFetches = 0;
  /** Links attached to the engine so far (reconnections included). */
  linkAttaches = 0;
  private links: EngineLinks | undefined;
  private unbindLinks: (() => void) | undefined;
  private log: Logger = logger('page-client');

  private constructor(readonly client: PageServerClient) {
    client.on('fatal', (e: Error) => {
      if (this.fatal) return;
      this.fatal = e;
      for (const l of this.fatalListeners) l(e);
    });
  }

  static async connect(opts: PageServerClientOptions): Promise<PageServerPageSource> {
    const s = new PageServerPageSource(await PageServerClient.connect(opts));
    if (opts.log) s.log = opts.log;
    return s;
  }

  /** Bytes received on the engine's native links (urgent faults that skipped JS). */
  get nativeBytes(): number {
    return this.nativeStats().pages * PAGE_SIZE;
  }

  /** GETs the engine sent on native links. */
  get nativeGets(): number {
    return this.nativeStats().gets;
  }

  private nativeStats(): { gets: number; pages: number } {
    if (this.links && !this.linksStopped) {
      const s = this.links.stats();
      if (s.pages >= this.native.pages) this.native = s;
    }
    return this.native;
  }

  private native = { gets: 0, pages: 0 };
  private linksStopped = false;

  bindEngine(links: EngineLinks): { ready: Promise<void>; unbind(): void } {
    if (!this.client.plainTcp || this.client.singleConnection || this.links) return { ready: Promise.resolve(), unbind: () => {} };
    this.links = links;
    let stopped = false;
    const busy = new Set<number>();
    const open = async (slot: number, delayMs: number): Promise<void> => {
      if (busy.has(slot)) return;
      busy.add(slot);
      try {
        for (let d = delayMs; !stopped && !this.fatal; d = Math.min(Math.max(d * 2, 20), 1000)) {
          if (d > 0) await new Promise((r) => setTimeout(r, d));
          if (stopped || this.fatal) return;
          try {
            const sock = await this.client.connectRaw();
            try {
              const fd = socketFd(sock);
              if (fd === undefined) throw new UserError('no file descriptor behind the socket');
              if (stopped) return;
              links.attach(slot, fd, { stallMs: this.client.stallTimeoutMs });
              this.linkAttaches++;
            } finally {
              // The engine holds its own duplicate; Node never read from this one.
              sock.destroy();
            }
            return;
          } catch (e) {
            if (stopped || this.fatal) return;
            this.log.debug(`native link ${slot}: ${systemMessage(e)}; retrying`);
          }
        }
      } finally {
        busy.delete(slot);
      }
    };
    links.onLinkError((slot, message) => {
      if (stopped || this.fatal) return;
      this.log.warn(`native link ${slot} to the page server failed (${message}); faults use the JS path until it is reopened`);
      void open(slot, 20);
    });
    // One per engine thread, bounded (the server holds 16 connections per
    // session); threads without a link use the JS path.
    const slots = Math.min(links.slots, MAX_LINKS);
    const first: Promise<void>[] = [];
    for (let i = 0; i < slots; i++) first.push(open(i, 0));
    const unbind = (): void => {
      if (stopped) return;
      this.nativeStats(); // last counts while the engine is still open
      stopped = true;
      this.linksStopped = true;
      for (let i = 0; i < slots; i++) {
        try {
          links.detach(i);
        } catch {
          /* engine already closed */
        }
      }
    };
    this.unbindLinks = unbind;
    return {
      // Bounded: a server slow to accept must not hold the daemon's start.
      ready: Promise.race([Promise.all(first).then(() => undefined), new Promise<void>((r) => setTimeout(r, 3000).unref())]),
      unbind,
    };
  }

  /** A raw connection for the engine's bulk pull (plain TCP, multi-connection servers only). */
  async openPullSocket(): Promise<{ fd: number; stallMs: number; close(): void } | undefined> {
    if (!this.client.plainTcp || this.client.singleConnection || this.fatal) return undefined;
    const sock = await this.client.connectRaw();
    const fd = socketFd(sock);
    if (fd === undefined) {
      sock.destroy();
      return undefined;
    }
    this.pullSockets++;
    // Node never reads from it: the engine holds its own duplicate.
    return { fd, stallMs: this.client.stallTimeoutMs, close: () => sock.destroy() };
  }

  /** Connections handed out for bulk pulls. */
  pullSockets = 0;

  /** Exactly `len` bytes of `pid` at dump-time `imageAddr` (whole pages). */
  async fetch(pid: number, imageAddr: bigint, len: number, opts: RemoteFetchOptions = { urgent: true }): Promise<Buffer> {
    if (len <= 0 || len % PAGE_SIZE !== 0) throw new RangeError(`remote fetch of ${len} bytes is not a whole number of pages`);
    const urgent = opts.urgent !== false;
    const data = await this.client.fetch(pid, imageAddr, BigInt(len / PAGE_SIZE), { urgent });
    if (urgent) {
      this.urgentBytes += data.length;
      this.urgentFetches++;
    } else this.backgroundBytes += data.length;
    return data;
  }

  /** Called once if the page server is lost for good. */
  onFatal(cb: (e: Error) => void): void {
    if (this.fatal) cb(this.fatal);
    else this.fatalListeners.push(cb);
  }

  get stats(): PageServerClientStats {
    return this.client.stats;
  }

  /** Tells the server we are done (PS_IOV_CLOSE) and waits for its status. */
  close(): Promise<void> {
    // The server ends the session on CLOSE: the links go first.
    this.unbindLinks?.();
    return this.client.close();
  }

  destroy(): void {
    this.unbindLinks?.();
    this.client.destroy();
  }
}
