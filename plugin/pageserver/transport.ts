// TCP / TLS plumbing shared by the page server and its clients: the
// loopback-only policy for plain TCP, loading of certificate files, and
// listen/connect helpers that turn socket errors into UserErrors naming the
// address and errno code.
import { readFileSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import tls from 'node:tls';
import { Errno, UserError, sysError } from '../errors.js';

/** Certificate material for mutual TLS (PEM contents). */
export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** Paths to PEM files, as given on the command line (CRIU's defaults otherwise). */
export interface TlsPaths {
  cacert?: string;
  cert?: string;
  key?: string;
}

export const DEFAULT_TLS_PATHS = {
  cacert: '/etc/pki/CA/cacert.pem',
  cert: '/etc/pki/criu/cert.pem',
  key: '/etc/pki/criu/private/key.pem',
} as const;

export function loadTls(paths: TlsPaths): TlsMaterial {
  const read = (what: string, p: string): Buffer => {
    try {
      return readFileSync(p);
    } catch (e) {
      throw new UserError(`TLS ${what} ${p}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
  };
  return {
    ca: read('CA certificate', paths.cacert ?? DEFAULT_TLS_PATHS.cacert),
    cert: read('certificate', paths.cert ?? DEFAULT_TLS_PATHS.cert),
    key: read('key', paths.key ?? DEFAULT_TLS_PATHS.key),
  };
}

export function isLoopback(ip: string): boolean {
  if (net.isIPv4(ip)) return ip.startsWith('127.');
  if (net.isIPv6(ip)) {
    const v = ip.toLowerCase();
    return v === '::1' || v.startsWith('::ffff:127.');
  }
  return false;
}

/** Resolves a host name to one IP address (numeric addresses pass through). */
export async function resolveAddress(address: string): Promise<string> {
  if (net.isIP(address)) return address;
  try {
    return (await lookup(address)).address;
  } catch (e) {
    throw new UserError(`address ${address}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}

/**
 * Plain TCP carries process memory unencrypted and unauthenticated, so it is
 * only allowed on loopback unless the caller says --insecure.
 */
export function checkAddressPolicy(ip: string, original: string, opts: { tls: boolean; insecure: boolean }): void {
  if (opts.tls || opts.insecure || isLoopback(ip)) return;
  throw new UserError(
    `address ${original}${original !== ip ? ` (${ip})` : ''} is not a loopback address: plain TCP would expose process memory; use --tls or pass --insecure`,
  );
}

export function systemMessage(e: unknown): string {
  if (e === undefined || e === null) return 'unknown error';
  const err = e as NodeJS.ErrnoException;
  return err.code ? `${err.syscall ? `${err.syscall}: ` : ''}${err.code}` : err instanceof Error ? err.message : String(e);
}

export type AnySocket = net.Socket | tls.TLSSocket;

export interface ConnectOptions {
  address: string;
  port: number;
  tls?: TlsMaterial;
  /** Check the server certificate's name against `address` (default true). */
  verifyName?: boolean;
  timeoutMs?: number;
}

/** Connects (and completes the TLS handshake); resolves with a ready socket. */
export function connectSocket(opts: ConnectOptions): Promise<AnySocket> {
  return new Promise((resolve, reject) => {
    let sock: AnySocket;
    const fail = (e: unknown): void => {
      clearTimeout(timer);
      sock.destroy();
      reject(e);
    };
    const timer = setTimeout(() => fail(sysError(Errno.ETIMEDOUT, 'connect', undefined, `connect to ${opts.address}:${opts.port} timed out`)), opts.timeoutMs ?? 10_000);
    const ok = (): void => {
      clearTimeout(timer);
      sock.removeListener('error', fail);
      sock.setNoDelay(true);
      resolve(sock);
    };
    if (opts.tls) {
      const t = opts.tls;
      sock = tls.connect({
        host: opts.address,
        port: opts.port,
        ca: t.ca,
        cert: t.cert,
        key: t.key,
        minVersion: 'TLSv1.2',
        ...(net.isIP(opts.address) ? {} : { servername: opts.address }),
        ...(opts.verifyName === false ? { checkServerIdentity: () => undefined } : {}),
      }, ok);
    } else {
      sock = net.connect({ host: opts.address, port: opts.port }, ok);
    }
    sock.once('error', fail);
  });
}

/**
 * The file descriptor behind a plain TCP socket, for handing the connection
 * to native code (which duplicates it). Node does not document `_handle.fd`,
 * so this checks what it gets and returns undefined when there is none (TLS
 * sockets, Windows, a destroyed socket): callers then keep the JS path.
 */
export function socketFd(sock: AnySocket): number | undefined {
  if (sock instanceof tls.TLSSocket) return undefined;
  const handle = (sock as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}
