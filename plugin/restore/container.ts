// Restoring a container (images written by plugin/dump/container.ts or by
// CRIU): the namespaces the root had apart from its dumper (CRIU's rule:
// the root task's ids against inventory root_ids) are created with the
// root, which is born as pid 1 of a new pid namespace. Inside its new mount
// namespace the root (a ptraced stub, driven by injected syscalls) rebuilds
// the dumped mounts under the given root directory (CRIU's --root, runc's
// bind mount of the bundle's rootfs), unpacks each tmpfs from its
// tmpfs-dev-<s_dev>.tar.gz.img, binds external mounts (ext_mnt) from the
// paths the caller maps their keys to, pivots into the root and sets the
// UTS names. The network namespace is created empty (loopback down), as
// CRIU does with --empty-ns net, which runc asks for; a dump without it
// brings lo's state, addresses and routes (plugin/restore/netns.ts).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { ImageDir, KIND, type InventoryEntry, type TaskKobjIdsEntry } from '../images/index.js';
import { TarUnsupported, unpackTmpfs as unpackTar } from '../images/tmpfs-tar.js';
import { addon } from '../native/addon.js';
import type { NsStep } from '../native/types.js';
import { nsId } from '../dump/proc.js';
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
  /** The network namespace's id in the images, when the root has one of its own. */
  netId: number | undefined;
}

export interface ContainerOptions {
  /** The directory that becomes the container's / (must hold its root file system). */
  root?: string;
  /** External mounts: key → path here (CRIU's ext_mnt / --external mnt[KEY]:PATH). */
  extMounts?: ReadonlyMap<string, string>;
  /** A network namespace file to join (an external one, runc's extRootNetNS), reachable from here. */
  joinNet?: string;
  /** Leave the new network namespace empty even when the images describe it (CRIU's empty_ns with CLONE_NEWNET). */
  emptyNet?: boolean;
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
  return { nsFlags, mounts, uts, dir, netId: nsFlags & CLONE.NEWNET ? ids.net_ns_id : undefined };
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
 * The steps run on a thread of ours that joins the stub's namespaces
 * (addon nsRun: no ptrace round trip per call); only what must be the
 * stub's own is injected: joining an external network namespace, mounting
 * proc (a proc mount shows the pid namespace of its mounter) and its final
 * chdir into the new root.
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
  // The stub's namespaces our thread joins: those it does not share with us.
  const kinds = (['uts', 'ipc', 'net', 'cgroup', 'mnt'] as const).filter((k) => nsId(task.pid, k) !== nsId('self', k));
  let steps: NsStep[] = [];
  const flush = (): void => {
    if (!steps.length) return;
    const run = steps;
    steps = [];
    try {
      addon.nsRun(task.pid, kinds, run);
    } catch (e) {
      throw new UserError(`pid ${task.pid}: container set-up: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  };
  const mount = (what: string, src: string | undefined, target: string, fs: string | undefined, flags: number, data?: string): void => {
    steps.push({ sys: 'mount', what, ...(src !== undefined ? { a: src } : {}), b: target, ...(fs !== undefined ? { c: fs } : {}), flags, ...(data !== undefined ? { d: data } : {}) });
  };
  if (plan.nsFlags & CLONE.NEWNS) {
    if (!kinds.includes('mnt')) throw new Error(`pid ${task.pid}: the root stub has no mount namespace of its own`);
    const root = opts.root;
    if (root === undefined || root === '') throw new UserError('restoring a container\'s mount namespace needs the root directory to restore into (CRIU\'s --root)');
    if (!existsSync(root)) throw new UserError(`root directory ${root} does not exist (ENOENT)`);
    const ext = opts.extMounts ?? new Map<string, string>();
    // Nothing we mount may propagate back to the host.
    mount('mount(/, MS_REC|MS_PRIVATE)', undefined, '/', undefined, MS.REC | MS.PRIVATE);
    // The root must be a mount point of its own for pivot_root.
    mount(`mount(${root}, ${root}, MS_BIND|MS_REC)`, root, root, undefined, MS.BIND | MS.REC);
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
        mount(`mount(${bind}, ${target}, MS_BIND)`, bind, target, undefined, MS.BIND | MS.REC);
        if (mflags) mount(`remount(${target})`, undefined, target, undefined, MS.REMOUNT | MS.BIND | mflags);
      } else {
        if (fs === undefined || fs === 'cgroup' || m.fstype === 0) {
          throw new UserError(`mount ${m.mountpoint}: ${fs ?? `fstype ${m.fstype}`} cannot be recreated: pass it as an external mount`);
        }
        const opt = m.fstype === 6 && !/\bnewinstance\b/.test(m.options) ? [m.options, 'newinstance'].filter(Boolean).join(',') : m.options;
        // Writable first: a read-only tmpfs is filled, then made read-only.
        const sb = m.sb_flags ?? 0;
        const flags = (sb & ~MS.RDONLY) | (mflags & ~MS.RDONLY);
        if (m.fstype === 1) {
          // proc shows the pid namespace of its mounter: the stub mounts it.
          flush();
          const [s, t, f, o] = str(m.source || fs, target, fs, opt || undefined);
          call(`mount(${fs} on ${target})`, SYS.mount, s!, t!, f!, flags, o ?? 0);
        } else {
          mount(`mount(${fs} on ${target})`, m.source || fs, target, fs, flags, opt || undefined);
        }
        if (m.fstype === 5) {
          flush();
          unpackTmpfs(plan.dir, m, task.pid, target);
        }
        if (sb & MS.RDONLY) {
          mount(`remount(${target}, superblock ro)`, undefined, target, undefined, MS.REMOUNT | sb | (mflags & ~MS.RDONLY), opt || undefined);
        } else if (mflags & MS.RDONLY) {
          mount(`remount(${target}, ro)`, undefined, target, undefined, MS.REMOUNT | MS.BIND | mflags);
        }
      }
      done.set(m.mnt_id, { entry: m, target });
    }
    const top = plan.mounts.find((m) => m.mountpoint === '/' && !plan.mounts.some((p) => p.mnt_id === m.parent_mnt_id));
    if (top && top.flags & MNT_MASK) mount(`remount(${root})`, undefined, root, undefined, MS.REMOUNT | MS.BIND | (top.flags & MNT_MASK));
    // pivot_root(".", "."): the old root ends up on top of the new one and is
    // detached. The kernel moves the root of every task of the namespace
    // that had the old one (the stub) to the new one.
    steps.push({ sys: 'chdir', what: `chdir(${root})`, a: root });
    steps.push({ sys: 'pivot_root', what: 'pivot_root(., .)', a: '.', b: '.' });
    steps.push({ sys: 'umount2', what: 'umount2(old root, MNT_DETACH)', a: '.', flags: MNT_DETACH });
  }
  if (plan.uts) {
    steps.push({ sys: 'sethostname', what: 'sethostname', a: plan.uts.nodename });
    steps.push({ sys: 'setdomainname', what: 'setdomainname', a: plan.uts.domainname });
  }
  flush();
  if (plan.nsFlags & CLONE.NEWNS) {
    const [a] = str('/');
    call('chdir(/)', SYS.chdir, a!);
    // The stub's root must now be the container's.
    const want = statSync(opts.root!);
    const got = statSync(`/proc/${task.pid}/root`);
    if (got.dev !== want.dev || got.ino !== want.ino) throw new Error(`pid ${task.pid}: after pivot_root its root is not ${opts.root!}`);
    log(`container: ${plan.mounts.length} mounts restored under ${opts.root!}, pivoted into it`);
    mark('container: mounts restored');
  }
}

/**
 * CRIU's tmpfs image: a gzipped tar, unpacked through the stub's /proc root
 * (in-process, plugin/images/tmpfs-tar.ts; tar itself for what that does not handle).
 */
function unpackTmpfs(dir: ImageDir, m: MntEntry, stubPid: number, target: string): void {
  // CRIU names it by the superblock's device (root_dev); our images before
  // 2026-12-03 by mount id; CRIU's older format is tmpfs-<mnt id>.tar.gz.img.
  const img = [dir.pathOf(KIND.tmpfsDev, m.root_dev), dir.pathOf(KIND.tmpfsDev, m.mnt_id), join(dir.dir, `tmpfs-${m.mnt_id}.tar.gz.img`)].find((p) => existsSync(p));
  if (img === undefined) return;
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
