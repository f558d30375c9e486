// Helpers for the page-server tests: deterministic page contents, a raw
// TCP peer that reads exact byte counts with a bound, a push session
// written with the codec, and a TCP proxy whose link can be cut.
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PageStore, StoredPages } from '../../plugin/pageserver/store.js';
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
  private mode: 'up' | 'cut' | 'blackhole' = 'up';
  private fixedPort = 0;
  connections = 0;
  private constructor(private server: net.Server, readonly target: number) {}

  static async start(target: number): Promise<CuttableProxy> {
    const p = new CuttableProxy(net.createServer(), target);
    await p.listen();
    return p;
  }

  private listen(): Promise<void> {
    this.server = net.createServer((c) => this.onConn(c));
    return new Promise<void>((r) => this.server.listen({ host: '127.0.0.1', port: this.fixedPort }, () => {
      this.fixedPort = (this.server.address() as net.AddressInfo).port;
      r();
    }));
  }

  get port(): number {
    return this.fixedPort;
  }

  private onConn(c: net.Socket): void {
    c.on('error', () => undefined);
    this.conns.add(c);
    c.on('close', () => this.conns.delete(c));
    if (this.mode === 'blackhole') {
      c.pause(); // accepted, but nothing ever flows
      return;
    }
    this.connections++;
    const up = net.connect({ host: '127.0.0.1', port: this.target });
    up.on('error', () => undefined);
    c.pipe(up);
    up.pipe(c);
    const kill = (): void => {
      c.destroy();
      up.destroy();
      this.conns.delete(up);
    };
    c.on('close', kill);
    up.on('close', kill);
    this.conns.add(up);
  }

  /** Like a pulled cable: open connections carry nothing more, new ones are accepted but dead. */
  blackhole(): void {
    this.mode = 'blackhole';
    for (const s of this.conns) {
      s.unpipe();
      s.pause();
    }
  }

  /** Drops every connection and refuses new ones (ECONNREFUSED) until heal(). */
  cut(): void {
    if (this.mode !== 'cut') this.server.close();
    this.mode = 'cut';
    for (const s of this.conns) s.destroy();
    this.conns.clear();
  }

  async heal(): Promise<void> {
    const wasCut = this.mode === 'cut';
    this.mode = 'up';
    if (wasCut) await this.listen();
  }

  async close(): Promise<void> {
    const wasCut = this.mode === 'cut';
    this.mode = 'cut';
    for (const s of this.conns) s.destroy();
    this.conns.clear();
    if (!wasCut) await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** A store that holds pages [base, base+pages) of every listed pid, with pageData contents. */
export class SyntheticStore implements PageStore {
  lookups = 0;
  constructor(private pids: number[], private base: bigint, private pages: bigint, private maxRun = 1n << 40n) {}
  lookup(pid: number, vaddr: bigint, maxPages: bigint): StoredPages | undefined {
    this.lookups++;
    const end = this.base + this.pages * 4096n;
    if (!this.pids.includes(pid) || vaddr < this.base || vaddr >= end) return undefined;
    // Runs of maxRun pages force short replies at run ends.
    const runEnd = this.base + (((vaddr - this.base) / 4096n / this.maxRun) + 1n) * this.maxRun * 4096n;
    const limit = ((runEnd < end ? runEnd : end) - vaddr) / 4096n;
    const n = maxPages < limit ? maxPages : limit;
    return { pages: n, fill: (buf, off) => void pageData(pid, vaddr, n).copy(buf, off) };
  }
  get totalPages(): bigint {
    return this.pages * BigInt(this.pids.length);
  }
  close(): void {}
}

export interface TestCerts {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate signed by another CA. */
  rogueCert: string;
  rogueKey: string;
}

/** Generates a CA, server (SAN = the given IPs) and client certificates with openssl. */
export function makeCerts(dir: string, ips: string[] = ['127.0.0.1']): TestCerts {
  const run = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name: string): void => run('req', '-x509', ...ec, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${name}`);
  const leaf = (name: string, caName: string, ext: string): void => {
    run('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    writeFileSync(join(dir, `${name}.ext`), ext);
    run('x509', '-req', '-in', `${name}.csr`, '-CA', `${caName}.pem`, '-CAkey', `${caName}.key`, '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`);
  };
  ca('ca');
  ca('rogue-ca');
  leaf('server', 'ca', `subjectAltName=${ips.map((i) => `IP:${i}`).join(',')}\nextendedKeyUsage=serverAuth\n`);
  leaf('client', 'ca', 'extendedKeyUsage=clientAuth\n');
  leaf('rogue', 'rogue-ca', 'extendedKeyUsage=clientAuth\n');
  const p = (f: string): string => join(dir, f);
  return { ca: p('ca.pem'), serverCert: p('server.pem'), serverKey: p('server.key'), clientCert: p('client.pem'), clientKey: p('client.key'), rogueCert: p('rogue.pem'), rogueKey: p('rogue.key') };
}
