// criu_opts of an RPC request → what our dump/restore/page server are
// given. Every field a client sets is either honoured here or refused by
// name (CRIU's error shape: success=false, cr_errno EBADRQC), before
// anything is touched. Directories and status fds are the client's fds,
// reached through /proc/<peer>/fd/<n> as CRIU does.
import { existsSync, fstatSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CgMode, type CriuOpts, RpcError } from './messages.js';
import type { CgroupMode } from '../cgroup/hierarchy.js';

export const EBADRQC = 56;

/** What a request is for: decides which options make sense. */
export type RpcMode = 'dump' | 'pre-dump' | 'restore' | 'page-server' | 'check';

const CLONE_NEWNET = 0x40000000;

/** An inherit_fd key we restore from the given fd: CRIU's name of a pipe. */
export const INHERIT_PIPE = /^pipe:\[\d+\]$/;

/**
 * --manage-cgroups as CRIU's RPC sets it: manage_cgroups true → soft,
 * false → ignore; manage_cgroups_mode overrides; neither → soft.
 */
export function cgroupMode(o: CriuOpts): CgroupMode {
  const byMode: Record<number, CgroupMode> = {
    [CgMode.IGNORE]: 'ignore', [CgMode.CG_NONE]: 'none', [CgMode.PROPS]: 'props', [CgMode.SOFT]: 'soft',
    [CgMode.FULL]: 'full', [CgMode.STRICT]: 'strict', [CgMode.DEFAULT]: 'soft',
  };
  if (o.manage_cgroups_mode !== undefined) return byMode[o.manage_cgroups_mode] ?? 'soft';
  if (o.manage_cgroups !== undefined) return o.manage_cgroups ? 'soft' : 'ignore';
  return 'soft';
}

/** cg_root entries as --cgroup-root's (ctrl unset: every hierarchy). */
export function cgroupRoots(o: CriuOpts): { ctrl: string | undefined; path: string }[] {
  return (o.cg_root ?? []).map((r) => ({ ctrl: r.ctrl, path: r.path }));
}

/** CRIU's defaults for fields that have one: sending the default is never a refusal. */
const DEFAULTS: Record<string, unknown> = {
  images_dir_fd: -1, log_level: 2, cpu_cap: 0xffffffff, ghost_limit: 0x100000, pre_dump_mode: 1, network_lock: 1,
};

type Check = (v: unknown, o: CriuOpts, mode: RpcMode) => string | undefined;
const ok: Check = () => undefined;
const notOnRestore = (why: string): Check => (v, _o, mode) => (mode === 'restore' && isSet(v) ? why : undefined);
const onlyRestore = (why: string): Check => (v, _o, mode) => (mode !== 'restore' && isSet(v) ? why : undefined);

/**
 * Fields we honour (or that are harmless here), with the condition under
 * which a value is still refused. Everything else set to a non-default
 * value is refused by name.
 */
const HANDLED: Record<string, Check> = {
  images_dir_fd: ok, images_dir: ok, work_dir_fd: ok, log_level: ok, log_file: ok, notify_scripts: ok,
  pid: (_v, _o, mode) => (mode === 'restore' ? 'pid is a dump option' : undefined),
  leave_running: notOnRestore('leave_running is a dump option'),
  shell_job: ok, timeout: ok, parent_img: ok, track_mem: ok, lazy_pages: ok, ps: ok, status_fd: ok,
  tls: ok, tls_cacert: ok, tls_cert: ok, tls_key: ok,
  // Established TCP connections (plugin/dump/fds/inet.ts, TCP_REPAIR + nftables lock).
  // Unix sockets with a peer outside the tree (plugin/dump/fds/unix.ts).
  ext_unix_sk: ok,
  tcp_established: ok, tcp_skip_in_flight: notOnRestore('tcp_skip_in_flight is a dump option'),
  // File locks (plugin/dump/locks.ts, plugin/restore/locks.ts), as the CLI's --file-locks.
  file_locks: ok,
  // Our pre-dump tracks writes with userfaultfd write-protect either way.
  pre_dump_mode: ok,
  // Dumped connections are always locked with nftables (plugin/dump/fds/netlock.ts).
  network_lock: ok,
  // The container's freezer cgroup: frozen while its threads are seized (plugin/dump/cgroup-freezer.ts).
  freeze_cgroup: ok,
  // cgroup.img and cg_set (plugin/dump/cgroups.ts, plugin/restore/cgroups.ts):
  // every CRIU mode, new roots, the hierarchies to dump, property lists, a yard.
  manage_cgroups: ok,
  manage_cgroups_mode: (v) => (typeof v === 'number' && !Object.values(CgMode).includes(v as never) ? `manage_cgroups_mode ${v} (unknown mode)` : undefined),
  cg_root: (v) => (Array.isArray(v) && (v as { path?: string }[]).some((r) => typeof r.path !== 'string' || !r.path.startsWith('/'))
    ? 'cg_root with a path that is not absolute' : undefined),
  cgroup_dump_controller: ok, cgroup_props: ok, cgroup_props_file: ok, cgroup_yard: ok,
  // Only meaningful with ttys, which we refuse anyway.
  orphan_pts_master: ok,
  // Device files are reopened by path.
  evasive_devices: ok,
  rst_sibling: onlyRestore('rst_sibling is a restore option'),
  // A restored network namespace is always empty here (loopback only).
  empty_ns: (v) => (typeof v === 'number' && (v & ~CLONE_NEWNET) !== 0 ? `empty_ns 0x${v.toString(16)} (only CLONE_NEWNET)` : undefined),
  // Dump: what the root sees is dumped (a container's mounts); restore: the
  // directory a container's mount tree is rebuilt in and pivoted into.
  root: ok,
  // External mounts of a container: dump marks them (key = mountpoint,
  // value = the key stored), restore binds them (key → path here).
  ext_mnt: ok,
  // runc always names /etc/criu/runc.conf; CRIU ignores a missing file, and
  // we read no configuration files at all.
  config_file: (v) => (typeof v === 'string' && v !== '' && existsSync(v) ? `config_file ${v} (configuration files are not read)` : undefined),
  // The network namespace runc/podman pass for an external one
  // (extRootNetNS) and pipes (pipe:[INO]: a container's stdio whose other
  // end was outside the tree, replaced by this process's fd N, which runc
  // makes the new pipe: swrk's stdio). Other kinds are not supported.
  inherit_fd: (v, _o, mode) => {
    const fds = Array.isArray(v) ? (v as { key: string; fd: number }[]) : [];
    const bad = fds.filter((f) => f.key !== 'extRootNetNS' && !(mode === 'restore' && INHERIT_PIPE.test(f.key)));
    return bad.length ? `inherit_fd (${bad.map((f) => `${f.key}=fd ${f.fd}`).join(', ')})` : undefined;
  },
  // Only an external network namespace (net[INODE]:KEY).
  external: (v) => {
    const other = Array.isArray(v) ? (v as string[]).filter((e, i, a) => !(/^net\[\d+\]:.+$/.test(e) && a.findIndex((x) => /^net\[/.test(x)) === i)) : [];
    return other.length ? `external (${other.join(', ')})` : undefined;
  },
  join_ns: (v) => (Array.isArray(v) && v.length ? 'join_ns' : undefined),
  veths: (v) => (Array.isArray(v) && v.length ? 'veths' : undefined),
};

function isSet(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  return true;
}

/** The options of `o` we do not support, each named with why (empty when all are fine). */
export function refusedOptions(o: CriuOpts, mode: RpcMode): string[] {
  const out: string[] = [];
  for (const [name, value] of Object.entries(o)) {
    const check = HANDLED[name];
    if (check) {
      const why = check(value, o, mode);
      if (why !== undefined) out.push(why);
    } else if (isSet(value) && !(name in DEFAULTS && DEFAULTS[name] === value)) {
      out.push(name);
    }
  }
  return out;
}

/** Throws CRIU's "bad request" error naming every refused option. */
export function checkOptions(o: CriuOpts, mode: RpcMode): void {
  const refused = refusedOptions(o, mode);
  if (refused.length) {
    throw new RpcError(`RPC option${refused.length > 1 ? 's' : ''} not supported by lazy-restore: ${refused.join('; ')}`, EBADRQC);
  }
}

/** A client's fd as a path: the directory it names (readlink), as CRIU opens /proc/<peer>/fd/<n>. */
export function peerFdPath(peerPid: number, fd: number, what: string): string {
  const proc = `/proc/${peerPid}/fd/${fd}`;
  let target: string;
  try {
    target = readlinkSync(proc);
  } catch (e) {
    throw new RpcError(`${what}: cannot open ${proc}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, EBADRQC);
  }
  // The target as the client sees it: usable unless it was removed or is
  // outside our mount namespace view; then the magic link itself still works.
  if (target.startsWith('/') && !target.endsWith(' (deleted)') && existsSync(target)) return target;
  return proc;
}

export interface RpcDirs {
  imagesDir: string;
  workDir: string;
  logFile: string | undefined;
  logLevel: number;
}

/** Images dir (fd or path), work dir (fd, else the images dir) and log file (in the work dir), as CRIU resolves them. */
export function resolveDirs(o: CriuOpts, peerPid: number, needImages: boolean): RpcDirs {
  let imagesDir: string | undefined;
  if (o.images_dir_fd !== undefined && o.images_dir_fd !== -1) imagesDir = peerFdPath(peerPid, o.images_dir_fd, 'images_dir_fd');
  else if (o.images_dir !== undefined && o.images_dir !== '') imagesDir = o.images_dir;
  if (imagesDir === undefined && needImages) throw new RpcError('Neither images_dir_fd nor images_dir was passed by the RPC client', EBADRQC);
  if (imagesDir !== undefined) {
    let isDir = false;
    try {
      isDir = statSync(imagesDir).isDirectory();
    } catch (e) {
      throw new RpcError(`images dir ${imagesDir}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, EBADRQC);
    }
    if (!isDir) throw new RpcError(`images dir ${imagesDir}: not a directory (ENOTDIR)`, EBADRQC);
  }
  const workDir = o.work_dir_fd !== undefined ? peerFdPath(peerPid, o.work_dir_fd, 'work_dir_fd') : imagesDir;
  if (workDir === undefined) throw new RpcError('images_dir or work_dir is required when using a log file', EBADRQC);
  const name = o.log_file ?? 'criu.log';
  if (name.includes('/')) throw new RpcError(`log_file ${name}: no subdirectories are allowed in the log file name`, EBADRQC);
  return { imagesDir: imagesDir ?? workDir, workDir, logFile: join(workDir, name), logLevel: o.log_level ?? 2 };
}

/**
 * inherit_fd pipe entries as restore()'s inheritFds (KEY → our fd N, which
 * the client left open in this process, as CRIU's swrk inherits them); a
 * fd that is not open here is refused by name.
 */
export function inheritedPipes(o: CriuOpts): Map<string, number> {
  const out = new Map<string, number>();
  for (const f of o.inherit_fd ?? []) {
    if (!INHERIT_PIPE.test(f.key)) continue;
    let st;
    try {
      st = fstatSync(f.fd);
    } catch (e) {
      throw new RpcError(`inherit_fd ${f.key}: fd ${f.fd} is not open in the RPC service: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, EBADRQC);
    }
    if (!st.isFIFO()) throw new RpcError(`inherit_fd ${f.key}: fd ${f.fd} is not a pipe`, EBADRQC);
    out.set(f.key, f.fd);
  }
  return out;
}
