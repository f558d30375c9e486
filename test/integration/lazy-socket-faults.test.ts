// Fault injection on the lazy-pages socket (issue 9 item 3): one daemon
// (LazyPagesServer listening on a CRIU-style socket) serves four real
// processes handed over by a well-behaved restorer (lazy-handover, pure
// on-demand so they fault for every page) while misbehaving peers
// (lazy-peer) connect to the same socket: a peer that stalls, short pids,
// hang-ups mid-message, a pid without SCM_RIGHTS, pipes/files/eventfds
// instead of a userfaultfd, two fds, a pid outside the peer's tree, a pid
// the images do not know, pid 0, another uid, and a bounded random-bytes
// fuzz. Each must end in one error naming its peer pid and an errno name,
// for that peer only (never an unrelated process killed, no fd left open in
// the daemon); the four served processes verify every byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { LazyPagesServer } from '../../plugin/lazy/server.js';
import type { LazyErrorEvent, SocketEvent } from '../../plugin/lazy/types.js';
import { helperPath } from '../../plugin/native/addon.js';
import { PE_LAZY, PE_PRESENT } from '../../plugin/images/index.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { pattern, startHandover } from '../helpers/lazy.js';
import { writeLazyImages } from '../helpers/lazy-images.js';
import { alive, until } from '../helpers/proc.js';

const PAGE = 4096;

interface Peer {
  child: ChildProcess;
  pid: number;
  lines: string[];
  stderr: string;
  /** pid printed by the "child" action. */
  kid(): number;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  line(re: RegExp, ms?: number): Promise<RegExpExecArray>;
}

async function startPeer(sock: string, actions: string[]): Promise<Peer> {
  const child = spawn(helperPath('lazy-peer'), [sock, ...actions], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  let stderr = '';
  let buf = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
    for (const w of waiters.splice(0)) w();
  });
  let closed = false;
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => {
    closed = true;
    for (const w of waiters.splice(0)) w();
    resolve({ code, signal });
  }));
  const line = (re: RegExp, ms = 10_000): Promise<RegExpExecArray> => withTimeout((async () => {
    for (;;) {
      for (const l of lines) {
        const m = re.exec(l);
        if (m) return m;
      }
      // 'close', not 'exit': its last lines may still be unread at 'exit'.
      if (closed) throw new Error(`lazy-peer ${actions.join(' ')} exited without ${re}: ${lines.join(' | ')} ${stderr}`);
      await new Promise<void>((r) => waiters.push(r));
    }
  })(), ms, `lazy-peer ${actions.join(' ')}: ${re}`);
  const pid = Number((await line(/^ready (\d+)$/))[1]);
  const peer: Peer = {
    child, pid, lines, exit, line,
    get stderr() {
      return stderr;
    },
    kid: () => Number(lines.find((l) => l.startsWith('child '))?.slice(6)),
  };
  return peer;
}

test('lazy-pages socket fault injection: every bad peer ends in its own clean error while four adopted processes are served byte-exact', { skip: !isRoot && 'needs root (userfaultfd, setuid)' }, async () => {
  const d = tempDir('lr-sock-faults-');
  chmodSync(d.path, 0o755);
  const before = openFds();
  const peers: Peer[] = [];
  const bystander = spawn('sleep', ['600'], { stdio: 'ignore' });
  let server: LazyPagesServer | undefined;
  try {
    const sock = join(d.path, 'lazy-pages.socket');
    const addr = 0x7e6100000000n;
    const seed = 0x0badc0de5eed1234n;
    const npages = 96;
    const good = await startHandover([sock, '--procs', '4', '--map', `0x${addr.toString(16)}:${npages}:0x${seed.toString(16)}`, '--verify', '--holes', '4'], 4);
    const entries: { vaddr: bigint; pages: number; flags: number; data: Buffer }[] = [];
    for (let p = 0; p < npages; p += 4) {
      const a = addr + BigInt(p * PAGE);
      entries.push({ vaddr: a, pages: 3, flags: PE_LAZY | PE_PRESENT, data: pattern(a, 3 * PAGE, seed) });
    }
    await writeLazyImages(d.path, good.pids.map((pid) => ({ pid, vmas: [{ start: addr, end: addr + BigInt(npages * PAGE) }], entries })));

    server = await LazyPagesServer.open({ imagesDir: d.path, socketPath: sock, prefetch: false });
    chmodSync(sock, 0o777);
    const errors: LazyErrorEvent[] = [];
    const sockEvents: SocketEvent[] = [];
    const errWaiters: (() => void)[] = [];
    server.on('error', (ev) => {
      errors.push(ev);
      for (const w of errWaiters.splice(0)) w();
    });
    server.on('socket', (ev) => {
      sockEvents.push(ev);
      for (const w of errWaiters.splice(0)) w();
    });
    const errorFor = (re: RegExp, ms = 10_000): Promise<LazyErrorEvent> => withTimeout((async () => {
      for (;;) {
        const e = errors.find((x) => re.test(x.message));
        if (e) return e;
        await new Promise<void>((r) => errWaiters.push(r));
      }
    })(), ms, `a daemon error matching ${re}; errors so far:\n${errors.map((e) => e.message).join('\n')}`);
    const peerRe = (p: Peer): string => `^lazy-pages socket: peer pid ${p.pid} \\(connection \\d+\\): `;

    // A peer that connects first and never says anything must not keep the restorer out.
    const staller = await startPeer(sock, []);
    peers.push(staller);

    // Before the restorer: a short pid, then a hang-up.
    const short = await startPeer(sock, ['bytes', '2a00', 'hangup']);
    peers.push(short);
    await errorFor(new RegExp(`${peerRe(short)}connection closed after 2 of the 4 bytes of a message \\(ECONNRESET\\): connection closed$`));

    good.go();

    // `hold`: the peer (and its child) stay alive until the error was seen, so
    // that the daemon can check the announced pid against the peer's tree.
    const cases: { actions: string[]; expect: (p: Peer) => RegExp; hold?: boolean; killed?: boolean; peerKilled?: boolean }[] = [
      // pid, then the 1-byte message without SCM_RIGHTS
      { actions: ['child', 'pid', 'child', 'fds', 'none'], hold: true, killed: true, expect: (p) => new RegExp(`${peerRe(p)}pid ${p.kid()} was announced without a userfaultfd \\(no SCM_RIGHTS\\) \\(EPROTO\\): connection closed; killed pid ${p.kid()} with SIGKILL$`) },
      // not a userfaultfd: a pipe, a regular file, an eventfd
      { actions: ['child', 'pid', 'child', 'fds', 'pipe'], hold: true, killed: true, expect: (p) => new RegExp(`${peerRe(p)}pid ${p.kid()} was handed over with pipe:\\[\\d+\\] instead of a userfaultfd \\(EINVAL\\); killed pid ${p.kid()} with SIGKILL$`) },
      { actions: ['child', 'pid', 'child', 'fds', 'file'], hold: true, killed: true, expect: (p) => new RegExp(`${peerRe(p)}pid ${p.kid()} was handed over with /\\S+/lazy-peer instead of a userfaultfd \\(EINVAL\\); killed pid ${p.kid()} with SIGKILL$`) },
      { actions: ['child', 'pid', 'child', 'fds', 'eventfd'], hold: true, killed: true, expect: (p) => new RegExp(`${peerRe(p)}pid ${p.kid()} was handed over with anon_inode:\\[eventfd\\] instead of a userfaultfd \\(EINVAL\\); killed pid ${p.kid()} with SIGKILL$`) },
      // two fds with one message
      { actions: ['child', 'pid', 'child', 'fds', 'uffd,pipe'], hold: true, killed: true, expect: (p) => new RegExp(`${peerRe(p)}pid ${p.kid()} was announced with 2 file descriptors instead of one userfaultfd \\(EPROTO\\): connection closed; killed pid ${p.kid()} with SIGKILL$`) },
      // a hang-up between a pid and its uffd
      { actions: ['child', 'pid', 'child', 'hangup'], hold: true, killed: true, expect: (p) => new RegExp(`${peerRe(p)}connection closed between pid ${p.kid()} and its userfaultfd \\(ECONNRESET\\): connection closed; killed pid ${p.kid()} with SIGKILL$`) },
      // a real uffd, announced for a process that is not the peer's (this test's own child)
      { actions: ['pid', String(bystander.pid), 'fds', 'uffd'], hold: true, expect: (p) => new RegExp(`${peerRe(p)}pid ${bystander.pid} is not a process of the peer's tree .*: hand-over refused, nothing killed \\(ESRCH\\)$`) },
      // a real uffd for a process of the peer that the images do not know: that process is killed
      { actions: ['pid', 'self', 'fds', 'uffd'], peerKilled: true, expect: (p) => new RegExp(`^pid ${p.pid}: cannot serve its memory: .*not in pstree.*; killed pid ${p.pid} with SIGKILL$`) },
      // pid 0
      { actions: ['bytes', '00000000'], expect: (p) => new RegExp(`${peerRe(p)}invalid pid 0 announced \\(EPROTO\\): connection closed$`) },
      // an fd riding on the bytes of a pid word
      { actions: ['bytes', '01', 'fds', 'pipe'], expect: (p) => new RegExp(`${peerRe(p)}file descriptors sent with a pid/command word .* \\(EPROTO\\): connection closed$`) },
    ];
    for (const c of cases) {
      const p = await startPeer(sock, c.hold ? [...c.actions, 'wait', 'hangup'] : c.actions);
      peers.push(p);
      if (c.actions.includes('child')) await p.line(/^child \d+$/);
      const ev = await errorFor(c.expect(p));
      assert.equal(ev.killed, c.killed === true || c.peerKilled === true, ev.message);
      if (c.hold) p.child.stdin!.write('go\n');
      if (c.peerKilled) assert.deepEqual(await withTimeout(p.exit, 10_000, 'peer killed'), { code: null, signal: 'SIGKILL' });
      else assert.deepEqual(await withTimeout(p.exit, 10_000, `peer ${c.actions.join(' ')} to end`), { code: 0, signal: null }, p.stderr);
      if (c.killed) {
        const kid = p.kid();
        await until(() => !alive(kid), 10_000, `the announced process ${kid} of the peer to be dead`);
      }
    }
    assert.equal(alive(bystander.pid!), true, 'a process outside the peer\'s tree is never killed');

    // Another uid (nobody) is refused at accept.
    const intruder = await startHandover([sock, '--setuid', '65534']);
    intruder.go();
    assert.deepEqual(await intruder.exit(), { code: 0, signal: null });
    // The listener closes the refused connection before it posts the event:
    // the intruder may be gone before the event reaches us.
    await until(() => sockEvents.some((e) => e.type === 'refused' && e.uid === 65534 && e.pid === intruder.pids[0]), 10_000, 'the refused event for the intruder');

    // Bounded random-bytes fuzz of the hand-over: 24 peers, 8 at a time.
    for (let batch = 0; batch < 3; batch++) {
      const fuzz = await Promise.all(Array.from({ length: 8 }, (_, i) => startPeer(sock, ['random', String(1000 + batch * 8 + i), String(8 + ((batch * 8 + i) * 13) % 57), 'hangup'])));
      peers.push(...fuzz);
      for (const f of fuzz) {
        const st = await withTimeout(f.exit, 10_000, 'fuzz peer exit');
        // The peer hangs up itself; the only way it dies is being killed as a process of its own tree it announced.
        assert.ok(st.code === 0 || st.signal === 'SIGKILL', `fuzz peer: ${JSON.stringify(st)} ${f.stderr}`);
      }
    }

    // The restorer's four processes verified every byte while all of that went on.
    assert.deepEqual(await good.exit(30_000), { code: 0, signal: null }, good.stderr);
    assert.equal(good.stdout.filter((l) => l.startsWith('verified')).length, 4);
    const idle = await withTimeout(server.whenIdle(), 20_000, 'daemon idle (stalled peer still connected)');
    assert.equal(idle.complete + idle.exited, 4, JSON.stringify(idle, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)));
    for (const p of server.processes()) assert.ok(good.pids.includes(p.imagePid) && p.state !== 'killed', `only the restorer's processes were adopted: ${p.imagePid} ${p.state}`);
    // Every error names a peer (or the process the images could not serve) and an errno name.
    for (const e of errors) assert.match(e.message, /^(lazy-pages socket: peer pid \d+ \(connection \d+\): .*\((E[A-Z]+)\)|pid \d+: cannot serve its memory: .*)/, e.message);
    assert.equal(alive(staller.pid), true, 'the stalled peer is still waiting');
    await server.close();
    server = undefined;
    assert.deepEqual(await withTimeout(staller.exit, 10_000, 'stalled peer sees EOF at close'), { code: 0, signal: null });
    assert.ok(staller.lines.includes('eof'));
  } finally {
    await server?.close();
    for (const p of peers) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await Promise.all(peers.map((p) => p.exit));
    bystander.kill('SIGKILL');
    await once(bystander, 'exit').catch(() => undefined);
    d.dispose();
  }
  assert.deepEqual(leakedFds(before), []);
});

test('lazy-pages socket: a crowd of idle connections is capped; past the cap the oldest silent ones are dropped with an error, and the restorer still gets in', { skip: !isRoot && 'needs root (userfaultfd)' }, async () => {
  const net = await import('node:net');
  const d = tempDir('lr-sock-crowd-');
  const before = openFds();
  const socks: import('node:net').Socket[] = [];
  let server: LazyPagesServer | undefined;
  let h: Awaited<ReturnType<typeof startHandover>> | undefined;
  try {
    const sock = join(d.path, 'lazy-pages.socket');
    const addr = 0x7e6200000000n;
    const seed = 0x77n;
    h = await startHandover([sock, '--map', `0x${addr.toString(16)}:16:0x${seed.toString(16)}`, '--verify']);
    const hh = h;
    await writeLazyImages(d.path, [{ pid: hh.pids[0]!, vmas: [{ start: addr, end: addr + 16n * BigInt(PAGE) }], entries: [{ vaddr: addr, pages: 16, flags: PE_LAZY | PE_PRESENT, data: pattern(addr, 16 * PAGE, seed) }] }]);
    server = await LazyPagesServer.open({ imagesDir: d.path, socketPath: sock, prefetch: false });
    const errors: string[] = [];
    const waiters: (() => void)[] = [];
    server.on('error', (e) => {
      errors.push(e.message);
      for (const w of waiters.splice(0)) w();
    });
    const closed: Promise<unknown>[] = [];
    for (let i = 0; i < 70; i++) {
      // A non-blocking unix connect fails with EAGAIN while the listen
      // backlog is full (the listener thread not scheduled yet): try again.
      for (let attempt = 0; ; attempt++) {
        const s = net.connect(sock);
        s.on('error', () => {});
        closed.push(once(s, 'close'));
        socks.push(s);
        try {
          await withTimeout(once(s, 'connect'), 5000, 'connect');
          break;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EAGAIN' || attempt >= 50) throw new Error(`connection ${i}: ${(e as Error).message}`);
          await new Promise((r) => setTimeout(r, 10));
        }
      }
    }
    const refused = (): number => errors.filter((m) => /too many connections at once \(64\): the oldest one that never sent anything is dropped \(EMFILE\)/.test(m)).length;
    await withTimeout((async () => {
      while (refused() < 6) await new Promise<void>((r) => waiters.push(r));
    })(), 10_000, `6 refusals; errors: ${errors.join(' | ')}`);
    assert.equal(refused(), 6);
    // The restorer comes while the crowd is still there: a silent one gives way.
    hh.go();
    assert.deepEqual(await hh.exit(), { code: 0, signal: null }, `${hh.stderr}; daemon errors: ${errors.join(' | ')}`);
    assert.ok(hh.stdout.some((l) => l.startsWith('verified')));
    assert.equal(errors.length, 7, errors.join('\n'));
    for (const s of socks) s.destroy();
    await withTimeout(Promise.all(closed), 5000, 'crowd closed');
    await server.close();
    server = undefined;
  } finally {
    for (const s of socks) s.destroy();
    await server?.close();
    if (h && h.child.exitCode === null && h.child.signalCode === null) {
      h.child.kill('SIGKILL');
      await h.exit().catch(() => undefined);
    }
    d.dispose();
  }
  assert.deepEqual(leakedFds(before), []);
});
