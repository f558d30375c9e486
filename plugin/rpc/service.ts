// CRIU's RPC service (criu swrk FD, criu service): reads criu_req records
// from a SOCK_SEQPACKET socket and answers criu_resp, mapping each request
// onto dump(), preDump(), restore() and the page server. As in CRIU, one
// request is served per connection unless it sets keep_open (allowed for
// VERSION, FEATURE_CHECK, PAGE_SERVER, PAGE_SERVER_CHLD), a PRE_DUMP is
// followed by further PRE_DUMPs or the final DUMP, and action scripts
// become NOTIFY round trips when the client set notify_scripts.
//
// Errors are CRIU's shape: success=false, cr_errno when known, cr_errmsg
// (the first error) and the same line in the log file in the work dir.
// Nothing here leaves a tree frozen: dump() releases it on any failure.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { Errno, isSystemError, UserError } from '../errors.js';
import { configureLog, logger } from '../log.js';
import { RpcChannel } from './channel.js';
import { type CriuFeatures, type CriuOpts, type CriuReq, type CriuResp, ReqType, RpcError, reqTypeName } from './messages.js';
import { cgroupMode, cgroupRoots, checkOptions, EBADRQC, inheritedPipes, resolveDirs, type RpcDirs, type RpcMode } from './options.js';

/** The CRIU version we answer VERSION with: runc 1.1.5 needs >= 3.0 and uses newer RPC features from 3.15 on. */
export const CRIU_COMPAT_VERSION = { major: 4, minor: 2 } as const;


const log = logger();

/** errno of an error as a number: ours, a system error's, or the errno name a message carries. */
export function errnoOf(e: unknown): number | undefined {
  if (e instanceof RpcError) return e.errno;
  if (isSystemError(e)) return e.errno < 0 ? -e.errno : e.errno;
  if (e instanceof Error) {
    if (e.cause !== undefined) {
      const c = errnoOf(e.cause);
      if (c !== undefined) return c;
    }
    const names = osConstants.errno as Record<string, number>;
    for (const m of e.message.matchAll(/\b(E[A-Z0-9]{2,})\b/g)) {
      const n = names[m[1]!];
      if (n !== undefined) return n;
    }
  }
  return undefined;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export function errorResponse(type: number, e: unknown): CriuResp {
  const errno = errnoOf(e);
  return { type, success: false, ...(errno ? { cr_errno: errno } : {}), cr_errmsg: messageOf(e) };
}

/** Children started for PAGE_SERVER_CHLD, for WAIT_PID. */
interface Child { proc: ChildProcess; exit: Promise<number> }

export interface ServeOptions {
  /** Path of our CLI, to start page servers as separate processes (bin/lazy-restore.js). */
  cliPath: string;
  /** `criu service`: rst_sibling is refused there, as in CRIU. */
  standalone?: boolean;
}

/**
 * Serves one connection until its requests are done (CRIU's
 * cr_service_work). Resolves with the exit status CRIU's swrk would have.
 */
export async function serveConnection(ch: RpcChannel, sopts: ServeOptions): Promise<number> {
  const children = new Map<number, Child>();
  let served = 0;
  for (;;) {
    let req: CriuReq | null;
    try {
      req = await ch.recv();
    } catch (e) {
      log.error(`RPC: cannot read a request: ${messageOf(e)}`);
      trySend(ch, errorResponse(ReqType.EMPTY, e));
      return 1;
    }
    if (req === null) {
      // The client closed its end: a normal end after at least one request.
      if (served === 0) log.error('RPC: the client exited before sending a request');
      return served === 0 ? 1 : 0;
    }
    served++;
    if (req.keep_open === true && !keepOpenAllowed(req.type)) {
      trySend(ch, errorResponse(req.type, new RpcError(`keep_open is not supported for ${reqTypeName(req.type)} requests`, EBADRQC)));
      return 1;
    }
    let ok: boolean;
    try {
      ok = await serveRequest(ch, req, sopts, children);
    } catch (e) {
      // A failure while answering (the client went away): nothing more to say.
      log.error(`RPC: ${reqTypeName(req.type)}: ${messageOf(e)}`);
      return 1;
    }
    if (!ok || req.keep_open !== true) return ok ? 0 : 1;
  }
}

function keepOpenAllowed(type: number): boolean {
  return type === ReqType.PAGE_SERVER || type === ReqType.PAGE_SERVER_CHLD || type === ReqType.FEATURE_CHECK
    || type === ReqType.VERSION || type === ReqType.CPUINFO_DUMP || type === ReqType.CPUINFO_CHECK;
}

function trySend(ch: RpcChannel, resp: CriuResp): void {
  try {
    ch.send(resp);
  } catch (e) {
    log.error(`RPC: cannot send the response: ${messageOf(e)}`);
  }
}

/** Serves one request; false when it failed (an error response was sent). */
async function serveRequest(ch: RpcChannel, req: CriuReq, sopts: ServeOptions, children: Map<number, Child>): Promise<boolean> {
  const fail = (type: number, e: unknown): false => {
    const resp = errorResponse(type, e);
    log.error(resp.cr_errmsg ?? 'failed');
    ch.send(resp);
    return false;
  };
  switch (req.type) {
    case ReqType.VERSION:
      ch.send({
        type: ReqType.VERSION, success: true,
        version: { major_number: CRIU_COMPAT_VERSION.major, minor_number: CRIU_COMPAT_VERSION.minor, gitid: `lazy-restore-${await ourVersion(sopts.cliPath)}`, name: 'lazy-restore' },
      });
      return true;
    case ReqType.FEATURE_CHECK:
      try {
        ch.send({ type: ReqType.FEATURE_CHECK, success: true, features: await featureCheck(req.features ?? {}) });
        return true;
      } catch (e) {
        return fail(ReqType.FEATURE_CHECK, e);
      }
    case ReqType.CHECK:
      try {
        if (req.opts) setupLogging(req.opts, ch, 'check');
        const { runChecks, verdict } = await import('../check/index.js');
        const v = verdict(await runChecks());
        if (!v.ok) throw new UserError(`check: required kernel features are missing: ${v.missingRequired.join(', ')}`);
        ch.send({ type: ReqType.CHECK, success: true });
        return true;
      } catch (e) {
        return fail(ReqType.CHECK, e);
      }
    case ReqType.DUMP:
      return serveDump(ch, req, 'dump', fail);
    case ReqType.PRE_DUMP:
    case ReqType.SINGLE_PRE_DUMP: {
      let cur: CriuReq = req;
      for (;;) {
        if (!await serveDump(ch, cur, 'pre-dump', fail)) return false;
        if (req.type === ReqType.SINGLE_PRE_DUMP) return true;
        // CRIU's pre-dump loop: more PRE_DUMPs, then the final DUMP.
        const next = await ch.recv();
        if (next === null) return true;
        if (next.type === ReqType.DUMP) return serveDump(ch, next, 'dump', fail);
        if (next.type !== ReqType.PRE_DUMP) return fail(ReqType.EMPTY, new RpcError(`Bad req seq: ${reqTypeName(next.type)} after PRE_DUMP`, EBADRQC));
        cur = next;
      }
    }
    case ReqType.RESTORE:
      try {
        await serveRestore(ch, req.opts ?? emptyOpts(), sopts);
        return true;
      } catch (e) {
        return fail(ReqType.RESTORE, e);
      }
    case ReqType.PAGE_SERVER:
    case ReqType.PAGE_SERVER_CHLD:
      try {
        const ps = await startPageServer(ch, req.opts ?? emptyOpts(), sopts, req.type === ReqType.PAGE_SERVER);
        if (req.type === ReqType.PAGE_SERVER_CHLD) children.set(ps.pid, ps.child);
        ch.send({ type: ReqType.PAGE_SERVER, success: true, ps: { pid: ps.pid, port: ps.port } });
        return true;
      } catch (e) {
        return fail(ReqType.PAGE_SERVER, e);
      }
    case ReqType.WAIT_PID: {
      const pid = req.pid ?? 0;
      const c = children.get(pid);
      if (!c) {
        // As waitpid() would answer for a process that is not our child.
        ch.send({ type: ReqType.WAIT_PID, success: false, cr_errno: Errno.ECHILD, cr_errmsg: `pid ${pid} is not a child of this service (ECHILD)` });
        return false;
      }
      const status = await c.exit;
      children.delete(pid);
      ch.send({ type: ReqType.WAIT_PID, success: true, status });
      return true;
    }
    case ReqType.CPUINFO_DUMP:
    case ReqType.CPUINFO_CHECK:
      ch.send({ type: req.type, success: false, cr_errno: Errno.ENOTSUP, cr_errmsg: 'cpuinfo images are not written or checked by lazy-restore (ENOTSUP)' });
      return false;
    default:
      return fail(ReqType.EMPTY, new RpcError(`Invalid req: ${reqTypeName(req.type)} is not a request lazy-restore serves`, EBADRQC));
  }
}

function emptyOpts(): CriuOpts {
  return { images_dir_fd: -1, ext_mnt: [], cg_root: [], inherit_fd: [], external: [], join_ns: [], veths: [] };
}

let versionCache: string | undefined;
async function ourVersion(cliPath: string): Promise<string> {
  if (versionCache === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(join(cliPath, '..', '..', 'package.json'), 'utf8')) as { version?: string };
      versionCache = pkg.version ?? '0';
    } catch {
      versionCache = '0';
    }
  }
  return versionCache;
}

/** FEATURE_CHECK: each asked feature answered true/false (all three fields always present, like CRIU). */
async function featureCheck(asked: CriuFeatures): Promise<CriuFeatures> {
  const { runChecks, lazyRestoreFeatures } = await import('../check/index.js');
  const results = await runChecks();
  const okNames = new Set(results.filter((r) => r.status === 'ok').map((r) => r.name));
  const all = (names: readonly string[]): boolean => names.every((n) => okNames.has(n));
  return {
    mem_track: asked.mem_track === true && all(['uffd:WP_ASYNC', 'pagemap-scan']),
    lazy_pages: asked.lazy_pages === true && all(lazyRestoreFeatures),
    pidfd_store: asked.pidfd_store === true && all(['pidfd_open', 'pidfd_getfd']),
  };
}

/** The log file in the work dir (CRIU's log_file, default criu.log) at log_level. */
function setupLogging(o: CriuOpts, ch: RpcChannel, mode: RpcMode): RpcDirs {
  const dirs = resolveDirs(o, ch.peer.pid, mode !== 'check');
  if (dirs.logFile !== undefined) configureLog({ file: dirs.logFile, level: dirs.logLevel });
  log.info(`lazy-restore RPC ${mode} for pid ${ch.peer.pid} (uid ${ch.peer.uid}), images ${dirs.imagesDir}, work dir ${dirs.workDir}`);
  log.debug(`options: ${JSON.stringify(o)}`);
  return dirs;
}

/** CRIU's status_fd: the client's fd reopened through /proc; one zero byte when the server listens. */
function openStatusFd(o: CriuOpts, peerPid: number): number | undefined {
  if (o.status_fd === undefined) return undefined;
  const path = `/proc/${peerPid}/fd/${o.status_fd}`;
  try {
    return openSync(path, fsConstants.O_WRONLY);
  } catch (e) {
    throw new RpcError(`status_fd: cannot reopen ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, EBADRQC);
  }
}

function tlsOf(o: CriuOpts): Promise<import('../pageserver/transport.js').TlsMaterial | undefined> {
  if (o.tls !== true) return Promise.resolve(undefined);
  return import('../pageserver/transport.js').then(({ loadTls }) => loadTls({ cacert: o.tls_cacert, cert: o.tls_cert, key: o.tls_key }));
}

async function serveDump(ch: RpcChannel, req: CriuReq, mode: 'dump' | 'pre-dump', fail: (t: number, e: unknown) => false): Promise<boolean> {
  const type = req.type === ReqType.SINGLE_PRE_DUMP ? ReqType.SINGLE_PRE_DUMP : mode === 'dump' ? ReqType.DUMP : ReqType.PRE_DUMP;
  const o = req.opts ?? emptyOpts();
  let statusFd: number | undefined;
  let ready: Promise<void> | undefined;
  let killedSelf = false;
  try {
    const dirs = setupLogging(o, ch, mode);
    checkOptions(o, mode);
    const pid = o.pid ?? ch.peer.pid;
    const lazy = o.lazy_pages === true;
    if (lazy && mode === 'pre-dump') throw new RpcError('lazy_pages cannot be combined with a pre-dump', EBADRQC);
    if (lazy && (o.ps?.port === undefined)) throw new RpcError('lazy_pages needs ps (the page server address and port to listen on)', EBADRQC);
    const tls = await tlsOf(o);
    statusFd = openStatusFd(o, ch.peer.pid);
    const notify = o.notify_scripts === true;
    const info = (l: string): void => log.info(l);
    const { dump, preDump } = await import('../dump/index.js');
    const { emptyNetFromMask, parseExternals } = await import('../dump/container.js');
    const ext = parseExternals(o.external ?? []);
    const base = {
      pid, imagesDir: dirs.imagesDir, statsDir: dirs.workDir, shellJob: o.shell_job === true, log: info, warn: (l: string) => log.warn(l),
      container: {
        extMounts: new Map((o.ext_mnt ?? []).map((e) => [e.key, e.val])), emptyNet: emptyNetFromMask(o.empty_ns),
        ...(ext.net ? { externalNet: ext.net } : {}),
      },
      ...(o.timeout ? { timeoutMs: o.timeout * 1000 } : {}),
      ...(o.freeze_cgroup ? { freezeCgroup: o.freeze_cgroup } : {}),
      cgroups: {
        mode: cgroupMode(o), dumpControllers: o.cgroup_dump_controller ?? [], roots: cgroupRoots(o),
        ...(o.cgroup_props || o.cgroup_props_file ? { props: (await import('../cgroup/props.js')).propsTableFrom(o.cgroup_props, o.cgroup_props_file) } : {}),
        ...(o.cgroup_yard ? { yard: o.cgroup_yard } : {}),
      },
      ...(o.parent_img ? { prevImagesDir: o.parent_img } : {}),
    };
    if (mode === 'pre-dump') {
      await preDump(base);
    } else {
      const signalReady = (): void => {
        if (statusFd !== undefined) {
          try {
            writeSync(statusFd, Buffer.from([0]));
          } finally {
            closeSync(statusFd);
            statusFd = undefined;
          }
        }
        if (notify) ready = ch.notify('status-ready');
      };
      // RPC has no --insecure: a client asking for a page server gets plain TCP where it asks, as with CRIU.
      const target = o.ps?.port !== undefined ? { address: o.ps.address ?? '0.0.0.0', port: o.ps.port, insecure: true, ...(tls ? { tls } : {}) } : undefined;
      if (target && !lazy && target.port === 0) throw new RpcError('ps needs the port of the page server to send the pages to', EBADRQC);
      if (target && !lazy && o.ps?.address === undefined) target.address = '127.0.0.1';
      await dump({
        ...base,
        leaveRunning: o.leave_running === true,
        tcpEstablished: o.tcp_established === true, extUnixSk: o.ext_unix_sk === true, skipInFlight: o.tcp_skip_in_flight === true, fileLocks: o.file_locks === true, linkRemap: o.link_remap === true,
        ...(typeof o.ghost_limit === 'number' ? { ghostLimit: BigInt(o.ghost_limit) } : {}),
        ...(lazy && target ? { lazyPages: { ...target, onListening: signalReady } } : {}),
        ...(!lazy && target ? { pageServer: target } : {}),
        ...(notify ? {
          hooks: {
            preDump: () => ch.notify('pre-dump'),
            networkLock: () => ch.notify('network-lock'),
            postDump: () => ch.notify('post-dump'),
            networkUnlock: () => ch.notify('network-unlock'),
          },
        } : {}),
      });
      killedSelf = pid === ch.peer.pid && o.leave_running !== true;
      if (ready) await ready;
    }
    log.info(mode === 'dump' ? 'Dumping finished successfully' : 'Pre-dumping finished successfully');
  } catch (e) {
    if (ready) await ready.catch(() => {});
    if (statusFd !== undefined) closeSync(statusFd);
    return fail(type, e);
  }
  if (statusFd !== undefined) closeSync(statusFd);
  // CRIU answers a dump of the client itself only when it still runs.
  if (!killedSelf) ch.send(type === ReqType.DUMP ? { type, success: true, dump: { restored: false } } : { type, success: true });
  return true;
}

async function serveRestore(ch: RpcChannel, o: CriuOpts, sopts: ServeOptions): Promise<void> {
  const dirs = setupLogging(o, ch, 'restore');
  checkOptions(o, 'restore');
  const inheritFds = inheritedPipes(o);
  if (o.rst_sibling === true && sopts.standalone) throw new RpcError('rst_sibling is not allowed in the standalone service (criu swrk only)', EBADRQC);
  const notify = o.notify_scripts === true;
  const lazy = o.lazy_pages === true;
  // Like CRIU: a lazy restore hands its userfaultfds to the lazy-pages daemon
  // in the work dir; without one we serve in-process until every page is in.
  let lazySocket: string | undefined;
  if (lazy) {
    const p = join(dirs.workDir, 'lazy-pages.socket');
    try {
      if (statSync(p).isSocket()) lazySocket = p;
    } catch { /* none: in-process */ }
  }
  let server: import('../lazy/server.js').LazyPagesServer | undefined;
  if (lazy && lazySocket === undefined) {
    const { LazyPagesServer } = await import('../lazy/server.js');
    server = await LazyPagesServer.open({ imagesDir: dirs.imagesDir });
    server.on('error', (ev) => log.error(`lazy-pages: ${ev.message}`));
  }
  const { restore } = await import('../restore/index.js');
  let rootNetns = false;
  try {
    const tree = await restore({
      imagesDir: dirs.imagesDir, statsDir: dirs.workDir, lazy, detached: true, shellJob: o.shell_job === true, tcpEstablished: o.tcp_established === true, extUnixSk: o.ext_unix_sk === true, fileLocks: o.file_locks === true,
      ...(lazySocket !== undefined ? { lazySocket } : {}),
      ...(server ? { lazyServer: server } : {}),
      ...(o.rst_sibling === true ? { sibling: true } : {}),
      inheritFds,
      cgroups: { mode: cgroupMode(o), roots: cgroupRoots(o), ...(o.cgroup_yard ? { yard: o.cgroup_yard } : {}) },
      container: {
        ...(o.root ? { root: o.root } : {}), extMounts: new Map((o.ext_mnt ?? []).map((e) => [e.key, e.val])),
        // empty_ns net (runc always sends it): the namespace stays empty even when the images describe it, as CRIU.
        ...(((o.empty_ns ?? 0) & 0x40000000 /* CLONE_NEWNET */) !== 0 ? { emptyNet: true } : {}),
        // runc passes the named network namespace as an fd of this process.
        ...((o.inherit_fd ?? []).some((f) => f.key === 'extRootNetNS')
          ? { joinNet: `/proc/${process.pid}/fd/${(o.inherit_fd ?? []).find((f) => f.key === 'extRootNetNS')!.fd}` } : {}),
      },
      log: (l) => log.info(l),
      ...(notify ? {
        hooks: {
          preRestore: () => ch.notify('pre-restore'),
          setupNamespaces: async (pid: number) => {
            rootNetns = otherNetns(pid);
            await ch.notify('setup-namespaces', pid);
          },
          postSetupNamespaces: () => ch.notify('post-setup-namespaces'),
          postRestore: async (pid: number) => {
            await ch.notify('post-restore', pid);
            if (rootNetns) await ch.notify('network-unlock');
          },
          preResume: () => ch.notify('pre-resume'),
          postResume: () => ch.notify('post-resume'),
        },
      } : {}),
    });
    log.info('Restore finished successfully. Tasks resumed.');
    ch.send({ type: ReqType.RESTORE, success: true, restore: { pid: tree.pid } });
    await tree.lazyDone();
    await tree.close();
  } finally {
    await server?.close();
  }
}

function otherNetns(pid: number): boolean {
  try {
    return statSync(`/proc/${pid}/ns/net`).ino !== statSync('/proc/self/ns/net').ino;
  } catch {
    return false;
  }
}

/**
 * PAGE_SERVER (daemon: it outlives this service) and PAGE_SERVER_CHLD (our
 * child, for WAIT_PID): our `page-server` command in its own process, its
 * output in page-server.log in the work dir; answered once it listens.
 */
async function startPageServer(ch: RpcChannel, o: CriuOpts, sopts: ServeOptions, daemon: boolean): Promise<{ pid: number; port: number; child: Child }> {
  const dirs = setupLogging(o, ch, 'page-server');
  checkOptions(o, 'page-server');
  const port = o.ps?.port ?? 0;
  const address = o.ps?.address ?? '0.0.0.0';
  const args = [sopts.cliPath, 'page-server', '-D', dirs.imagesDir, '--address', address, '--port', String(port), '--insecure', '--status-fd', '3'];
  if (o.lazy_pages === true) args.push('--lazy-pages');
  if (o.tls === true) {
    args.push('--tls');
    if (o.tls_cacert) args.push('--tls-cacert', o.tls_cacert);
    if (o.tls_cert) args.push('--tls-cert', o.tls_cert);
    if (o.tls_key) args.push('--tls-key', o.tls_key);
  }
  const outPath = join(dirs.workDir, 'page-server.log');
  const out = openSync(outPath, 'w');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, args, { stdio: ['ignore', out, out, 'pipe'], detached: daemon });
  } finally {
    closeSync(out);
  }
  const exit = new Promise<number>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal ? (osConstants.signals as Record<string, number>)[signal] ?? 9 : ((code ?? 0) & 0xff) << 8));
  });
  const status = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
  const readyOrExit = await Promise.race([
    new Promise<'ready'>((resolve) => status.once('data', () => resolve('ready'))),
    exit.then(() => 'exit' as const),
    new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 30_000).unref()),
  ]);
  status.destroy();
  const text = (): string => {
    try {
      return readFileSync(outPath, 'utf8').trim().split('\n').pop() ?? '';
    } catch {
      return '';
    }
  };
  if (readyOrExit !== 'ready') {
    if (readyOrExit === 'timeout') child.kill('SIGKILL');
    throw new UserError(`page server ${address}:${port} did not start: ${text() || readyOrExit} (see ${outPath})`);
  }
  const m = /listening on .*:(\d+)\s*$/m.exec(readFileSync(outPath, 'utf8'));
  const actual = m ? Number(m[1]) : port;
  if (daemon) child.unref();
  log.info(`page server pid ${child.pid} listening on ${address}:${actual}`);
  return { pid: child.pid!, port: actual, child: { proc: child, exit } };
}
