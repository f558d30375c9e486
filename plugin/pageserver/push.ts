// Push side of the page-server protocol: CRIU's `dump --page-server`. The
// pagemaps and page data a dump has written are sent to a page server
// (OPEN2 → ADD_F… per process, CLOSE at the end) and removed locally, so the
// image directory ends up like CRIU's: everything but pagemap/pages here, the
// pagemaps and pages-<n>.img on the server side.
// The dump writes locally first and sends afterwards (CRIU streams straight
// from the frozen tree); the files are moved aside before the first byte is
// sent, so a page server writing into the same directory (CRIU's test suite
// does that) never meets our copies.
import { mkdtemp, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { ImageDir, KIND, imageFileName } from '../images/index.js';
import { PagemapReader } from '../images/pagemap.js';
import { INT32_REPLY_SIZE, OPEN2_REPLY_SIZE, PAGE_SIZE, PE_PRESENT, addFHeader, closeHeader, open2Header } from './protocol.js';
import { checkAddressPolicy, connectSocket, resolveAddress, systemMessage, type AnySocket, type TlsMaterial } from './transport.js';

/** Where to send the pages. */
export interface PushTarget {
  address: string;
  port: number;
  tls?: TlsMaterial;
  insecure?: boolean;
  /** Bound for connecting and for each reply (default 30 s). */
  timeoutMs?: number;
}

export interface PushOptions extends PushTarget {
  imagesDir: string;
  /** Processes whose pagemap-<pid>.img to send. */
  pids: readonly number[];
  address: string;
  port: number;
  tls?: TlsMaterial;
  insecure?: boolean;
  /** Bound for connecting and for each reply (default 30 s). */
  timeoutMs?: number;
}

export interface PushStats {
  pagemaps: number;
  entries: number;
  pages: bigint;
  bytes: bigint;
}

/** Largest single ADD_F (pages): keeps each read and write bounded. */
const MAX_ADD_PAGES = 256;

/** Refuses a bad address before anything is touched (same policy as the server). */
export async function checkPushAddress(o: { address: string; tls?: TlsMaterial; insecure?: boolean }): Promise<void> {
  checkAddressPolicy(await resolveAddress(o.address), o.address, { tls: o.tls !== undefined, insecure: o.insecure === true });
}

/** Sends the dumped pagemaps and pages to a page server, then removes them here. */
export async function pushToPageServer(o: PushOptions): Promise<PushStats> {
  const dir = await ImageDir.open(o.imagesDir);
  const where = `page server ${o.address}:${o.port}`;
  // 1. Move the files aside (see the header), remembering what goes where.
  const staging = await mkdtemp(join(o.imagesDir, '.lr-push-'));
  const stats: PushStats = { pagemaps: 0, entries: 0, pages: 0n, bytes: 0n };
  let sock: AnySocket | undefined;
  try {
    const moved: { pid: number; pagemap: string }[] = [];
    for (const pid of o.pids) {
      const pm = dir.pathOf(KIND.pagemap, pid);
      if (!existsSync(pm)) continue; // a zombie has no memory
      const reader = await PagemapReader.open(pm);
      const pagesId = reader.head.pages_id;
      await reader.close();
      const target = join(staging, imageFileName(KIND.pagemap, pid));
      await rename(pm, target);
      for (const name of [imageFileName(KIND.pages, pagesId), imageFileName(KIND.checksums, pagesId)]) {
        // The server numbers its own pages files, so our checksums would name the wrong one.
        if (existsSync(join(o.imagesDir, name))) await rename(join(o.imagesDir, name), join(staging, name));
      }
      moved.push({ pid, pagemap: target });
    }

    // 2. One session: OPEN2 per process, its entries in address order, CLOSE.
    try {
      sock = await connectSocket({ address: o.address, port: o.port, timeoutMs: o.timeoutMs ?? 30_000, ...(o.tls ? { tls: o.tls } : {}) });
    } catch (e) {
      throw new UserError(`dump --page-server: cannot connect to ${where}: ${systemMessage(e)}`, { cause: e });
    }
    const replies = new ReplyReader(sock, where, o.timeoutMs ?? 30_000);
    for (const m of moved) {
      await write(sock, open2Header(m.pid));
      await replies.take(OPEN2_REPLY_SIZE, `OPEN2 reply for pid ${m.pid}`);
      stats.pagemaps++;
      const reader = await PagemapReader.open(m.pagemap);
      let pages: FileHandle | undefined;
      try {
        for await (const batch of reader.batches()) {
          for (const e of batch) {
            stats.entries++;
            if ((e.flags & PE_PRESENT) === 0) {
              await write(sock, addFHeader(m.pid, e.flags, e.vaddr, BigInt(e.nrPages)));
              continue;
            }
            pages ??= await open(reader.pagesPath, 'r');
            for (let done = 0; done < e.nrPages; done += MAX_ADD_PAGES) {
              const n = Math.min(MAX_ADD_PAGES, e.nrPages - done);
              const data = Buffer.alloc(n * PAGE_SIZE);
              const off = e.pagesOffset! + done * PAGE_SIZE;
              const { bytesRead } = await pages.read(data, 0, data.length, off);
              if (bytesRead !== data.length) throw new UserError(`${reader.pagesPath}: short read at offset ${off} (pid ${m.pid})`);
              await write(sock, Buffer.concat([addFHeader(m.pid, e.flags, e.vaddr + BigInt(done * PAGE_SIZE), BigInt(n)), data]));
              stats.pages += BigInt(n);
              stats.bytes += BigInt(data.length);
            }
          }
        }
      } finally {
        await pages?.close();
        await reader.close();
      }
    }
    await write(sock, closeHeader());
    const st = (await replies.take(INT32_REPLY_SIZE, 'CLOSE reply')).readInt32LE(0);
    if (st !== 0) throw new UserError(`dump --page-server: ${where} answered CLOSE with status ${st}`);
    sock.end();
    replies.dispose();
  } catch (e) {
    sock?.destroy();
    // Put the files back: the dump directory stays usable locally.
    await restoreStaged(staging, o.imagesDir);
    throw e instanceof UserError ? e : new UserError(`dump --page-server: ${where}: ${systemMessage(e)}`, { cause: e });
  }
  await rm(staging, { recursive: true, force: true });
  return stats;
}

async function restoreStaged(staging: string, imagesDir: string): Promise<void> {
  const { readdir } = await import('node:fs/promises');
  try {
    for (const name of await readdir(staging)) {
      if (!existsSync(join(imagesDir, name))) await rename(join(staging, name), join(imagesDir, name));
    }
  } catch { /* best effort: the error being reported matters more */ }
  await rm(staging, { recursive: true, force: true });
}

function write(sock: AnySocket, b: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    sock.write(b, (e) => (e ? reject(e) : resolve()));
  });
}

/** Exact-size replies from the server, each bounded in time. */
class ReplyReader {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private ended: Error | undefined;
  private readonly onData = (c: Buffer): void => {
    this.buf = Buffer.concat([this.buf, c]);
    this.wake?.();
  };
  private readonly onEnd = (e?: Error): void => {
    this.ended = e ?? new Error('connection closed');
    this.wake?.();
  };

  constructor(private readonly sock: AnySocket, private readonly where: string, private readonly timeoutMs: number) {
    sock.on('data', this.onData);
    sock.on('error', this.onEnd);
    sock.on('close', () => this.onEnd());
  }

  async take(n: number, what: string): Promise<Buffer> {
    const deadline = Date.now() + this.timeoutMs;
    while (this.buf.length < n) {
      if (this.ended) throw new UserError(`dump --page-server: ${this.where} closed the connection before the ${what} (${systemMessage(this.ended)})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new UserError(`dump --page-server: no ${what} from ${this.where} within ${this.timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  dispose(): void {
    this.sock.off('data', this.onData);
  }
}
