// The source side of post-copy migration (`dump --lazy-pages`): after the
// dump wrote its images with PE_LAZY-only entries, the frozen tree's lazy
// memory is served straight from the processes (/proc/PID/mem) by a lazy
// page server, so it never touches the source disk. The session ends when
// the destination sends PS_IOV_CLOSE (every page is in); the caller then
// kills the frozen tree. If the destination never comes back the session
// fails after `reconnectTimeoutMs` and the caller decides (CRIU would keep
// the tree frozen; we report the error and leave that choice to the dumper).
import type { Logger } from '../log.js';
import { PageServer, type PageServerStats } from './server.js';
import { ProcessMemoryPageStore, type MemoryRange } from './store.js';
import type { TlsMaterial } from './transport.js';

export interface LazySourceOptions {
  /** Where the dump wrote its images (only for messages). */
  imagesDir: string;
  address: string;
  port: number;
  /** The PE_LAZY ranges the dump left out of the pages files, per pid. */
  ranges: MemoryRange[];
  tls?: TlsMaterial;
  insecure?: boolean;
  reconnectTimeoutMs?: number;
  log?: Logger;
}

export interface LazySource {
  server: PageServer;
  store: ProcessMemoryPageStore;
  /** Resolves when the destination closed the session; the store is closed by then. */
  done: Promise<PageServerStats>;
}

export async function startLazySource(opts: LazySourceOptions): Promise<LazySource> {
  const store = new ProcessMemoryPageStore(opts.ranges);
  let server: PageServer;
  try {
    server = await PageServer.start({
      imagesDir: opts.imagesDir,
      address: opts.address,
      port: opts.port,
      lazy: true,
      store,
      ...(opts.tls ? { tls: opts.tls } : {}),
      insecure: opts.insecure === true,
      ...(opts.reconnectTimeoutMs !== undefined ? { reconnectTimeoutMs: opts.reconnectTimeoutMs } : {}),
      ...(opts.log ? { log: opts.log } : {}),
    });
  } catch (e) {
    store.close();
    throw e;
  }
  const done = server.done.finally(() => store.close());
  done.catch(() => undefined);
  return { server, store, done };
}
