// The remote page source the lazy-pages daemon plugs in for ranges the
// images do not hold (PE_LAZY without PE_PRESENT): each request becomes
// PS_IOV_GETs on a PageServerClient. Faults ('need' events) are urgent;
// background push passes { urgent: false } and uses the other connection.
// When the server stays unreachable past the timeout, `onFatal` listeners
// learn it once, so the daemon can kill the restored tree at once instead
// of waiting for each process's next fault.
import { PAGE_SIZE } from './protocol.js';
import { PageServerClient, type PageServerClientOptions, type PageServerClientStats } from './client.js';

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

  private constructor(readonly client: PageServerClient) {
    client.on('fatal', (e: Error) => {
      if (this.fatal) return;
      this.fatal = e;
      for (const l of this.fatalListeners) l(e);
    });
  }

  static async connect(opts: PageServerClientOptions): Promise<PageServerPageSource> {
    return new PageServerPageSource(await PageServerClient.connect(opts));
  }

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
    return this.client.close();
  }

  destroy(): void {
    this.client.destroy();
  }
}
