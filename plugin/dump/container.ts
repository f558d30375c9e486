// A dumped tree whose root lives in its own namespaces (a runc container):
// its init is pid 1 of its own pid namespace, with its own mount, UTS, IPC
// and network namespaces. This module decides whether we can dump that
// faithfully, gives the pids as the container sees them (the images hold
// those, as CRIU's do), and writes the namespace images CRIU writes:
// mountpoints-<id>.img (one mnt_entry per mount, from mountinfo),
// tmpfs-dev-<s_dev>.tar.gz.img (each tmpfs's contents, the tar CRIU's
// tar call makes, written in-process by plugin/images/tmpfs-tar.ts),
// utsns-<id>.img, and the network namespace's (lo) images unless it is
// restored empty (plugin/dump/netns.ts). Everything is read from outside:
// /proc/PID/mountinfo, paths through /proc/PID/root, the files of the UTS
// and IPC namespaces read by a thread that joins them (addon nsReadFiles).
// Not supported (refused by name): a user, cgroup or
// time namespace of its own, POSIX message queues (SysV IPC objects
// are dumped with the IPC namespace: plugin/dump/ipc),
// network interfaces other than lo (unless the caller restores the network
// namespace empty, CRIU's --empty-ns net), mounts of file systems we cannot
// recreate unless they are external (ext_mnt), a root that is not the
// namespace's init.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KIND, type ImageDir } from '../images/index.js';
import { packTmpfs, TarUnsupported } from '../images/tmpfs-tar.js';
import { addon } from '../native/addon.js';
import { mark } from '../phases.js';
import { writeNetns } from './netns.js';
import { nsId } from './proc.js';

/** fstype numbers of CRIU's mnt.proto. */
const FSTYPE: Record<string, number> = {
  proc: 1, sysfs: 2, devtmpfs: 3, binfmt_misc: 4, tmpfs: 5, devpts: 6, securityfs: 9, fusectl: 10, debugfs: 11,
  cgroup: 12, mqueue: 14, tracefs: 19, cgroup2: 23,
};
/** File systems a restore mounts anew (their contents are the kernel's, or a tmpfs we carry). */
const RECREATABLE = new Set(['proc', 'sysfs', 'tmpfs', 'devpts', 'mqueue', 'cgroup2']);

/** Mount flags (per mount, from mountinfo field 6) and superblock flags, as MS_* bits. */
const MNT_FLAG: Record<string, number> = {
  ro: 1, nosuid: 2, nodev: 4, noexec: 8, noatime: 1024, nodiratime: 2048, relatime: 0x200000, strictatime: 0x1000000,
};
const SB_FLAG: Record<string, number> = { ro: 1, sync: 16, dirsync: 128, mand: 64, lazytime: 0x2000000 };

const CLONE_NEWNET = 0x40000000;

export interface MountInfo {
  mntId: number;
  parentId: number;
  major: number;
  minor: number;
  root: string;
  mountpoint: string;
  mntOpts: string[];
  fstype: string;
  source: string;
  superOpts: string[];
  shared: number;
  master: number;
}

/** Undoes mountinfo's octal escapes (\040 for a space, ...). */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountinfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (dash < 6) continue;
    const [major, minor] = f[2]!.split(':').map(Number) as [number, number];
    let shared = 0;
    let master = 0;
    for (const o of f.slice(6, dash)) {
      const s = /^shared:(\d+)$/.exec(o);
      const m = /^master:(\d+)$/.exec(o);
      if (s) shared = Number(s[1]);
      if (m) master = Number(m[1]);
    }
    out.push({
      mntId: Number(f[0]), parentId: Number(f[1]), major, minor, root: unescape(f[3]!), mountpoint: unescape(f[4]!),
      mntOpts: f[5]!.split(','), fstype: f[dash + 1]!, source: unescape(f[dash + 2]!), superOpts: (f[dash + 3] ?? '').split(','), shared, master,
    });
  }
  return out;
}

/** CRIU's MKKDEV: the kernel's internal dev_t layout. */
function kdev(major: number, minor: number): number {
  return ((major << 20) | minor) >>> 0;
}

export interface MntEntry {
  fstype: number; mnt_id: number; root_dev: number; parent_mnt_id: number; flags: number; root: string; mountpoint: string;
  source: string; options: string; shared_id?: number; master_id?: number; fsname?: string; sb_flags?: number; ext_key?: string;
}

export interface ContainerOptions {
  /** External mounts (CRIU's ext_mnt / --external mnt[KEY]:VAL): mountpoint → key. */
  extMounts?: ReadonlyMap<string, string>;
  /** The caller restores the network namespace empty (CRIU's empty_ns with CLONE_NEWNET): its interfaces are not checked. */
  emptyNet?: boolean;
  /**
   * CRIU's --external net[INODE]:KEY (runc/podman give it for a container
   * in a named network namespace): that namespace is not ours to dump; the
   * restore joins the one given for KEY.
   */
  externalNet?: { inode: number; key: string };
}

/** Parses CRIU's external namespace specs; returns the net one and the ones we cannot honour. */
export function parseExternals(specs: readonly string[]): { net?: { inode: number; key: string }; other: string[] } {
  let net: { inode: number; key: string } | undefined;
  const other: string[] = [];
  for (const s of specs) {
    const m = /^net\[(\d+)\]:(.+)$/.exec(s);
    if (m && net === undefined) net = { inode: Number(m[1]), key: m[2]! };
    else other.push(s);
  }
  return { ...(net ? { net } : {}), other };
}

export interface Container {
  /** Pid (or tid) as the container sees it, for a host pid of the tree. */
  vpid(host: number): number;
  /** Session and group of a process as the container sees them. */
  vsid(host: number): { sid: number; pgid: number };
  /** Writes the namespace images for the root's namespace ids. */
  write(dir: ImageDir, ids: { mnt: number; uts: number; net: number }): Promise<void>;
}

/** True when the root is in another pid or mount namespace than we are. */
export function isContainer(root: number): boolean {
  return nsId(root, 'pid') !== nsId('self', 'pid') || nsId(root, 'mnt') !== nsId('self', 'mnt');
}

function statusField(pid: number, tid: number | undefined, name: string): number[] {
  const path = tid === undefined ? `/proc/${pid}/status` : `/proc/${pid}/task/${tid}/status`;
  const m = new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(readFileSync(path, 'utf8'));
  return m ? m[1]!.trim().split(/\s+/).map(Number) : [];
}

/** Files as pid's UTS or IPC namespace shows them (the reader's namespace decides what /proc/sys/kernel and /proc/sysvipc show). */
function inNs(pid: number, kind: 'uts' | 'ipc', paths: string[]): string[] {
  return addon.nsReadFiles(pid, kind, paths);
}

/** What we cannot dump about a container root (empty: fine). */
export function containerProblems(root: number, opts: ContainerOptions): string[] {
  const problems: string[] = [];
  const where = `pid ${root}`;
  for (const n of ['user', 'cgroup', 'time'] as const) {
    if (nsId(root, n) !== nsId('self', n)) problems.push(`${where}: a ${n} namespace of its own is not supported`);
  }
  if (nsId(root, 'pid') !== nsId('self', 'pid')) {
    const ns = statusField(root, undefined, 'NSpid');
    if (ns.length !== 2 || ns[1] !== 1) problems.push(`${where}: the root must be the init (pid 1) of its pid namespace, one level deep (NSpid ${ns.join(' ')})`);
  }
  if (nsId(root, 'mnt') !== nsId('self', 'mnt')) {
    const ext = opts.extMounts ?? new Map<string, string>();
    for (const m of parseMountinfo(readFileSync(`/proc/${root}/mountinfo`, 'utf8'))) {
      if (m.mountpoint === '/' || ext.has(m.mountpoint)) continue;
      if (m.shared || m.master) problems.push(`${where}: mount ${m.mountpoint} is shared or a slave (propagation is not supported)`);
      const bindOfOther = m.root !== '/';
      if (!RECREATABLE.has(m.fstype) && !bindOfOther) {
        problems.push(`${where}: mount ${m.mountpoint} (${m.fstype} ${m.source}) cannot be recreated: pass it as an external mount (ext_mnt)`);
      }
    }
    try {
      if (readdirSync(`/proc/${root}/root/dev/mqueue`).length) problems.push(`${where}: POSIX message queues are not supported`);
    } catch { /* no mqueue mount */ }
  }
  // Its IPC namespace's SysV objects are dumped with it (plugin/dump/ipc).
  if (opts.externalNet && nsId(root, 'net') !== opts.externalNet.inode) {
    problems.push(`${where}: external network namespace net[${opts.externalNet.inode}] is not the root's (net[${nsId(root, 'net')}])`);
  }
  if (nsId(root, 'net') !== nsId('self', 'net') && !(opts.emptyNet ?? false) && !opts.externalNet) {
    const links = readFileSync(`/proc/${root}/net/dev`, 'utf8').split('\n').slice(2).map((l) => l.split(':')[0]!.trim()).filter(Boolean);
    const other = links.filter((l) => l !== 'lo');
    if (other.length) problems.push(`${where}: network interfaces other than lo (${other.join(', ')}) are not supported; restore the network namespace empty (empty_ns)`);
  }
  mark('container: checked');
  return problems;
}

export function emptyNetFromMask(mask: number | undefined): boolean {
  return mask !== undefined && (mask & CLONE_NEWNET) !== 0;
}

/** Reads what the images need; the tree must be frozen. */
export function openContainer(root: number, opts: ContainerOptions): Container {
  const vpids = new Map<number, number>();
  const vp = (host: number): number => {
    let v = vpids.get(host);
    if (v === undefined) {
      const ns = statusField(host, undefined, 'NSpid');
      v = ns[ns.length - 1] ?? host;
      vpids.set(host, v);
    }
    return v;
  };
  const ownMnt = nsId(root, 'mnt') !== nsId('self', 'mnt');
  const ownUts = nsId(root, 'uts') !== nsId('self', 'uts');
  const ownNet = nsId(root, 'net') !== nsId('self', 'net');
  return {
    vpid: (host) => {
      // Threads: NSpid of the task.
      if (vpids.has(host)) return vpids.get(host)!;
      try {
        return vp(host);
      } catch {
        return host;
      }
    },
    vsid: (host) => {
      const sid = statusField(host, undefined, 'NSsid');
      const pgid = statusField(host, undefined, 'NSpgid');
      return { sid: sid[sid.length - 1] ?? 0, pgid: pgid[pgid.length - 1] ?? 0 };
    },
    write: async (dir, ids) => {
      if (ownUts) {
        const [nodename, domainname] = inNs(root, 'uts', ['/proc/sys/kernel/hostname', '/proc/sys/kernel/domainname']).map((t) => t.replace(/\n$/, '')) as [string, string];
        mark('container: uts read');
        await dir.writeImage(KIND.utsns, ids.uts, [{ nodename, domainname }]);
      }
      if (ownMnt) await writeMounts(root, dir, ids.mnt, opts.extMounts ?? new Map());
      // Its network namespace unless the caller restores it empty or it is an external one (plugin/dump/netns.ts).
      if (ownNet && !(opts.emptyNet ?? false) && !opts.externalNet) await writeNetns(root, dir, ids.net);
    },
  };
}

/** Threads' ids as the container sees them (NSpid of each task). */
export function vtid(pid: number, tid: number): number {
  const ns = statusField(pid, tid, 'NSpid');
  return ns[ns.length - 1] ?? tid;
}

async function writeMounts(root: number, dir: ImageDir, mntNs: number, ext: ReadonlyMap<string, string>): Promise<void> {
  const mounts = parseMountinfo(readFileSync(`/proc/${root}/mountinfo`, 'utf8'));
  const entries: MntEntry[] = [];
  for (const m of mounts) {
    let flags = 0;
    for (const o of m.mntOpts) flags |= MNT_FLAG[o] ?? 0;
    let sbFlags = 0;
    const options: string[] = [];
    for (const o of m.superOpts) {
      if (o === 'rw' || o === '') continue;
      if (SB_FLAG[o] !== undefined) sbFlags |= SB_FLAG[o]!;
      else options.push(o);
    }
    const key = ext.get(m.mountpoint);
    const fstype = FSTYPE[m.fstype] ?? 0;
    entries.push({
      fstype, mnt_id: m.mntId, root_dev: kdev(m.major, m.minor), parent_mnt_id: m.parentId, flags, root: m.root,
      mountpoint: m.mountpoint, source: m.source, options: options.join(','), shared_id: m.shared, master_id: m.master,
      ...(fstype === 0 ? { fsname: m.fstype } : {}), sb_flags: sbFlags, ...(key !== undefined ? { ext_key: key } : {}),
    });
    // A tmpfs carries its files: CRIU's tar of the mount, gzipped.
    if (m.fstype === 'tmpfs' && m.root === '/' && key === undefined && m.mountpoint !== '/') {
      // Named by the superblock's device, as CRIU names them (one per tmpfs; binds of part of it are not packed).
      const out = dir.pathOf(KIND.tmpfsDev, kdev(m.major, m.minor));
      const from = join(`/proc/${root}/root`, m.mountpoint);
      let packed: Buffer | undefined;
      try {
        packed = packTmpfs(from);
      } catch (e) {
        if (!(e instanceof TarUnsupported)) throw e;
      }
      if (packed) {
        writeFileSync(out, packed);
      } else {
        execFileSync('tar', ['--create', '--gzip', '--no-unquote', '--no-wildcards', '--one-file-system', '--check-links',
          '--preserve-permissions', '--sparse', '--numeric-owner', '--file', out, '--directory', from, '.'],
        { timeout: 60_000, stdio: ['ignore', 'ignore', 'pipe'] });
      }
      mark(`container: tmpfs ${m.mountpoint} packed`);
    }
  }
  await dir.writeImage(KIND.mnts, mntNs, entries);
}
