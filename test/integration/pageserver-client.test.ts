// PageServerClient against our PageServer over loopback: pipelining, short
// replies, urgent-before-background, reconnect after a cut or a silent
// stall, give-up after the timeout, CLOSE, and mutual TLS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { PageServer } from '../../plugin/pageserver/server.js';
import { PageServerClient, PageServerUnavailableError } from '../../plugin/pageserver/client.js';
import { loadTls } from '../../plugin/pageserver/transport.js';
import { getHeader } from '../../plugin/pageserver/protocol.js';
import { UserError } from '../../plugin/errors.js';
import { leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { CuttableProxy, SyntheticStore, makeCerts, pageData } from '../helpers/pageserver.js';

const BASE = 0x7f1200000000n;
const PIDS = [101, 202];

async function lazyServer(store: SyntheticStore, extra: Partial<Parameters<typeof PageServer.start>[0]> = {}): Promise<PageServer> {
  const d = tempDir();
  const ps = await PageServer.start({ imagesDir: d.path, address: '127.0.0.1', port: 0, lazy: true, store, ...extra });
  void ps.done.catch(() => undefined).finally(() => d.dispose());
  return ps;
}

const at = (page: number): bigint => BASE + BigInt(page) * 4096n;

test('pipelined fetches of two pids are byte-exact; CLOSE ends the server session', async () => {
  const fds = openFds();
  const store = new SyntheticStore(PIDS, BASE, 4096n);
  const ps = await lazyServer(store);
  const c = await PageServerClient.connect({ address: '127.0.0.1', port: ps.port });
  const jobs = [];
  for (let i = 0; i < 200; i++) {
    const pid = PIDS[i % 2]!;
    const page = (i * 37) % 4000;
    const n = 1 + (i % 7);
    jobs.push(c.fetch(pid, at(page), n, { urgent: i % 3 === 0 }).then((b) => assert.ok(b.equals(pageData(pid, at(page), n)), `fetch ${i}`)));
  }
  await withTimeout(Promise.all(jobs), 10_000, 'fetches');
  // A large background fetch is split into several GETs.
  const big = await withTimeout(c.fetch(101, BASE, 3000), 10_000, 'big fetch');
  assert.ok(big.equals(pageData(101, BASE, 3000)));
  await withTimeout(c.close(), 5000, 'close');
  const stats = await withTimeout(ps.done, 5000, 'server done');
  assert.equal(stats.sessions, 1);
  assert.equal(stats.connections, 2, 'one urgent and one background connection');
  assert.ok(c.stats.gets >= 203);
  assert.deepEqual(leakedFds(fds), []);
});

test('short replies are accepted and the rest is re-requested', async () => {
  const store = new SyntheticStore([7], BASE, 256n, 3n); // runs of 3 pages
  const ps = await lazyServer(store);
  const c = await PageServerClient.connect({ address: '127.0.0.1', port: ps.port });
  const [a, b] = await withTimeout(Promise.all([c.fetch(7, at(1), 20, { urgent: true }), c.fetch(7, at(100), 50)]), 5000, 'fetches');
  assert.ok(a.equals(pageData(7, at(1), 20)));
  assert.ok(b.equals(pageData(7, at(100), 50)));
  assert.ok(c.stats.shortReplies >= 6 + 16, `short replies: ${c.stats.shortReplies}`);
  await c.close();
  await ps.done;
});

for (const singleConnection of [false, true]) {
  test(`urgent fetches are not queued behind background transfer (${singleConnection ? 'one connection, strict priority' : 'two connections'})`, async () => {
    const store = new SyntheticStore([9], BASE, 16384n);
    const ps = await lazyServer(store);
    const c = await PageServerClient.connect({ address: '127.0.0.1', port: ps.port, singleConnection });
    const order: string[] = [];
    const bg = c.fetch(9, BASE, 16384).then((b) => {
      order.push('background');
      assert.ok(b.subarray(0, 4096).equals(pageData(9, BASE, 1)));
    });
    const urgent = c.fetch(9, at(16000), 1, { urgent: true }).then((b) => {
      order.push('urgent');
      assert.ok(b.equals(pageData(9, at(16000), 1)));
    });
    // The mechanism, right when both were asked (GETs go out synchronously):
    const inflight = c.inflight;
    if (singleConnection) {
      // one lane: at most one (small) background GET ahead of the urgent one,
      // the rest of the background transfer waits behind it; replies come in
      // order on one stream, so the urgent one completes first.
      assert.equal(inflight.urgent, 2, 'one background GET, then the urgent GET');
      assert.equal(inflight.background, 0);
    } else {
      // the urgent GET alone on its own connection, the background ones on theirs.
      assert.equal(inflight.urgent, 1, 'only the urgent GET on the urgent connection');
      assert.ok(inflight.background >= 1, 'background GETs on the other connection');
    }
    await withTimeout(Promise.all([bg, urgent]), 20_000, 'fetches');
    if (singleConnection) assert.deepEqual(order, ['urgent', 'background']);
    await c.close();
    assert.equal((await ps.done).connections, singleConnection ? 1 : 2);
  });
}

test('a cut connection is re-established; waiting fetches are re-sent and served', async () => {
  const store = new SyntheticStore([5], BASE, 8192n);
  const ps = await lazyServer(store);
  const proxy = await CuttableProxy.start(ps.port);
  const c = await PageServerClient.connect({ address: '127.0.0.1', port: proxy.port, timeoutMs: 20_000 });
  try {
    assert.ok((await c.fetch(5, BASE, 1, { urgent: true })).equals(pageData(5, BASE, 1)));
    const bg = c.fetch(5, BASE, 8192);
    proxy.cut();
    await withTimeout(once(c, 'disconnect'), 5000, 'client notices the cut');
    // While the link is down fetches wait; they are not failed.
    let urgentDone = false;
    const urgent = c.fetch(5, at(4242), 2, { urgent: true }).then((b) => {
      urgentDone = true;
      return b;
    });
    await withTimeout(once(c, 'retry'), 5000, 'a refused reconnect attempt');
    await withTimeout(once(c, 'retry'), 5000, 'another refused reconnect attempt');
    assert.equal(urgentDone, false);
    await proxy.heal();
    const [big, small] = await withTimeout(Promise.all([bg, urgent]), 10_000, 'fetches after heal');
    assert.ok(big.equals(pageData(5, BASE, 8192)));
    assert.ok(small.equals(pageData(5, at(4242), 2)));
    assert.ok(c.stats.reconnects >= 1);
    await c.close();
    await withTimeout(ps.done, 5000, 'server done');
  } finally {
    c.destroy();
    await proxy.close();
  }
});

test('a silently dead link (no FIN, no data) is detected by the stall timer and recovered', async () => {
  const store = new SyntheticStore([5], BASE, 64n);
  const ps = await lazyServer(store);
  const proxy = await CuttableProxy.start(ps.port);
  const c = await PageServerClient.connect({ address: '127.0.0.1', port: proxy.port, stallTimeoutMs: 300, timeoutMs: 20_000 });
  try {
    proxy.blackhole();
    const f = c.fetch(5, at(3), 4, { urgent: true });
    await withTimeout(once(c, 'disconnect'), 5000, 'stall detected');
    await proxy.heal();
    assert.ok((await withTimeout(f, 10_000, 'fetch after heal')).equals(pageData(5, at(3), 4)));
    await c.close();
    await withTimeout(ps.done, 5000, 'server done');
  } finally {
    c.destroy();
    await proxy.close();
  }
});

test('after the timeout, pending fetches fail with a clear error (never zeros)', async () => {
  const store = new SyntheticStore([5], BASE, 64n);
  const ps = await lazyServer(store, { reconnectTimeoutMs: 500 });
  const proxy = await CuttableProxy.start(ps.port);
  const c = await PageServerClient.connect({ address: '127.0.0.1', port: proxy.port, timeoutMs: 600 });
  const errors: Error[] = [];
  c.on('error', (e: Error) => errors.push(e));
  try {
    proxy.cut();
    const f = c.fetch(5, at(1), 1, { urgent: true });
    await assert.rejects(withTimeout(f, 10_000, 'fetch failure'), (e: unknown) =>
      e instanceof PageServerUnavailableError && e.exitCode === 3 && /page server 127\.0\.0\.1:\d+ unreachable for 600 ms.*ECONNRE(SET|FUSED)/.test(e.message));
    assert.equal(errors.length, 1);
    await assert.rejects(c.fetch(5, at(1), 1), PageServerUnavailableError);
    // The server side gives up too: the client never came back.
    await assert.rejects(withTimeout(ps.done, 5000, 'server gives up'), /did not reconnect within 500 ms/);
  } finally {
    c.destroy();
    await proxy.close();
  }
});

test('mutual TLS: a client with a certificate from our CA is served; others are refused', async () => {
  const d = tempDir();
  try {
    const certs = makeCerts(d.path);
    const serverTls = loadTls({ cacert: certs.ca, cert: certs.serverCert, key: certs.serverKey });
    const store = new SyntheticStore([5], BASE, 64n);
    const ps = await lazyServer(store, { tls: serverTls });
    const refused: string[] = [];
    ps.on('refused', (peer: string) => refused.push(peer));

    // A client whose certificate another CA signed.
    const rogue = PageServerClient.connect({ address: '127.0.0.1', port: ps.port, timeoutMs: 3000, tls: loadTls({ cacert: certs.ca, cert: certs.rogueCert, key: certs.rogueKey }) })
      .then((cl) => cl.fetch(5, BASE, 1, { urgent: true }).finally(() => cl.destroy()));
    await assert.rejects(withTimeout(rogue, 10_000, 'rogue client'), (e: unknown) => e instanceof UserError && /TLS/.test(e.message));
    // A plain-TCP client gets nothing back.
    const raw = net.connect({ host: '127.0.0.1', port: ps.port });
    raw.on('error', () => undefined);
    raw.write(getHeader(5, BASE, 1n));
    const got: Buffer[] = [];
    raw.on('data', (b: Buffer) => got.push(b));
    await withTimeout(once(raw, 'close'), 5000, 'plain client dropped');
    assert.ok(!Buffer.concat(got).includes(pageData(5, BASE, 1).subarray(0, 64)), 'no page data to a plain client');
    assert.ok(refused.length >= 2, `refused: ${refused.length}`);

    const c = await PageServerClient.connect({ address: '127.0.0.1', port: ps.port, tls: loadTls({ cacert: certs.ca, cert: certs.clientCert, key: certs.clientKey }) });
    assert.ok((await c.fetch(5, at(2), 3, { urgent: true })).equals(pageData(5, at(2), 3)));
    assert.ok((await c.fetch(5, at(10), 30)).equals(pageData(5, at(10), 30)));
    await c.close();
    assert.equal((await withTimeout(ps.done, 5000, 'server done')).gets, 2);
    assert.match(readFileSync(certs.serverCert, 'utf8'), /BEGIN CERTIFICATE/);
  } finally {
    d.dispose();
  }
});
