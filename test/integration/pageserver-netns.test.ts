// Page server on a "remote host" (its own network namespace, joined by a
// veth pair), client in the test's namespace, mutual TLS across the link.
// A link cut of a few seconds is survived byte-exact; a longer one fails
// both ends with clear errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import { ImageDir } from '../../plugin/images/index.js';
import { PE_LAZY, PE_PRESENT } from '../../plugin/pageserver/protocol.js';
import { PageServerClient, PageServerUnavailableError } from '../../plugin/pageserver/client.js';
import { loadTls } from '../../plugin/pageserver/transport.js';
import { tempDir, withTimeout } from '../helpers/env.js';
import { cliPath } from '../helpers/cli.js';
import { makeCerts, pageData } from '../helpers/pageserver.js';
import { makeNetnsHost, netnsAvailable, type NetnsHost } from '../helpers/netns.js';

const BASE = 0x7f5500000000n;
const PAGES = 2048; // 8 MiB per process
const PIDS = [3001, 3002];

async function writeImages(dir: string): Promise<void> {
  const img = await ImageDir.open(dir);
  for (const [i, pid] of PIDS.entries()) {
    const w = await img.pagemapWriter(pid, i + 1);
    // Two runs with a hole between them, like a real anonymous VMA.
    await w.add(BASE, PAGES / 2, PE_LAZY | PE_PRESENT, pageData(pid, BASE, PAGES / 2));
    const second = BASE + BigInt(PAGES / 2 + 16) * 4096n;
    await w.add(second, PAGES / 2, PE_LAZY | PE_PRESENT, pageData(pid, second, PAGES / 2));
    await w.close();
  }
}

interface Served {
  child: ChildProcess;
  port: number;
  out: () => string;
  err: () => string;
}

async function startServer(host: NetnsHost, dir: string, certs: ReturnType<typeof makeCerts>, reconnectTimeout: number, extra: string[] = []): Promise<Served> {
  const child = host.spawn(process.execPath, [cliPath, 'page-server', '-D', dir, '--lazy-pages', '--address', host.nsIp, '--port', '0',
    '--tls', '--tls-cacert', certs.ca, '--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--reconnect-timeout', String(reconnectTimeout), ...extra],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (c: string) => (err += c));
  const port = await withTimeout(new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (c: string) => {
      out += c;
      const m = /listening on [\d.]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`page-server exited ${code}: ${err}`)));
  }), 15_000, 'page-server in the namespace');
  return { child, port, out: () => out, err: () => err };
}

const skip = !netnsAvailable() && 'needs root and ip netns';

test('migration link: TLS across namespaces, a few seconds of cut survived byte-exact', { skip }, async () => {
  const d = tempDir();
  const host = makeNetnsHost();
  let server: Served | undefined;
  try {
    await writeImages(d.path);
    const certs = makeCerts(d.path, [host.nsIp]);
    server = await startServer(host, d.path, certs, 30);
    const client = await PageServerClient.connect({
      address: host.nsIp, port: server.port, timeoutMs: 20_000, stallTimeoutMs: 400, maxGetPages: 64,
      tls: loadTls({ cacert: certs.ca, cert: certs.clientCert, key: certs.clientKey }),
    });
    try {
      // Background transfer of everything, then the cable is pulled.
      const bg = PIDS.flatMap((pid) => [
        client.fetch(pid, BASE, PAGES / 2),
        client.fetch(pid, BASE + BigInt(PAGES / 2 + 16) * 4096n, PAGES / 2),
      ]);
      await withTimeout(once(client, 'reply'), 10_000, 'first reply');
      host.cut();
      // A fault during the cut waits; it is neither failed nor served with zeros.
      let faultDone = false;
      const fault = client.fetch(3002, BASE + 100n * 4096n, 1, { urgent: true }).then((b) => {
        faultDone = true;
        return b;
      });
      await withTimeout(once(client, 'disconnect'), 10_000, 'client notices the dead link');
      // Keep the cable out for a few seconds, paced by the client's own
      // (failing) reconnect attempts.
      const cutAt = Date.now();
      let retries = 0;
      while (Date.now() - cutAt < 2500) {
        await withTimeout(once(client, 'retry'), 10_000, 'reconnect attempt during the cut');
        retries++;
      }
      assert.ok(retries >= 2);
      assert.equal(faultDone, false);
      host.heal();
      const page = await withTimeout(fault, 20_000, 'fault served after the cut');
      assert.ok(page.equals(pageData(3002, BASE + 100n * 4096n, 1)));
      const results = await withTimeout(Promise.all(bg), 20_000, 'background transfer after the cut');
      for (const [i, pid] of PIDS.entries()) {
        assert.ok(results[2 * i]!.equals(pageData(pid, BASE, PAGES / 2)), `pid ${pid} first run`);
        const second = BASE + BigInt(PAGES / 2 + 16) * 4096n;
        assert.ok(results[2 * i + 1]!.equals(pageData(pid, second, PAGES / 2)), `pid ${pid} second run`);
      }
      assert.ok(client.stats.reconnects >= 1);
      await withTimeout(client.close(), 10_000, 'CLOSE');
    } finally {
      client.destroy();
    }
    const [code] = (await withTimeout(once(server.child, 'exit'), 10_000, 'page-server exit')) as [number];
    assert.equal(code, 0, server.err());
    assert.match(server.out(), /served \d+ pages/);
  } finally {
    if (server && server.child.exitCode === null) server.child.kill('SIGKILL');
    host.dispose();
    d.dispose();
  }
});

test('migration link: a long cut fails the client with a clear error and the server gives up', { skip }, async () => {
  const d = tempDir();
  const host = makeNetnsHost();
  let server: Served | undefined;
  try {
    await writeImages(d.path);
    const certs = makeCerts(d.path, [host.nsIp]);
    server = await startServer(host, d.path, certs, 2, ['--idle-timeout', '3']);
    const client = await PageServerClient.connect({
      address: host.nsIp, port: server.port, timeoutMs: 1500, stallTimeoutMs: 300,
      tls: loadTls({ cacert: certs.ca, cert: certs.clientCert, key: certs.clientKey }),
    });
    try {
      assert.ok((await client.fetch(3001, BASE, 1, { urgent: true })).equals(pageData(3001, BASE, 1)));
      host.cut();
      await assert.rejects(withTimeout(client.fetch(3001, BASE + 4096n, 1, { urgent: true }), 15_000, 'fetch during a long cut'),
        (e: unknown) => e instanceof PageServerUnavailableError && new RegExp(`page server ${host.nsIp.replace(/\./g, '\\.')}:\\d+ unreachable for 1500 ms`).test(e.message));
    } finally {
      client.destroy();
    }
    const [code] = (await withTimeout(once(server.child, 'exit'), 15_000, 'page-server gives up')) as [number];
    assert.equal(code, 1);
    // Behind a dead link the server hears nothing: --idle-timeout ends it.
    assert.match(server.err(), /lazy-restore: page-server: nothing received from the client for 3000 ms/);
  } finally {
    if (server && server.child.exitCode === null) server.child.kill('SIGKILL');
    host.dispose();
    d.dispose();
  }
});
