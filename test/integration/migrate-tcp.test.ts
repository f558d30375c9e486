// Post-copy migration of a server holding an established TCP connection
// (`migrate` with CRIU's --tcp-established) from one network namespace to
// another on this host. The server's address S exists in both namespaces
// (each link's namespace side has S/32); the test's namespace reaches S
// through the source's link until the restored tree runs, then through the
// destination's (the route is moved: the address moved). The client, here,
// keeps its connection: the line it sends while the server is frozen is
// dropped by the network lock in the SOURCE namespace and retransmitted to
// the destination; every byte queued at dump time arrives once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { migrate } from '../../plugin/pageserver/migrate.js';
import { FdType, ImageDir } from '../../plugin/images/index.js';
import { watchDestRunning } from '../helpers/migrate-dest.js';
import { leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { until } from '../helpers/proc.js';
import { killPid, startServer, type Server } from '../helpers/servers.js';
import { makeNetnsHost, movableAddress, netnsAvailable, type MovableAddress, type NetnsHost } from '../helpers/netns.js';
import { pyQueueingPeer } from '../helpers/tcp-peers.js';

const skip = !netnsAvailable() ? 'needs root and ip netns' : false;
const PY = '/usr/bin/python3';

// Listens on argv[1], accepts one connection, reads "hello\n", fills the
// connection's send queue without blocking (the client does not read),
// reports how much it queued, waits for SIGUSR1, then reads two lines (one
// sent before the dump: in the receive queue; one sent while the source
// was frozen: retransmitted to the destination) and answers for each.
const TCP_PEER = pyQueueingPeer('sys.argv[1]');

/** The restored server: the pid namespace's init itself or its one child. */
function restoredServer(initPid: number): number {
  if (readFileSync(`/proc/${initPid}/comm`, 'utf8').startsWith('python3')) return initPid;
  const kids = readdirSync(`/proc/${initPid}/task`).flatMap((t) => readFileSync(`/proc/${initPid}/task/${t}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
  if (kids.length !== 1) throw new Error(`expected one restored child of ${initPid}, found ${kids.join(',')}`);
  return kids[0]!;
}

function lockChain(ns: string | undefined, ino: number): string | undefined {
  const argv = ['nft', 'list', 'chain', 'inet', 'lazy_restore_lock', `c${ino}`];
  try {
    return execFileSync(ns ? 'ip' : argv[0]!, ns ? ['netns', 'exec', ns, ...argv] : argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return undefined;
  }
}

test('migrate --tcp-established: a client keeps its connection to a server moved to another network namespace, every byte once', { skip }, async () => {
  const fds = openFds();
  const dirs = tempDir('sockets-migrate-tcp-');
  let src: NetnsHost | undefined;
  let dst: NetnsHost | undefined;
  let addr: MovableAddress | undefined;
  let s: Server | undefined;
  let client: Socket | undefined;
  let init: number | undefined;
  try {
    src = makeNetnsHost();
    dst = makeNetnsHost();
    addr = movableAddress([src, dst], src);
    s = await startServer('/usr/bin/nsenter', [`--net=/run/netns/${src.ns}`, PY, '-u', '-c', TCP_PEER, addr.ip], /^port \d+$/m);
    const server = s;
    const port = Number(/^port (\d+)$/m.exec(s.log())![1]);
    const received: Buffer[] = [];
    let clientError: Error | undefined;
    let ended = false;
    client = connect({ port, host: addr.ip, localAddress: addr.client });
    client.on('error', (e) => { clientError = e; });
    client.on('data', (b: Buffer) => received.push(b));
    client.on('end', () => { ended = true; });
    await withTimeout(new Promise<void>((r) => client!.once('connect', () => r())), 5000, 'connect');
    client.pause();
    client.write('hello\n');
    await until(() => /^sent \d+$/m.test(server.log()), 10000, 'the server filled its send queue');
    const sent = Number(/^sent (\d+)$/m.exec(s.log())![1]);
    client.write('queued line\n');
    // The line is in the server's receive queue (ss in the source namespace).
    const recvQ = (): string => execFileSync('ip', ['netns', 'exec', src!.ns, 'ss', '-tnH', 'state', 'established'], { encoding: 'utf8' }).trim().split(/\s+/)[0] ?? '';
    await until(() => recvQ() === '12', 5000, () => `the line in the server's receive queue (Recv-Q ${recvQ()})`);
    const ino = readdirSync(`/proc/${s.pid}/fd`).map((fd) => /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${server.pid}/fd/${fd}`))).find((m) => m)?.[1];
    assert.ok(ino, "the server holds its connection");
    const inoN = Number(ino);

    const sourceDir = join(dirs.path, 'src');
    let lockedInSource: string | undefined;
    let lockedHere: string | undefined;
    const lines: string[] = [];
    const dest = watchDestRunning(lines);
    const c = client;
    const migrated = migrate({
      pid: s.pid, sourceDir, destDir: join(dirs.path, 'dst'), address: dst.hostIp, destNetns: dst.ns, insecure: true,
      sockets: { tcpEstablished: true },
      log: (l) => {
        lines.push(l);
        if (!/source dumped/.test(l)) return;
        // The tree is frozen, its connection in repair mode and locked.
        lockedInSource = lockChain(src!.ns, inoN);
        lockedHere = lockChain(undefined, inoN);
        // Sent while the server is frozen: must not be taken by the source.
        c.write('in the gap\n');
      },
      onDestLine: dest.onDestLine,
    });
    migrated.catch(() => undefined);
    init = await withTimeout(dest.running, 60_000, 'restored tree running');
    // The connection exists in the destination: S is reached there from now on.
    addr.moveTo(dst);
    const pid = restoredServer(init);
    assert.notEqual(pid, s.pid);
    assert.match(readlinkNet(pid), /^net:\[\d+\]$/);
    assert.equal(readlinkNet(pid), readlinkNet(`/run/netns/${dst.ns}`), 'the restored server lives in the destination namespace');
    process.kill(pid, 'SIGUSR1');
    client.resume();
    await until(() => ended || clientError !== undefined, 30000, () => `the server's answer (${received.reduce((n, b) => n + b.length, 0)} bytes so far)\n${lines.join('\n')}`);
    assert.equal(clientError, undefined);
    const all = Buffer.concat(received);
    const answer = 'got:queued line\ngot:in the gap\n';
    assert.equal(all.length, sent + answer.length, 'every queued byte arrived, none twice');
    for (let i = 0; i < sent; i++) {
      if (all[i] !== i % 251) assert.fail(`byte ${i} is ${all[i]}, expected ${i % 251}`);
    }
    assert.equal(all.subarray(sent).toString(), answer);
    const report = await withTimeout(migrated, 60_000, 'migration end');
    const isk = (await (await ImageDir.open(sourceDir)).files()).find((f) => f.type === FdType.INETSK)?.isk;
    assert.equal(isk?.state, 1, 'the connection was dumped ESTABLISHED');
    assert.equal(String(isk.ino), ino);
    assert.equal(report.pagesTransferred, report.pagesTotal);
    assert.match(lockedInSource ?? '', /drop/, 'the dump locked the connection in the source namespace');
    assert.equal(lockedHere, undefined, 'not in the dumper\'s namespace');
    assert.equal(await withTimeout(s.exited, 10_000, 'source killed'), 'SIGKILL');
  } finally {
    client?.destroy();
    if (init !== undefined) killPid(init);
    await s?.dispose();
    addr?.dispose();
    src?.dispose();
    dst?.dispose();
    dirs.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

function readlinkNet(pidOrPath: number | string): string {
  if (typeof pidOrPath === 'number') return execFileSync('readlink', [`/proc/${pidOrPath}/ns/net`], { encoding: 'utf8' }).trim();
  return `net:[${execFileSync('stat', ['-L', '-c', '%i', pidOrPath], { encoding: 'utf8' }).trim()}]`;
}
