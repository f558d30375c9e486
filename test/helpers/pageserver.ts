// Helpers for the page-server tests: deterministic page contents, a raw
// TCP peer that reads exact byte counts with a bound, a push session
// written with the codec, and a TCP proxy whose link can be cut.
import net from 'node:net';
import { PAGE_SIZE, PE_PRESENT, addFHeader, closeHeader, open2Header } from '../../plugin/pageserver/protocol.js';
import { withTimeout } from './env.js';

/** Page contents that identify pid and address (so misplaced pages show). */
export function pageData(pid: number, vaddr: bigint, pages: number | bigint): Buffer {
  const n = Number(pages);
  const b = Buffer.alloc(n * PAGE_SIZE);
  for (let p = 0; p < n; p++) {
    const a = vaddr + BigInt(p * PAGE_SIZE);
    let x = Number((a >> 12n) & 0xffffffn) ^ (pid * 2654435761);
    for (let i = 0; i < PAGE_SIZE; i += 4) {
      x = (Math.imul(x, 1103515245) + 12345) | 0;
      b.writeInt32LE(x, p * PAGE_SIZE + i);
    }
    b.writeBigUInt64LE(a, p * PAGE_SIZE);
    b.writeUInt32LE(pid, p * PAGE_SIZE + 8);
  }
  return b;
}

export interface Layout {
  pid: number;
  entries: { vaddr: bigint; pages: number; flags: number }[];
}

/** The bytes a dumping client sends for these layouts (OPEN2 … CLOSE), without the replies. */
export function pushStream(layouts: Layout[]): Buffer {
  const parts: Buffer[] = [];
  for (const l of layouts) {
    parts.push(open2Header(l.pid));
    for (const e of l.entries) {
      parts.push(addFHeader(l.pid, e.flags, e.vaddr, BigInt(e.pages)));
      if (e.flags & PE_PRESENT) parts.push(pageData(l.pid, e.vaddr, e.pages));
    }
  }
  parts.push(closeHeader());
  return Buffer.concat(parts);
}

/** A raw client socket with exact reads. */
export class RawPeer {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  ended = false;
  private constructor(readonly sock: net.Socket) {
    sock.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.wake();
    });
    sock.on('close', () => {
      this.ended = true;
      this.wake();
    });
    sock.on('error', () => undefined);
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawPeer> {
    return withTimeout(new Promise((resolve, reject) => {
      const s = net.connect({ port, host }, () => resolve(new RawPeer(s)));
      s.once('error', reject);
    }), 5000, `connect ${host}:${port}`);
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  write(b: Buffer): void {
    this.sock.write(b);
  }

  /** Reads exactly n bytes; rejects if the peer closes first or after 5 s. */
  read(n: number): Promise<Buffer> {
    return withTimeout(new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.buf.length >= n) {
          const out = this.buf.subarray(0, n);
          this.buf = this.buf.subarray(n);
          resolve(out);
        } else if (this.ended) reject(new Error(`peer closed after ${this.buf.length} of ${n} bytes`));
        else this.waiters.push(check);
      };
      check();
    }), 5000, `read ${n} bytes`);
  }

  /** Resolves with the bytes received until the server closed the connection. */
  untilClosed(): Promise<Buffer> {
    return withTimeout(new Promise((resolve) => {
      const check = (): void => {
        if (this.ended) resolve(this.buf);
        else this.waiters.push(check);
      };
      check();
    }), 5000, 'server closing the connection');
  }

  close(): void {
    this.sock.destroy();
  }
}

/**
 * A TCP proxy in front of a server. cut() drops every connection and
 * refuses new ones until heal(); the client then sees a dead link.
 */
export class CuttableProxy {
  private conns = new Set<net.Socket>();
  private cutNow = false;
  connections = 0;
  private constructor(private server: net.Server, readonly target: number) {}

  static async start(target: number): Promise<CuttableProxy> {
    const server = net.createServer();
    const p = new CuttableProxy(server, target);
    server.on('connection', (c) => p.onConn(c));
    await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, () => r()));
    return p;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  private onConn(c: net.Socket): void {
    if (this.cutNow) {
      c.destroy();
      return;
    }
    this.connections++;
    const up = net.connect({ host: '127.0.0.1', port: this.target });
    c.on('error', () => undefined);
    up.on('error', () => undefined);
    c.pipe(up);
    up.pipe(c);
    const kill = (): void => {
      c.destroy();
      up.destroy();
      this.conns.delete(c);
      this.conns.delete(up);
    };
    c.on('close', kill);
    up.on('close', kill);
    this.conns.add(c);
    this.conns.add(up);
  }

  /** Silently stop forwarding (like a pulled cable): sockets stay open but carry nothing. */
  blackhole(): void {
    this.cutNow = true;
    for (const s of this.conns) {
      s.unpipe();
      s.pause();
    }
  }

  cut(): void {
    this.cutNow = true;
    for (const s of this.conns) s.destroy();
    this.conns.clear();
  }

  heal(): void {
    this.cutNow = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
