// CRIU's RPC (criu swrk FD), driven the way runc drives it: a
// SOCK_SEQPACKET socketpair, our CLI started as `swrk 3` with the other end
// as fd 3, criu_req records encoded with protobufjs (proto/rpc.proto), the
// images dir passed as an fd of this process (reached through /proc), and
// every NOTIFY answered. Real workloads are dumped and restored; bad
// requests get CRIU's error shape and never leave a tree frozen or killed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import { addon } from '../../plugin/native/addon.js';
import { type CriuOpts, type CriuReq, type CriuResp, ReqType, decodeResp, encodeReq } from '../../plugin/rpc/messages.js';
import { cliPath, lrCriuPath } from '../helpers/cli.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { alive, statOf, until } from '../helpers/proc.js';
import { startServer } from '../helpers/servers.js';
import { killRestoredWorkloads, reapChild, verdictOk } from '../helpers/restored.js';
import { startWorkload, waitInSigsuspend, type Workload } from '../helpers/workload.js';
import { critCheckDir } from '../helpers/critcheck.js';
import { pyAcceptOne } from '../helpers/tcp-peers.js';

const skip = isRoot ? false : 'needs root';
const EBADRQC = 56;

/** One `swrk 3` process and our end of its socket. */
interface Swrk {
  child: ChildProcess;
  fd: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  send(req: CriuReq | (Omit<CriuReq, 'opts'> & { opts?: Partial<CriuOpts> })): void;
  sendRaw(buf: Buffer): void;
  recv(ms?: number): Promise<CriuResp>;
  /** Receives NOTIFYs, answering each (with the verdict `answer` gives), until a non-NOTIFY response. */
  untilResponse(answer?: (script: string) => boolean, ms?: number): Promise<{ resp: CriuResp; scripts: { script: string; pid?: number }[] }>;
  close(): void;
}

/** `swrk 3` of the CLI, or of lr-criu (the native front runc gets: VERSION answered without node). */
function startSwrk(via: 'cli' | 'lr-criu' = 'cli', env: NodeJS.ProcessEnv = process.env): Swrk {
  const [ours, theirs] = addon.seqpacketPair();
  const child = via === 'cli'
    ? spawn(process.execPath, [cliPath, 'swrk', '3'], { stdio: ['ignore', 'ignore', 'pipe', theirs], env })
    : spawn(lrCriuPath, ['swrk', '3'], { stdio: ['ignore', 'ignore', 'pipe', theirs], env });
  addon.restoreCloseFd(theirs);
  let err = '';
  child.stderr!.on('data', (c: Buffer) => { err += c.toString(); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stderr: err }));
  });
  let closed = false;
  const s: Swrk = {
    child, fd: ours, exited,
    send: (req) => addon.seqpacketSend(ours, encodeReq(req)),
    sendRaw: (buf) => addon.seqpacketSend(ours, buf),
    recv: async (ms = 60_000) => {
      const buf = await addon.seqpacketRecv(ours, ms);
      if (buf === null) throw new Error(`swrk closed the connection: ${err}`);
      return decodeResp(buf);
    },
    untilResponse: async (answer = () => true, ms = 60_000) => {
      const scripts: { script: string; pid?: number }[] = [];
      for (;;) {
        const resp = await s.recv(ms);
        if (resp.type !== ReqType.NOTIFY) return { resp, scripts };
        const script = resp.notify?.script ?? '';
        scripts.push({ script, ...(resp.notify?.pid !== undefined ? { pid: resp.notify.pid } : {}) });
        s.send({ type: ReqType.NOTIFY, notify_success: answer(script) });
      }
    },
    close: () => {
      if (closed) return;
      closed = true;
      addon.restoreCloseFd(ours);
    },
  };
  return s;
}

/** Closes our end and waits (bounded) for swrk to exit. */
async function finish(s: Swrk): Promise<{ code: number | null; stderr: string }> {
  s.close();
  return withTimeout(s.exited, 30_000, 'swrk exit');
}

/** Runs `body` with a fresh `swrk 3`; our end of its socket is closed afterwards whatever happened. */
async function withSwrk<T>(body: (s: Swrk) => Promise<T>): Promise<T> {
  const s = startSwrk();
  try {
    return await body(s);
  } finally {
    s.close();
  }
}

/** The state letter of a live process ('t' = stopped by a tracer), or undefined when gone. */
function stateOf(pid: number): string | undefined {
  return statOf(pid)?.state;
}

function tracerOf(pid: number): number {
  const m = /TracerPid:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? -1);
}

/**
 * The workload runs on: untraced, back in its sigsuspend (S). Just after a
 * resume it may still be running (R) on its way back there: waited for,
 * bounded; a stopped or gone workload fails.
 */
async function assertRunningUntouched(wl: Workload, what: string): Promise<void> {
  await waitInSigsuspend(wl.pid, 10_000).catch((e: Error) => assert.fail(`${what}: ${e.message}`));
  assert.equal(stateOf(wl.pid), 'S', `${what}: the workload is neither stopped nor gone`);
  assert.equal(tracerOf(wl.pid), 0, `${what}: nothing traces the workload`);
}

/** What an RPC test with a workload works with: image dirs passed to swrk as fds of this process. */
interface RpcCase {
  wl: Workload;
  /** The test's temp dir. */
  dir: string;
  /** Directory name (under dir) -> an O_RDONLY fd of it. */
  fds: Record<string, number>;
  /** A root restored by a request; killed at the end unless it was reaped. */
  restored?: number;
}

/**
 * A test with workload-mem (`pages` pages) running and the directories
 * `dirs` made under a temp dir and opened; afterwards the fds are closed,
 * whatever still runs the workload is killed by pid, and no fd may leak.
 */
function rpcWorkloadTest(name: string, pages: number, dirs: string[], body: (c: RpcCase) => Promise<void>): void {
  test(name, { skip }, async () => {
    const before = openFds();
    const t = tempDir('lr-rpc-');
    for (const d of dirs) if (d !== '.') mkdirSync(join(t.path, d));
    const wl = await startWorkload('workload-mem', [String(pages)]);
    const c: RpcCase = { wl, dir: t.path, fds: {} };
    try {
      for (const d of dirs) c.fds[d] = openSync(join(t.path, d), 'r');
      await body(c);
    } finally {
      for (const fd of Object.values(c.fds)) closeSync(fd);
      killRestoredWorkloads([c.restored]);
      await wl.dispose();
      t.dispose();
    }
    assert.deepEqual(leakedFds(before), []);
  });
}

/** The root a RESTORE with rst_sibling made (our child): it verifies its memory and exits 0, reaped here. */
async function siblingVerdict(c: RpcCase, what?: string): Promise<void> {
  const pid = c.restored!;
  const exit = reapChild(pid);
  await verdictOk(c.wl, pid, what);
  assert.deepEqual(await withTimeout(exit, 20_000, 'restored root exit'), { code: 0, signal: 0 });
  c.restored = undefined;
}

test('VERSION answers as CRIU 4.2; FEATURE_CHECK and keep_open on one connection; CHECK', { skip }, async () => {
  const fds = openFds();
  await withSwrk(async (s) => {
    s.send({ type: ReqType.VERSION, keep_open: true });
    const v = await s.recv();
    assert.equal(v.type, ReqType.VERSION);
    assert.equal(v.success, true);
    assert.equal(v.version?.major_number, 4);
    assert.equal(v.version?.minor_number, 2);
    // runc's check: major*10000 + minor*100 + sublevel >= 30000.
    assert.ok(v.version!.major_number * 10000 + v.version!.minor_number * 100 + (v.version!.sublevel ?? 0) >= 31500);
    s.send({ type: ReqType.FEATURE_CHECK, features: { lazy_pages: true, mem_track: true } });
    const f = await s.recv();
    assert.equal(f.type, ReqType.FEATURE_CHECK);
    assert.equal(f.success, true);
    assert.deepEqual(f.features, { mem_track: true, lazy_pages: true, pidfd_store: false }, 'asked features true, the rest false');
    const end = await finish(s);
    assert.equal(end.code, 0, end.stderr);
  });
  await withSwrk(async (c) => {
    c.send({ type: ReqType.CHECK });
    const r = await c.recv();
    assert.deepEqual([r.type, r.success], [ReqType.CHECK, true]);
    assert.equal((await finish(c)).code, 0);
  });
  assert.deepEqual(leakedFds(fds), []);
});

test('lr-criu (the criu runc gets): VERSION answered natively with the CLI\'s bytes, anything else handed to the CLI on the same connection', { skip }, async () => {
  const fds = openFds();
  const exeOf = (pid: number): string => {
    try {
      return readlinkSync(`/proc/${pid}/exe`);
    } catch {
      return '';
    }
  };
  // What the CLI itself answers to runc's first request.
  const expected = await withSwrk(async (s) => {
    s.send({ type: ReqType.VERSION });
    const buf = await addon.seqpacketRecv(s.fd, 60_000);
    assert.ok(buf);
    assert.equal((await finish(s)).code, 0);
    return buf;
  });
  // lr-criu answers the same bytes, still itself (no node started), and
  // exits 0 when the client closes (runc's VERSION connection).
  const a = startSwrk('lr-criu');
  try {
    a.send({ type: ReqType.VERSION, keep_open: true });
    const got = await addon.seqpacketRecv(a.fd, 60_000);
    assert.ok(got);
    assert.deepEqual(decodeResp(got), decodeResp(expected));
    assert.equal(got.toString('hex'), expected.toString('hex'), 'the same criu_resp bytes as the CLI');
    assert.equal(exeOf(a.child.pid!), realpathSync(lrCriuPath), 'answered without starting node');
    // A request it does not answer goes to the CLI: it execs it, the
    // request still queued.
    a.send({ type: ReqType.FEATURE_CHECK, features: { lazy_pages: true } });
    // Seen while node starts (tens of ms): once it has answered it may be gone.
    let cmdline: string[] = [];
    await until(() => {
      if (exeOf(a.child.pid!) !== realpathSync(process.execPath)) return false;
      try {
        cmdline = readFileSync(`/proc/${a.child.pid!}/cmdline`, 'utf8').split('\0');
      } catch { /* gone already */ }
      return true;
    }, 20_000, 'the CLI (node) to answer FEATURE_CHECK');
    // swrk's node runs with V8's larger interrupt budget (lr-criu.c).
    assert.equal(cmdline[1], '--interrupt-budget=1000000', cmdline.join(' '));
    assert.match(cmdline[2] ?? '', /bin\/lazy-restore\.js$/);
    const f = await a.recv();
    assert.deepEqual([f.type, f.success, f.features?.lazy_pages], [ReqType.FEATURE_CHECK, true, true]);
    assert.equal((await finish(a)).code, 0);
  } finally {
    a.close();
  }
  const b = startSwrk('lr-criu');
  try {
    b.send({ type: ReqType.VERSION });
    assert.equal((await b.recv()).type, ReqType.VERSION);
    const end = await finish(b);
    assert.equal(end.code, 0, end.stderr);
  } finally {
    b.close();
  }
  // Garbage and a bad fd still get the CLI's answers.
  const g = startSwrk('lr-criu');
  try {
    g.sendRaw(Buffer.from([0xff, 0xff, 0xff]));
    const r = await g.recv();
    assert.equal(r.success, false);
    assert.equal((await finish(g)).code, 1);
  } finally {
    g.close();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('bad requests: unknown type, garbage, keep_open on DUMP, a wrong fd: CRIU\'s error shape, clear message', { skip }, async () => {
  const fds = openFds();
  // Unknown request type: type EMPTY, success false, EBADRQC.
  await withSwrk(async (u) => {
    u.send({ type: 99 });
    const r = await u.recv();
    assert.equal(r.type, ReqType.EMPTY);
    assert.equal(r.success, false);
    assert.equal(r.cr_errno, EBADRQC);
    assert.match(r.cr_errmsg ?? '', /Invalid req: type 99/);
    assert.equal((await finish(u)).code, 1);
  });
  // NOTIFY out of place is not a request either.
  await withSwrk(async (n) => {
    n.send({ type: ReqType.NOTIFY, notify_success: true });
    const r = await n.recv();
    assert.deepEqual([r.type, r.success, r.cr_errno], [ReqType.EMPTY, false, EBADRQC]);
    assert.equal((await finish(n)).code, 1);
  });
  // Garbage bytes: an error response naming the problem, exit 1, no stack.
  await withSwrk(async (g) => {
    g.sendRaw(Buffer.from([0xff, 0xff, 0xff, 0x0f, 0x42, 0x13, 0x37]));
    const r = await g.recv();
    assert.equal(r.success, false);
    assert.equal(r.cr_errno, 74 /* EBADMSG */);
    assert.match(r.cr_errmsg ?? '', /RPC request: cannot decode criu_req/);
    const end = await finish(g);
    assert.equal(end.code, 1);
    assert.doesNotMatch(end.stderr, /\n\s+at /, 'no stack trace');
  });
  // A request missing a required field (images_dir_fd of criu_opts).
  await withSwrk(async (m) => {
    m.sendRaw(Buffer.from([0x08, 0x01, 0x12, 0x02, 0x10, 0x01])); // type DUMP, opts { pid: 1 }
    const r = await m.recv();
    assert.equal(r.success, false);
    assert.match(r.cr_errmsg ?? '', /images_dir_fd/);
    assert.equal((await finish(m)).code, 1);
  });
  // keep_open is only for VERSION/FEATURE_CHECK/PAGE_SERVER(_CHLD), as in CRIU.
  await withSwrk(async (k) => {
    k.send({ type: ReqType.DUMP, keep_open: true, opts: { images_dir_fd: -1, pid: 1 } });
    const r = await k.recv();
    assert.deepEqual([r.type, r.success, r.cr_errno], [ReqType.DUMP, false, EBADRQC]);
    assert.match(r.cr_errmsg ?? '', /keep_open is not supported for DUMP/);
  });
  // The peer closes before sending anything: exit 1, nothing else.
  const e = startSwrk();
  assert.equal((await finish(e)).code, 1);
  // fd 3 that is not a SOCK_SEQPACKET socket: one clear line.
  const t = tempDir('lr-rpc-');
  try {
    const f = openSync(join(t.path, 'x'), 'w');
    const child = spawn(process.execPath, [cliPath, 'swrk', '3'], { stdio: ['ignore', 'ignore', 'pipe', f] });
    closeSync(f);
    let err = '';
    child.stderr!.on('data', (c: Buffer) => { err += c.toString(); });
    const code = await withTimeout(new Promise<number | null>((resolve) => child.on('close', resolve)), 30_000, 'swrk exit');
    assert.equal(code, 1);
    assert.match(err, /fd 3 is not a socket: ENOTSOCK/);
    assert.equal(err.trim().split('\n').length, 1);
  } finally {
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

rpcWorkloadTest('DUMP with an unsupported option is refused by name before the tree is touched; it keeps running', 4, ['.'], async ({ wl, dir, fds }) => {
  await withSwrk(async (s) => {
    s.send({
      type: ReqType.DUMP,
      opts: {
        images_dir_fd: fds['.']!, pid: wl.pid, log_file: 'dump.log', log_level: 4, notify_scripts: true,
        inherit_fd: [{ key: 'pipe:[1234]', fd: 0 }], manage_cgroups: true, orphan_pts_master: true,
        config_file: '/etc/passwd', manage_cgroups_mode: 17,
      },
    });
    const { resp, scripts } = await s.untilResponse();
    assert.deepEqual(scripts, [], 'no script runs for a refused request');
    assert.equal(resp.type, ReqType.DUMP);
    assert.equal(resp.success, false);
    assert.equal(resp.cr_errno, EBADRQC);
    assert.match(resp.cr_errmsg ?? '', /not supported by lazy-restore: .*inherit_fd/);
    assert.match(resp.cr_errmsg ?? '', /inherit_fd \(pipe:\[1234\]=fd 0\)/);
    assert.match(resp.cr_errmsg ?? '', /config_file \/etc\/passwd \(configuration files are not read\)/);
    assert.match(resp.cr_errmsg ?? '', /manage_cgroups_mode 17 \(unknown mode\)/);
    assert.match(readFileSync(join(dir, 'dump.log'), 'utf8'), /not supported by lazy-restore/, 'the refusal is in the log in the work dir');
    assert.equal((await finish(s)).code, 1);
  });
  await assertRunningUntouched(wl, 'after a refused dump');
  assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.img')), [], 'no image written');
  // The request's options were refused before its log was set up: a
  // supported request with a bad images fd is named too.
  await withSwrk(async (b) => {
    b.send({ type: ReqType.DUMP, opts: { images_dir_fd: 999, pid: wl.pid } });
    const r = await b.recv();
    assert.equal(r.success, false);
    assert.match(r.cr_errmsg ?? '', /images_dir_fd: cannot open \/proc\/\d+\/fd\/999: ENOENT/);
    assert.equal((await finish(b)).code, 1);
  });
  await assertRunningUntouched(wl, 'after a dump with a bad images fd');
});

rpcWorkloadTest('DUMP: a failed post-dump script or a client gone mid-dump leaves the tree running, never frozen or killed', 4, ['.'], async ({ wl, dir, fds }) => {
  const dirFd = fds['.']!;
  // post-dump answered with failure: CRIU resumes the tree and fails the dump.
  await withSwrk(async (s) => {
    s.send({ type: ReqType.DUMP, opts: { images_dir_fd: dirFd, pid: wl.pid, log_file: 'dump.log', log_level: 4, notify_scripts: true } });
    const { resp, scripts } = await s.untilResponse((script) => script !== 'post-dump');
    assert.deepEqual(scripts.map((x) => x.script), ['pre-dump', 'post-dump']);
    assert.equal(resp.type, ReqType.DUMP);
    assert.equal(resp.success, false);
    assert.match(resp.cr_errmsg ?? '', /notify post-dump: the RPC client reported the script failed/);
    assert.equal(resp.cr_errno, 125 /* ECANCELED */);
    assert.match(readFileSync(join(dir, 'dump.log'), 'utf8'), /post-dump: the RPC client reported the script failed/, 'the error is in the log too');
    assert.equal((await finish(s)).code, 1);
  });
  await assertRunningUntouched(wl, 'after a failed post-dump');
  // The client closes while post-dump is pending (the tree is frozen then).
  await withSwrk(async (c) => {
    c.send({ type: ReqType.DUMP, opts: { images_dir_fd: dirFd, pid: wl.pid, notify_scripts: true } });
    const pre = await c.recv();
    assert.equal(pre.notify?.script, 'pre-dump');
    c.send({ type: ReqType.NOTIFY, notify_success: true });
    const post = await c.recv();
    assert.equal(post.notify?.script, 'post-dump');
    assert.equal(stateOf(wl.pid), 't', 'frozen while post-dump is pending');
    const end = await finish(c);
    assert.equal(end.code, 1);
  });
  await assertRunningUntouched(wl, 'after the client went away mid-dump');
  // Garbage in place of the NOTIFY answer: the same.
  await withSwrk(async (g) => {
    g.send({ type: ReqType.DUMP, opts: { images_dir_fd: dirFd, pid: wl.pid, notify_scripts: true } });
    assert.equal((await g.recv()).notify?.script, 'pre-dump');
    g.send({ type: ReqType.NOTIFY, notify_success: true });
    assert.equal((await g.recv()).notify?.script, 'post-dump');
    g.sendRaw(Buffer.from('not a protobuf at all'));
    const r = await g.recv();
    assert.equal(r.success, false);
    assert.match(r.cr_errmsg ?? '', /notify post-dump: bad reply from the RPC client/);
    assert.equal((await finish(g)).code, 1);
  });
  await assertRunningUntouched(wl, 'after a garbage NOTIFY answer');
  // The workload never noticed: its memory is intact.
  await verdictOk(wl, wl.pid, 'the dumped-but-resumed workload found every byte it wrote');
});

rpcWorkloadTest('DUMP then RESTORE with rst_sibling over RPC, every NOTIFY in CRIU\'s order, byte-exact', 8, ['img', 'work'], async (c) => {
  const { wl, fds } = c;
  const images = join(c.dir, 'img');
  const work = join(c.dir, 'work');
  await withSwrk(async (s) => {
    s.send({
      type: ReqType.DUMP,
      opts: {
        images_dir_fd: fds.img!, work_dir_fd: fds.work!, pid: wl.pid, log_file: 'dump.log', log_level: 4, notify_scripts: true,
        // What runc sets for a process without a container around it.
        manage_cgroups: true, orphan_pts_master: true, shell_job: false, leave_running: false, tcp_established: false,
        ext_unix_sk: false, file_locks: true, empty_ns: 0x40000000, auto_dedup: false, lazy_pages: false,
      },
    });
    const { resp, scripts } = await s.untilResponse();
    assert.equal(resp.success, true, resp.cr_errmsg);
    assert.equal(resp.type, ReqType.DUMP);
    assert.deepEqual(resp.dump, { restored: false });
    assert.deepEqual(scripts.map((x) => x.script), ['pre-dump', 'post-dump']);
    assert.equal((await finish(s)).code, 0);
  });
  await withTimeout(wl.exited, 10_000, 'the dumped workload is killed');
  assert.ok(existsSync(join(work, 'dump.log')) && !existsSync(join(images, 'dump.log')), 'the log is in the work dir');
  critCheckDir(images);
  assert.ok(existsSync(join(images, 'filelocks.img')), 'file_locks: filelocks.img written (empty: no locks)');

  await withSwrk(async (r) => {
    r.send({
      type: ReqType.RESTORE,
      opts: {
        images_dir_fd: fds.img!, work_dir_fd: fds.work!, log_file: 'restore.log', log_level: 4, notify_scripts: true,
        rst_sibling: true, evasive_devices: true, manage_cgroups: true, orphan_pts_master: true, empty_ns: 0x40000000, file_locks: true,
      },
    });
    const { resp, scripts } = await r.untilResponse();
    assert.equal(resp.success, true, resp.cr_errmsg);
    assert.equal(resp.type, ReqType.RESTORE);
    c.restored = resp.restore?.pid;
    assert.equal(c.restored, wl.pid, 'the root keeps its pid');
    assert.deepEqual(scripts, [
      { script: 'pre-restore' }, { script: 'setup-namespaces', pid: wl.pid }, { script: 'post-setup-namespaces' },
      { script: 'post-restore', pid: wl.pid }, { script: 'pre-resume' }, { script: 'post-resume' },
    ]);
    assert.equal((await finish(r)).code, 0);
  });
  assert.ok(existsSync(join(work, 'restore.log')));
  await siblingVerdict(c);
});

rpcWorkloadTest('PRE_DUMP then DUMP with parent_img and track_mem on one connection, then a lazy RESTORE', 8, ['1', '2'], async (c) => {
  const { wl, fds } = c;
  await withSwrk(async (s) => {
    s.send({ type: ReqType.PRE_DUMP, opts: { images_dir_fd: fds['1']!, pid: wl.pid, log_file: 'pre.log', log_level: 4 } });
    const pre = await s.recv();
    assert.deepEqual([pre.type, pre.success], [ReqType.PRE_DUMP, true], pre.cr_errmsg);
    await assertRunningUntouched(wl, 'after the pre-dump');
    s.send({ type: ReqType.DUMP, opts: { images_dir_fd: fds['2']!, pid: wl.pid, parent_img: '../1', track_mem: true, log_file: 'dump.log', log_level: 4 } });
    const d = await s.recv();
    assert.deepEqual([d.type, d.success], [ReqType.DUMP, true], d.cr_errmsg);
    assert.equal((await finish(s)).code, 0);
  });
  await withTimeout(wl.exited, 10_000, 'the dumped workload is killed');
  assert.match(readFileSync(join(c.dir, '2', 'dump.log'), 'utf8'), /\S/);
  await withSwrk(async (r) => {
    r.send({ type: ReqType.RESTORE, opts: { images_dir_fd: fds['2']!, rst_sibling: true, lazy_pages: true, log_file: 'restore.log', log_level: 4 } });
    const resp = await r.recv();
    assert.deepEqual([resp.type, resp.success], [ReqType.RESTORE, true], resp.cr_errmsg);
    c.restored = resp.restore?.pid;
    assert.equal(c.restored, wl.pid);
    await siblingVerdict(c, 'byte-exact through the pre-dump chain, served lazily');
    // The in-process daemon served until done, then swrk exits.
    assert.equal((await finish(r)).code, 0);
  });
});

rpcWorkloadTest('PAGE_SERVER_CHLD with keep_open, a DUMP pushed to it from another swrk, WAIT_PID', 4, ['src', 'dst'], async ({ wl, dir, fds }) => {
  await withSwrk(async (ps) => {
    ps.send({ type: ReqType.PAGE_SERVER_CHLD, keep_open: true, opts: { images_dir_fd: fds.dst!, ps: { address: '127.0.0.1', port: 0 }, log_file: 'ps.log' } });
    const r = await ps.recv();
    assert.deepEqual([r.type, r.success], [ReqType.PAGE_SERVER, true], r.cr_errmsg);
    const port = r.ps?.port;
    const pid = r.ps?.pid;
    assert.ok(port && port > 0 && pid && pid > 0, JSON.stringify(r.ps));
    await withSwrk(async (d) => {
      d.send({ type: ReqType.DUMP, opts: { images_dir_fd: fds.src!, pid: wl.pid, leave_running: true, ps: { address: '127.0.0.1', port } } });
      const dr = await d.recv();
      assert.deepEqual([dr.type, dr.success], [ReqType.DUMP, true], dr.cr_errmsg);
      assert.equal((await finish(d)).code, 0);
    });
    await assertRunningUntouched(wl, 'leave_running');
    assert.ok(readdirSync(join(dir, 'dst')).some((f) => /^pages-\d+\.img$/.test(f)), 'pages arrived at the page server');
    assert.ok(!readdirSync(join(dir, 'src')).some((f) => /^pages-\d+\.img$/.test(f)), 'no pages kept at the source');
    ps.send({ type: ReqType.WAIT_PID, pid });
    const w = await ps.recv(30_000);
    assert.deepEqual([w.type, w.success, w.status], [ReqType.WAIT_PID, true, 0], 'the page server exited 0 after the session');
    assert.equal((await finish(ps)).code, 0);
  });
  // WAIT_PID of a process that is not the service's child: ECHILD, as waitpid says.
  await withSwrk(async (o) => {
    o.send({ type: ReqType.WAIT_PID, pid: 1 });
    const bad = await o.recv();
    assert.deepEqual([bad.type, bad.success, bad.cr_errno], [ReqType.WAIT_PID, false, 10 /* ECHILD */]);
    assert.equal((await finish(o)).code, 1);
  });
});

// A server holding an established TCP connection, dumped and restored over
// RPC as `runc checkpoint/restore --tcp-established` asks (criu_opts
// tcp_established): without it the DUMP is refused with CRIU's message and
// the server keeps running; with it the client keeps its connection, the
// line waiting in the server's receive queue and the one sent while the
// server was gone (network lock: retransmitted) are answered.
const TCP_LINE_SERVER = `
import signal, socket
${pyAcceptOne("'127.0.0.1'")}print('accepted', flush=True)
signal.sigwait([signal.SIGUSR1])
f = c.makefile('rb')
a = f.readline()
b = f.readline()
c.sendall(b'got:' + a + b'got:' + b)
c.close()
`;

test('DUMP and RESTORE with tcp_established: a client keeps its TCP connection (runc checkpoint --tcp-established)', { skip }, async () => {
  const before = openFds();
  const t = tempDir('sockets-rpc-tcp-');
  const srv = await startServer('/usr/bin/python3', ['-u', '-c', TCP_LINE_SERVER], /^port \d+$/m);
  let client: Socket | undefined;
  let restored: number | undefined;
  let dirFd: number | undefined;
  try {
    const port = Number(/^port (\d+)$/m.exec(srv.log())![1]);
    const received: Buffer[] = [];
    let ended = false;
    let clientError: Error | undefined;
    client = connect(port, '127.0.0.1');
    client.on('data', (b: Buffer) => received.push(b));
    client.on('end', () => { ended = true; });
    client.on('error', (e) => { clientError = e; });
    await withTimeout(new Promise<void>((r) => client!.once('connect', () => r())), 5000, 'connect');
    await until(() => /^accepted$/m.test(srv.log()), 10_000, 'the server accepted');
    client.write('before the dump\n');
    mkdirSync(join(t.path, 'img'));
    dirFd = openSync(join(t.path, 'img'), 'r');
    const fd = dirFd;
    await withSwrk(async (s) => {
      s.send({ type: ReqType.DUMP, opts: { images_dir_fd: fd, pid: srv.pid, log_file: 'dump.log' } });
      const r = await s.recv();
      assert.deepEqual([r.type, r.success], [ReqType.DUMP, false]);
      assert.match(r.cr_errmsg ?? '', /Connected TCP socket, consider using --tcp-established option\./);
      await finish(s);
    });
    assert.ok(alive(srv.pid), 'the refused dump left the server running');
    await withSwrk(async (s) => {
      s.send({ type: ReqType.DUMP, opts: { images_dir_fd: fd, pid: srv.pid, log_file: 'dump.log', tcp_established: true } });
      const r = await s.recv();
      assert.deepEqual([r.type, r.success], [ReqType.DUMP, true], r.cr_errmsg);
      assert.equal((await finish(s)).code, 0);
    });
    await withTimeout(srv.exited, 10_000, 'the dumped server is killed');
    assert.ok(readdirSync(join(t.path, 'img')).some((f) => /^tcp-stream-[0-9a-f]+\.img$/.test(f)), 'tcp-stream image written');
    client.write('while it was gone\n');
    await withSwrk(async (s) => {
      s.send({ type: ReqType.RESTORE, opts: { images_dir_fd: fd, log_file: 'restore.log', tcp_established: true } });
      const r = await s.recv();
      assert.deepEqual([r.type, r.success], [ReqType.RESTORE, true], r.cr_errmsg);
      restored = r.restore?.pid;
      assert.equal(restored, srv.pid);
      assert.equal((await finish(s)).code, 0);
    });
    process.kill(restored!, 'SIGUSR1');
    await until(() => ended || clientError !== undefined, 20_000, () => `the answer (${Buffer.concat(received).toString()})`);
    assert.equal(clientError, undefined);
    assert.equal(Buffer.concat(received).toString(), 'got:before the dump\ngot:while it was gone\n');
  } finally {
    client?.destroy();
    if (dirFd !== undefined) closeSync(dirFd);
    killRestoredWorkloads([restored]);
    await srv.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(before), []);
});
