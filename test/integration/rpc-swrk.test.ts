// CRIU's RPC (criu swrk FD), driven the way runc drives it: a
// SOCK_SEQPACKET socketpair, our CLI started as `swrk 3` with the other end
// as fd 3, criu_req records encoded with protobufjs (proto/rpc.proto), the
// images dir passed as an fd of this process (reached through /proc), and
// every NOTIFY answered. Real workloads are dumped and restored; bad
// requests get CRIU's error shape and never leave a tree frozen or killed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { addon } from '../../plugin/native/addon.js';
import type { RestoreExitInfo } from '../../plugin/native/types.js';
import { type CriuOpts, type CriuReq, type CriuResp, ReqType, decodeResp, encodeReq } from '../../plugin/rpc/messages.js';
import { cliPath } from '../helpers/cli.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { startWorkload, waitForFile, type Workload } from '../helpers/workload.js';
import { critCheckDir } from '../helpers/critcheck.js';

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

function startSwrk(): Swrk {
  const [ours, theirs] = addon.seqpacketPair();
  const child = spawn(process.execPath, [cliPath, 'swrk', '3'], { stdio: ['ignore', 'ignore', 'pipe', theirs] });
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

async function finish(s: Swrk): Promise<{ code: number | null; stderr: string }> {
  s.close();
  const r = await withTimeout(s.exited, 30_000, 'swrk exit');
  return r;
}

/** The state letter of a live process ('t' = stopped by a tracer), or undefined when gone. */
function stateOf(pid: number): string | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

function tracerOf(pid: number): number {
  const m = /TracerPid:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? -1);
}

/** The workload runs on: in sigsuspend (S), untraced. */
function assertRunningUntouched(wl: Workload, what: string): void {
  assert.equal(stateOf(wl.pid), 'S', `${what}: the workload is neither stopped nor gone`);
  assert.equal(tracerOf(wl.pid), 0, `${what}: nothing traces the workload`);
}

function reap(pid: number): Promise<RestoreExitInfo> {
  return new Promise((resolve) => {
    const w = new addon.RestoreChildWaiter(pid, (info) => {
      w.close();
      resolve(info);
    });
  });
}

function killIfWorkload(pid: number | undefined): void {
  if (!pid) return;
  try {
    if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'workload-mem') process.kill(pid, 'SIGKILL');
  } catch { /* gone */ }
}

test('VERSION answers as CRIU 4.2; FEATURE_CHECK and keep_open on one connection; CHECK', { skip }, async () => {
  const fds = openFds();
  const s = startSwrk();
  try {
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
  } finally {
    s.close();
  }
  const c = startSwrk();
  try {
    c.send({ type: ReqType.CHECK });
    const r = await c.recv();
    assert.deepEqual([r.type, r.success], [ReqType.CHECK, true]);
    assert.equal((await finish(c)).code, 0);
  } finally {
    c.close();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('bad requests: unknown type, garbage, keep_open on DUMP, a wrong fd: CRIU\'s error shape, clear message', { skip }, async () => {
  const fds = openFds();
  // Unknown request type: type EMPTY, success false, EBADRQC.
  const u = startSwrk();
  try {
    u.send({ type: 99 });
    const r = await u.recv();
    assert.equal(r.type, ReqType.EMPTY);
    assert.equal(r.success, false);
    assert.equal(r.cr_errno, EBADRQC);
    assert.match(r.cr_errmsg ?? '', /Invalid req: type 99/);
    assert.equal((await finish(u)).code, 1);
  } finally {
    u.close();
  }
  // NOTIFY out of place is not a request either.
  const n = startSwrk();
  try {
    n.send({ type: ReqType.NOTIFY, notify_success: true });
    const r = await n.recv();
    assert.deepEqual([r.type, r.success, r.cr_errno], [ReqType.EMPTY, false, EBADRQC]);
    assert.equal((await finish(n)).code, 1);
  } finally {
    n.close();
  }
  // Garbage bytes: an error response naming the problem, exit 1, no stack.
  const g = startSwrk();
  try {
    g.sendRaw(Buffer.from([0xff, 0xff, 0xff, 0x0f, 0x42, 0x13, 0x37]));
    const r = await g.recv();
    assert.equal(r.success, false);
    assert.equal(r.cr_errno, 74 /* EBADMSG */);
    assert.match(r.cr_errmsg ?? '', /RPC request: cannot decode criu_req/);
    const end = await finish(g);
    assert.equal(end.code, 1);
    assert.doesNotMatch(end.stderr, /\n\s+at /, 'no stack trace');
  } finally {
    g.close();
  }
  // A request missing a required field (images_dir_fd of criu_opts).
  const m = startSwrk();
  try {
    m.sendRaw(Buffer.from([0x08, 0x01, 0x12, 0x02, 0x10, 0x01])); // type DUMP, opts { pid: 1 }
    const r = await m.recv();
    assert.equal(r.success, false);
    assert.match(r.cr_errmsg ?? '', /images_dir_fd/);
    assert.equal((await finish(m)).code, 1);
  } finally {
    m.close();
  }
  // keep_open is only for VERSION/FEATURE_CHECK/PAGE_SERVER(_CHLD), as in CRIU.
  const k = startSwrk();
  try {
    k.send({ type: ReqType.DUMP, keep_open: true, opts: { images_dir_fd: -1, pid: 1 } });
    const r = await k.recv();
    assert.deepEqual([r.type, r.success, r.cr_errno], [ReqType.DUMP, false, EBADRQC]);
    assert.match(r.cr_errmsg ?? '', /keep_open is not supported for DUMP/);
  } finally {
    k.close();
  }
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

test('DUMP with an unsupported option is refused by name before the tree is touched; it keeps running', { skip }, async () => {
  const fds = openFds();
  const t = tempDir('lr-rpc-');
  const wl = await startWorkload('workload-mem', ['4']);
  const dirFd = openSync(t.path, 'r');
  try {
    const s = startSwrk();
    try {
      s.send({
        type: ReqType.DUMP,
        opts: {
          images_dir_fd: dirFd, pid: wl.pid, log_file: 'dump.log', log_level: 4, notify_scripts: true,
          inherit_fd: [{ key: 'pipe:[1234]', fd: 0 }], manage_cgroups: true, orphan_pts_master: true,
          config_file: '/etc/passwd',
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
      assert.match(readFileSync(join(t.path, 'dump.log'), 'utf8'), /not supported by lazy-restore/, 'the refusal is in the log in the work dir');
      assert.equal((await finish(s)).code, 1);
    } finally {
      s.close();
    }
    assertRunningUntouched(wl, 'after a refused dump');
    assert.deepEqual(readdirSync(t.path).filter((f) => f.endsWith('.img')), [], 'no image written');
    // The request's options were refused before its log was set up: a
    // supported request with a bad images fd is named too.
    const b = startSwrk();
    try {
      b.send({ type: ReqType.DUMP, opts: { images_dir_fd: 999, pid: wl.pid } });
      const r = await b.recv();
      assert.equal(r.success, false);
      assert.match(r.cr_errmsg ?? '', /images_dir_fd: cannot open \/proc\/\d+\/fd\/999: ENOENT/);
      assert.equal((await finish(b)).code, 1);
    } finally {
      b.close();
    }
    assertRunningUntouched(wl, 'after a dump with a bad images fd');
  } finally {
    closeSync(dirFd);
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('DUMP: a failed post-dump script or a client gone mid-dump leaves the tree running, never frozen or killed', { skip }, async () => {
  const fds = openFds();
  const t = tempDir('lr-rpc-');
  const wl = await startWorkload('workload-mem', ['4']);
  const dirFd = openSync(t.path, 'r');
  try {
    // post-dump answered with failure: CRIU resumes the tree and fails the dump.
    const s = startSwrk();
    try {
      s.send({ type: ReqType.DUMP, opts: { images_dir_fd: dirFd, pid: wl.pid, log_file: 'dump.log', log_level: 4, notify_scripts: true } });
      const { resp, scripts } = await s.untilResponse((script) => script !== 'post-dump');
      assert.deepEqual(scripts.map((x) => x.script), ['pre-dump', 'post-dump']);
      assert.equal(resp.type, ReqType.DUMP);
      assert.equal(resp.success, false);
      assert.match(resp.cr_errmsg ?? '', /notify post-dump: the RPC client reported the script failed/);
      assert.equal(resp.cr_errno, 125 /* ECANCELED */);
      assert.match(readFileSync(join(t.path, 'dump.log'), 'utf8'), /post-dump: the RPC client reported the script failed/, 'the error is in the log too');
      assert.equal((await finish(s)).code, 1);
    } finally {
      s.close();
    }
    assertRunningUntouched(wl, 'after a failed post-dump');
    // The client closes while post-dump is pending (the tree is frozen then).
    const c = startSwrk();
    try {
      c.send({ type: ReqType.DUMP, opts: { images_dir_fd: dirFd, pid: wl.pid, notify_scripts: true } });
      const pre = await c.recv();
      assert.equal(pre.notify?.script, 'pre-dump');
      c.send({ type: ReqType.NOTIFY, notify_success: true });
      const post = await c.recv();
      assert.equal(post.notify?.script, 'post-dump');
      assert.equal(stateOf(wl.pid), 't', 'frozen while post-dump is pending');
      const end = await finish(c);
      assert.equal(end.code, 1);
    } finally {
      c.close();
    }
    assertRunningUntouched(wl, 'after the client went away mid-dump');
    // Garbage in place of the NOTIFY answer: the same.
    const g = startSwrk();
    try {
      g.send({ type: ReqType.DUMP, opts: { images_dir_fd: dirFd, pid: wl.pid, notify_scripts: true } });
      assert.equal((await g.recv()).notify?.script, 'pre-dump');
      g.send({ type: ReqType.NOTIFY, notify_success: true });
      assert.equal((await g.recv()).notify?.script, 'post-dump');
      g.sendRaw(Buffer.from('not a protobuf at all'));
      const r = await g.recv();
      assert.equal(r.success, false);
      assert.match(r.cr_errmsg ?? '', /notify post-dump: bad reply from the RPC client/);
      assert.equal((await finish(g)).code, 1);
    } finally {
      g.close();
    }
    assertRunningUntouched(wl, 'after a garbage NOTIFY answer');
    // The workload never noticed: its memory is intact.
    wl.go();
    await waitForFile(join(wl.ctrlDir, 'result'), 30_000);
    assert.equal(wl.result(), 'ok');
  } finally {
    closeSync(dirFd);
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('DUMP then RESTORE with rst_sibling over RPC, every NOTIFY in CRIU\'s order, byte-exact', { skip }, async () => {
  const fds = openFds();
  const t = tempDir('lr-rpc-');
  const images = join(t.path, 'img');
  const work = join(t.path, 'work');
  mkdirSync(images);
  mkdirSync(work);
  const wl = await startWorkload('workload-mem', ['8']);
  const imgFd = openSync(images, 'r');
  const workFd = openSync(work, 'r');
  let restored: number | undefined;
  try {
    const s = startSwrk();
    try {
      s.send({
        type: ReqType.DUMP,
        opts: {
          images_dir_fd: imgFd, work_dir_fd: workFd, pid: wl.pid, log_file: 'dump.log', log_level: 4, notify_scripts: true,
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
    } finally {
      s.close();
    }
    await withTimeout(wl.exited, 10_000, 'the dumped workload is killed');
    assert.ok(existsSync(join(work, 'dump.log')) && !existsSync(join(images, 'dump.log')), 'the log is in the work dir');
    critCheckDir(images);
    assert.ok(existsSync(join(images, 'filelocks.img')), 'file_locks: filelocks.img written (empty: no locks)');

    const r = startSwrk();
    try {
      r.send({
        type: ReqType.RESTORE,
        opts: {
          images_dir_fd: imgFd, work_dir_fd: workFd, log_file: 'restore.log', log_level: 4, notify_scripts: true,
          rst_sibling: true, evasive_devices: true, manage_cgroups: true, orphan_pts_master: true, empty_ns: 0x40000000, file_locks: true,
        },
      });
      const { resp, scripts } = await r.untilResponse();
      assert.equal(resp.success, true, resp.cr_errmsg);
      assert.equal(resp.type, ReqType.RESTORE);
      restored = resp.restore?.pid;
      assert.equal(restored, wl.pid, 'the root keeps its pid');
      assert.deepEqual(scripts, [
        { script: 'pre-restore' }, { script: 'setup-namespaces', pid: wl.pid }, { script: 'post-setup-namespaces' },
        { script: 'post-restore', pid: wl.pid }, { script: 'pre-resume' }, { script: 'post-resume' },
      ]);
      assert.equal((await finish(r)).code, 0);
    } finally {
      r.close();
    }
    assert.ok(existsSync(join(work, 'restore.log')));
    const exit = reap(restored!);
    wl.go(restored);
    await waitForFile(join(wl.ctrlDir, 'result'), 30_000);
    assert.equal(wl.result(), 'ok', 'the restored workload found every byte it wrote');
    assert.deepEqual(await withTimeout(exit, 20_000, 'restored root exit'), { code: 0, signal: 0 });
    restored = undefined;
  } finally {
    closeSync(imgFd);
    closeSync(workFd);
    killIfWorkload(restored);
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('PRE_DUMP then DUMP with parent_img and track_mem on one connection, then a lazy RESTORE', { skip }, async () => {
  const fds = openFds();
  const t = tempDir('lr-rpc-');
  const d1 = join(t.path, '1');
  const d2 = join(t.path, '2');
  mkdirSync(d1);
  mkdirSync(d2);
  const wl = await startWorkload('workload-mem', ['8']);
  const fd1 = openSync(d1, 'r');
  const fd2 = openSync(d2, 'r');
  let restored: number | undefined;
  try {
    const s = startSwrk();
    try {
      s.send({ type: ReqType.PRE_DUMP, opts: { images_dir_fd: fd1, pid: wl.pid, log_file: 'pre.log', log_level: 4 } });
      const pre = await s.recv();
      assert.deepEqual([pre.type, pre.success], [ReqType.PRE_DUMP, true], pre.cr_errmsg);
      assertRunningUntouched(wl, 'after the pre-dump');
      s.send({ type: ReqType.DUMP, opts: { images_dir_fd: fd2, pid: wl.pid, parent_img: '../1', track_mem: true, log_file: 'dump.log', log_level: 4 } });
      const d = await s.recv();
      assert.deepEqual([d.type, d.success], [ReqType.DUMP, true], d.cr_errmsg);
      assert.equal((await finish(s)).code, 0);
    } finally {
      s.close();
    }
    await withTimeout(wl.exited, 10_000, 'the dumped workload is killed');
    assert.match(readFileSync(join(d2, 'dump.log'), 'utf8'), /\S/);
    const r = startSwrk();
    try {
      r.send({ type: ReqType.RESTORE, opts: { images_dir_fd: fd2, rst_sibling: true, lazy_pages: true, log_file: 'restore.log', log_level: 4 } });
      const resp = await r.recv();
      assert.deepEqual([resp.type, resp.success], [ReqType.RESTORE, true], resp.cr_errmsg);
      restored = resp.restore?.pid;
      assert.equal(restored, wl.pid);
      const exit = reap(restored!);
      wl.go(restored);
      await waitForFile(join(wl.ctrlDir, 'result'), 30_000);
      assert.equal(wl.result(), 'ok', 'byte-exact through the pre-dump chain, served lazily');
      assert.deepEqual(await withTimeout(exit, 20_000, 'restored root exit'), { code: 0, signal: 0 });
      restored = undefined;
      // The in-process daemon served until done, then swrk exits.
      assert.equal((await finish(r)).code, 0);
    } finally {
      r.close();
    }
  } finally {
    closeSync(fd1);
    closeSync(fd2);
    killIfWorkload(restored);
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('PAGE_SERVER_CHLD with keep_open, a DUMP pushed to it from another swrk, WAIT_PID', { skip }, async () => {
  const fds = openFds();
  const t = tempDir('lr-rpc-');
  const src = join(t.path, 'src');
  const dst = join(t.path, 'dst');
  mkdirSync(src);
  mkdirSync(dst);
  const wl = await startWorkload('workload-mem', ['4']);
  const srcFd = openSync(src, 'r');
  const dstFd = openSync(dst, 'r');
  try {
    const ps = startSwrk();
    try {
      ps.send({ type: ReqType.PAGE_SERVER_CHLD, keep_open: true, opts: { images_dir_fd: dstFd, ps: { address: '127.0.0.1', port: 0 }, log_file: 'ps.log' } });
      const r = await ps.recv();
      assert.deepEqual([r.type, r.success], [ReqType.PAGE_SERVER, true], r.cr_errmsg);
      const port = r.ps?.port;
      const pid = r.ps?.pid;
      assert.ok(port && port > 0 && pid && pid > 0, JSON.stringify(r.ps));
      const d = startSwrk();
      try {
        d.send({ type: ReqType.DUMP, opts: { images_dir_fd: srcFd, pid: wl.pid, leave_running: true, ps: { address: '127.0.0.1', port } } });
        const dr = await d.recv();
        assert.deepEqual([dr.type, dr.success], [ReqType.DUMP, true], dr.cr_errmsg);
        assert.equal((await finish(d)).code, 0);
      } finally {
        d.close();
      }
      assertRunningUntouched(wl, 'leave_running');
      assert.ok(readdirSync(dst).some((f) => /^pages-\d+\.img$/.test(f)), 'pages arrived at the page server');
      assert.ok(!readdirSync(src).some((f) => /^pages-\d+\.img$/.test(f)), 'no pages kept at the source');
      ps.send({ type: ReqType.WAIT_PID, pid });
      const w = await ps.recv(30_000);
      assert.deepEqual([w.type, w.success, w.status], [ReqType.WAIT_PID, true, 0], 'the page server exited 0 after the session');
      assert.equal((await finish(ps)).code, 0);
    } finally {
      ps.close();
    }
    // WAIT_PID of a process that is not the service's child: ECHILD, as waitpid says.
    const o = startSwrk();
    try {
      o.send({ type: ReqType.WAIT_PID, pid: 1 });
      const bad = await o.recv();
      assert.deepEqual([bad.type, bad.success, bad.cr_errno], [ReqType.WAIT_PID, false, 10 /* ECHILD */]);
      assert.equal((await finish(o)).code, 1);
    } finally {
      o.close();
    }
  } finally {
    closeSync(srcFd);
    closeSync(dstFd);
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
