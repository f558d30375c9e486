// Restoring a container (images written by plugin/dump/container.ts or by
// CRIU): the namespaces the root had apart from its dumper (CRIU's rule:
// the root task's ids against inventory root_ids) are created with the
// root, which is born as pid 1 of a new pid namespace. Inside its new mount
// namespace the root (a ptraced stub, driven by injected syscalls) rebuilds
// the dumped mounts under the given root directory (CRIU's --root, runc's
// bind mount of the bundle's rootfs), unpacks each tmpfs from its
// tmpfs-dev-<mnt id>.tar.gz.img, binds external mounts (ext_mnt) from the
// paths the caller maps their keys to, pivots into the root and sets the
// UTS names. The network namespace is created empty (loopback down), as
// CRIU does with --empty-ns net, which runc asks for.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { ImageDir, KIND, type InventoryEntry, type TaskKobjIdsEntry } from '../images/index.js';
import { TarUnsupported, unpackTmpfs as unpackTar } from '../images/tmpfs-tar.js';
import { addon } from '../native/addon.js';
import { mark } from '../phases.js';
import type { RemoteTask } from './task.js';

const CLONE = { NEWNS: 0x00020000, NEWCGROUP: 0x02000000, NEWUTS: 0x04000000, NEWIPC: 0x08000000, NEWUSER: 0x10000000, NEWPID: 0x20000000, NEWNET: 0x40000000 } as const;
const MS = { RDONLY: 1, NOSUID: 2, NODEV: 4, NOEXEC: 8, REMOUNT: 32, BIND: 4096, REC: 16384, PRIVATE: 1 << 18 } as const;
/** Per-mount flags that a bind remount can set. */
const MNT_MASK = 1 | 2 | 4 | 8 | 1024 | 2048 | 0x200000 | 0x1000000;
const MNT_DETACH = 2;
const SYS = { mount: 165, umount2: 166, pivot_root: 155, sethostname: 170, setdomainname: 171, chdir: 80, mkdir: 83, openat: 257, setns: 308, close: 3 } as const;

interface MntEntry {
  fstype: number; mnt_id: number; root_dev: number; parent_mnt_id: number; flags: number; root: string; mountpoint: string;
  source: string; options: string; fsname?: string; sb_flags?: number; ext_key?: string;
}

const FSNAME: Record<number, string> = { 1: 'proc', 2: 'sysfs', 3: 'devtmpfs', 5: 'tmpfs', 6: 'devpts', 12: 'cgroup', 14: 'mqueue', 23: 'cgroup2' };

export interface ContainerPlan {
  /** CLONE_NEW* flags besides CLONE_NEWPID for the root. */
  nsFlags: number;
  mounts: MntEntry[];
  uts: { nodename: string; domainname: string } | undefined;
  dir: ImageDir;
}

export interface ContainerOptions {
  /** The directory that becomes the container's / (must hold its root file system). */
  root?: string;
  /** External mounts: key → path here (CRIU's ext_mnt / --external mnt[KEY]:PATH). */
  extMounts?: ReadonlyMap<string, string>;
  /** A network namespace file to join (an external one, runc's extRootNetNS), reachable from here. */
  joinNet?: string;
}

/**
 * The namespaces to create: where the root's ids differ from root_ids.
 * undefined for a plain (non-container) image set.
 */
export async function containerPlan(imagesDir: string): Promise<ContainerPlan | undefined> {
  const dir = await ImageDir.open(imagesDir);
  const inv: InventoryEntry = await dir.inventory();
  const pstree = await dir.pstree();
  const root = pstree[0];
  if (!root || !inv.root_ids) return undefined;
  const ids: TaskKobjIdsEntry = await dir.ids(root.pid);
  const differs = (k: keyof TaskKobjIdsEntry): boolean => ids[k] !== undefined && inv.root_ids![k] !== undefined && ids[k] !== inv.root_ids![k];
  if (!differs('pid_ns_id') && !differs('mnt_ns_id')) return undefined;
  const where = `${imagesDir}: pid ${root.pid}`;
  if (!differs('pid_ns_id') || root.pid !== 1) throw new UserError(`${where}: a container must be restored with its init as pid 1 of its own pid namespace`);
  if (differs('user_ns_id')) throw new UserError(`${where}: user namespaces are not supported`);
  if (differs('time_ns_id')) throw new UserError(`${where}: time namespaces are not supported`);
  let nsFlags = 0;
  if (differs('mnt_ns_id')) nsFlags |= CLONE.NEWNS;
  if (differs('uts_ns_id')) nsFlags |= CLONE.NEWUTS;
  if (differs('ipc_ns_id')) nsFlags |= CLONE.NEWIPC;
  if (differs('net_ns_id')) nsFlags |= CLONE.NEWNET;
  if (differs('cgroup_ns_id')) nsFlags |= CLONE.NEWCGROUP;
  const mounts = nsFlags & CLONE.NEWNS ? await dir.readEntries<MntEntry>(KIND.mnts, ids.mnt_ns_id!) : [];
  if (nsFlags & CLONE.NEWNS && mounts.length === 0) throw new UserError(`${where}: mountpoints-${ids.mnt_ns_id}.img is missing or empty`);
  let uts: ContainerPlan['uts'];
  if (nsFlags & CLONE.NEWUTS) {
    const e = await dir.readEntries<{ nodename: string; domainname: string }>(KIND.utsns, ids.uts_ns_id!);
    uts = e[0];
  }
  return { nsFlags, mounts, uts, dir };
}

/** Parents before children; the namespace's root mount first. */
function mountOrder(mounts: MntEntry[]): MntEntry[] {
  const ids = new Set(mounts.map((m) => m.mnt_id));
  const roots = mounts.filter((m) => !ids.has(m.parent_mnt_id));
  if (roots.length !== 1 || roots[0]!.mountpoint !== '/') {
    throw new UserError(`mountpoints image: expected one root mount at /, found ${roots.map((m) => m.mountpoint).join(', ') || 'none'}`);
  }
  const children = new Map<number, MntEntry[]>();
  for (const m of mounts) {
    if (m === roots[0]) continue;
    const l = children.get(m.parent_mnt_id) ?? [];
    l.push(m);
    children.set(m.parent_mnt_id, l);
  }
  const out: MntEntry[] = [];
  const walk = (m: MntEntry): void => {
    out.push(m);
    // mount ids grow with mount order: over-mounts come after what they cover.
    for (const c of (children.get(m.mnt_id) ?? []).sort((a, b) => a.mnt_id - b.mnt_id)) walk(c);
  };
  walk(roots[0]!);
  return out;
}

/**
 * Rebuilds the mount tree inside the root stub's new mount namespace and
 * pivots into it, then sets the UTS names. `task` is the root, still a stub.
 */
export function setupContainer(task: RemoteTask, plan: ContainerPlan, opts: ContainerOptions, log: (l: string) => void): void {
  const call = (what: string, nr: number, ...args: (bigint | number)[]): bigint => task.call(what, nr, ...args);
  // Strings go to the stub's scratch page, one after the other per call.
  const str = (...ss: (string | undefined)[]): bigint[] => {
    let off = 0n;
    return ss.map((s) => {
      if (s === undefined) return 0n;
      const a = task.putString(s, off);
      off += BigInt(Buffer.byteLength(s) + 1);
      off = (off + 7n) & ~7n;
      return a;
    });
  };
  if (opts.joinNet !== undefined) {
    // Before the mounts: sysfs shows the network namespace of who mounts it.
    if (plan.nsFlags & CLONE.NEWNET) throw new UserError(`the images have a network namespace of their own: an external one (${opts.joinNet}) cannot replace it`);
    const [p] = str(opts.joinNet);
    const fd = Number(call(`open(${opts.joinNet})`, SYS.openat, -100, p!, 0o2000000 /* O_CLOEXEC */, 0));
    call('setns(CLONE_NEWNET)', SYS.setns, fd, CLONE.NEWNET);
    call('close', SYS.close, fd);
  }
  if (plan.nsFlags & CLONE.NEWNS) {
    const root = opts.root;
    if (root === undefined || root === '') throw new UserError('restoring a container\'s mount namespace needs the root directory to restore into (CRIU\'s --root)');
    if (!existsSync(root)) throw new UserError(`root directory ${root} does not exist (ENOENT)`);
    const ext = opts.extMounts ?? new Map<string, string>();
    // Nothing we mount may propagate back to the host.
    let [a] = str('/');
    call('mount(/, MS_REC|MS_PRIVATE)', SYS.mount, 0, a!, 0, MS.REC | MS.PRIVATE, 0);
    // The root must be a mount point of its own for pivot_root.
    [a] = str(root);
    call(`mount(${root}, ${root}, MS_BIND|MS_REC)`, SYS.mount, a!, a!, 0, MS.BIND | MS.REC, 0);
    const done = new Map<number, { entry: MntEntry; target: string }>();
    for (const m of mountOrder(plan.mounts)) {
      const target = m.mountpoint === '/' ? root : join(root, m.mountpoint);
      if (m.mountpoint === '/') {
        done.set(m.mnt_id, { entry: m, target });
        continue;
      }
      const mflags = m.flags & MNT_MASK;
      const fs = m.fsname ?? FSNAME[m.fstype];
      let bind: string | undefined;
      if (m.ext_key !== undefined) {
        bind = ext.get(m.ext_key);
        if (bind === undefined) throw new UserError(`mount ${m.mountpoint}: external mount "${m.ext_key}" has no path here (pass it as ext_mnt / --external mnt[${m.ext_key}]:PATH)`);
      } else if (m.root !== '/') {
        // A bind of part of another mount of the same file system.
        const src = [...done.values()].find((d) => d.entry.root_dev === m.root_dev && d.entry.root === '/' && d.entry.mountpoint !== '/');
        if (!src) throw new UserError(`mount ${m.mountpoint}: bind of ${m.root} on a ${fs ?? 'file system'} that is not among the restored mounts`);
        bind = src.target + m.root;
      }
      if (bind !== undefined) {
        const [s, t] = str(bind, target);
        call(`mount(${bind}, ${target}, MS_BIND)`, SYS.mount, s!, t!, 0, MS.BIND | MS.REC, 0);
        if (mflags) call(`remount(${target})`, SYS.mount, 0, t!, 0, MS.REMOUNT | MS.BIND | mflags, 0);
      } else {
        if (fs === undefined || fs === 'cgroup' || m.fstype === 0) {
          throw new UserError(`mount ${m.mountpoint}: ${fs ?? `fstype ${m.fstype}`} cannot be recreated: pass it as an external mount`);
        }
        const opt = m.fstype === 6 && !/\bnewinstance\b/.test(m.options) ? [m.options, 'newinstance'].filter(Boolean).join(',') : m.options;
        const [s, t, f, o] = str(m.source || fs, target, fs, opt || undefined);
        // Writable first: a read-only tmpfs is filled, then made read-only.
        const sb = m.sb_flags ?? 0;
        call(`mount(${fs} on ${target})`, SYS.mount, s!, t!, f!, (sb & ~MS.RDONLY) | (mflags & ~MS.RDONLY), o ?? 0);
        if (m.fstype === 5) unpackTmpfs(plan.dir, m, task.pid, target);
        if (sb & MS.RDONLY) {
          const [t2, o2] = str(target, opt || undefined);
          call(`remount(${target}, superblock ro)`, SYS.mount, 0, t2!, 0, MS.REMOUNT | sb | (mflags & ~MS.RDONLY), o2 ?? 0);
        } else if (mflags & MS.RDONLY) {
          const [t2] = str(target);
          call(`remount(${target}, ro)`, SYS.mount, 0, t2!, 0, MS.REMOUNT | MS.BIND | mflags, 0);
        }
      }
      done.set(m.mnt_id, { entry: m, target });
    }
    const top = plan.mounts.find((m) => m.mountpoint === '/' && !plan.mounts.some((p) => p.mnt_id === m.parent_mnt_id));
    if (top && top.flags & MNT_MASK) {
      [a] = str(root);
      call(`remount(${root})`, SYS.mount, 0, a!, 0, MS.REMOUNT | MS.BIND | (top.flags & MNT_MASK), 0);
    }
    // pivot_root(".", "."): the old root ends up on top of the new one and is detached.
    [a] = str(root);
    call(`chdir(${root})`, SYS.chdir, a!);
    [a] = str('.');
    call('pivot_root(., .)', SYS.pivot_root, a!, a!);
    call('umount2(old root, MNT_DETACH)', SYS.umount2, a!, MNT_DETACH);
    [a] = str('/');
    call('chdir(/)', SYS.chdir, a!);
    log(`container: ${done.size} mounts restored under ${root}, pivoted into it`);
    mark('container: mounts restored');
  }
  if (plan.uts) {
    const [n, d] = str(plan.uts.nodename, plan.uts.domainname);
    call('sethostname', SYS.sethostname, n!, Buffer.byteLength(plan.uts.nodename));
    call('setdomainname', SYS.setdomainname, d!, Buffer.byteLength(plan.uts.domainname));
  }
}

/**
 * CRIU's tmpfs image: a gzipped tar, unpacked through the stub's /proc root
 * (in-process, plugin/images/tmpfs-tar.ts; tar itself for what that does not handle).
 */
function unpackTmpfs(dir: ImageDir, m: MntEntry, stubPid: number, target: string): void {
  const img = dir.pathOf(KIND.tmpfsDev, m.mnt_id);
  if (!existsSync(img)) return;
  const dest = `/proc/${stubPid}/root${target}`;
  try {
    try {
      unpackTar(readFileSync(img), dest, (path, mode, major, minor) => addon.mknod(path, mode, major, minor));
    } catch (e) {
      if (!(e instanceof TarUnsupported)) throw e;
      execFileSync('tar', ['--extract', '--gzip', '--no-unquote', '--no-wildcards', '--numeric-owner', '--preserve-permissions',
        '--file', img, '--directory', dest], { timeout: 60_000, stdio: ['ignore', 'ignore', 'pipe'] });
    }
    mark(`container: tmpfs ${m.mountpoint} unpacked`);
  } catch (e) {
    const err = (e as { stderr?: Buffer }).stderr?.toString().trim().split('\n')[0] || (e instanceof Error ? e.message : String(e));
    throw new UserError(`${img}: cannot unpack into ${m.mountpoint}: ${err}`);
  }
}
