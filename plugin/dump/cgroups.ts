// cgroup.img and each thread's cg_set, as CRIU 4.2 writes them
// (criu/cgroup.c dump_thread_cgroup, collect_cgroups, dump_cgroups):
// - every distinct list of memberships (/proc/PID/task/TID/cgroup) is a
//   cgroup set with an id; the dumper's own set comes first (id 1, the
//   inventory's root_cg_set) and is not written;
// - the first time a dumped thread is in a new set, each of its cgroups is
//   walked (unless --manage-cgroups=ignore): the directory and everything
//   below it, with the properties CRIU records (plugin/cgroup/props.ts),
//   their owner and mode;
// - with --freeze-cgroup, the v1 freezer's state before the dump froze it
//   is recorded as freezer.state of the freezer hierarchy's first directory;
// - when every task is in the dumper's cgroups nothing is written (an empty
//   cgroup.img): the restore then leaves the tree in the restorer's.
import { closeSync, fstatSync, openSync, readSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import {
  cgroupContains, controllerLabel, Hierarchies, ownControllers, threadCgroups, type CgMember, type CgroupMode,
} from '../cgroup/hierarchy.js';
import { propsToDump, type PropsTable } from '../cgroup/props.js';
import type { ImageDir } from '../images/imagedir.js';
import type { CgroupDirEntry, CgroupEntry, CgroupPerms, CgroupPropEntry } from '../images/types.js';

export interface CgroupDumpOptions {
  /** --manage-cgroups at dump time: 'ignore' writes the sets without any directory. Default soft. */
  mode?: CgroupMode;
  /** --cgroup-dump-controller: only these hierarchies (as the cgroup file names them); empty: all. */
  dumpControllers?: readonly string[];
  /** --cgroup-root at dump time: walk from this path instead of the task's (per hierarchy, or for all with ctrl undefined). */
  roots?: readonly { ctrl: string | undefined; path: string }[];
  /** --freeze-cgroup: the freezer's state before the dump froze it (THAWED or FROZEN). */
  freezerState?: () => string;
  /** --cgroup-props / --cgroup-props-file applied to CRIU's built-in lists (plugin/cgroup/props.ts propsTableFrom). */
  props?: PropsTable;
  /** --cgroup-yard: the hierarchies are mounted there (plugin/cgroup/hierarchy.ts). */
  yard?: string;
  log?: (line: string) => void;
}

interface Dir {
  path: string;
  perms: CgroupPerms;
  props: CgroupPropEntry[];
  children: Dir[];
}

interface Ctl {
  cnames: string[];
  heads: Dir[];
  threaded: boolean;
}

interface CgSet {
  id: number;
  ctls: CgMember[];
}

const LLONG_MAX = (1n << 63n) - 1n;

function isSubpath(path: string, sub: string): boolean {
  if (!path.startsWith(sub)) return false;
  if (sub.endsWith('/')) return true;
  const end = path.charAt(sub.length);
  return end === '' || end === '/';
}

type Found = { kind: 'exact'; dir: Dir } | { kind: 'parent'; dir: Dir } | { kind: 'none' };

/** CRIU's find_dir: the directory itself, the deepest one above it, or none. */
function findDir(path: string, dirs: Dir[]): Found {
  for (const d of dirs) {
    if (d.path === path) return { kind: 'exact', dir: d };
    if (isSubpath(path, d.path)) {
      const r = findDir(path, d.children);
      return r.kind === 'none' ? { kind: 'parent', dir: d } : r;
    }
  }
  return { kind: 'none' };
}

function permsOf(st: { mode: number; uid: number; gid: number }): CgroupPerms {
  return { mode: st.mode, uid: st.uid, gid: st.gid };
}

/** A property as CRIU's read_cgroup_prop: at most 1023 bytes, one trailing newline off, LLONG_MAX as -1. */
function readProp(file: string, name: string): CgroupPropEntry {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new UserError(`cgroup property ${file}: cannot open it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    const perms = permsOf(fstatSync(fd));
    if (name === 'cgroup.procs' || name === 'tasks') return { name, value: '', perms };
    const buf = Buffer.alloc(1023);
    let n: number;
    try {
      n = readSync(fd, buf, 0, buf.length, null);
    } catch (e) {
      throw new UserError(`cgroup property ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
    let value = buf.toString('utf8', 0, n);
    if (value.endsWith('\n')) value = value.slice(0, -1);
    const num = /^\s*[+-]?\d+/.exec(value);
    if (num && BigInt(num[0].trim()) >= LLONG_MAX) value = '-1';
    if (name === 'memory.oom_control') {
      const m = /^oom_kill_disable (-?\d+)/.exec(value);
      if (!m) throw new UserError(`cgroup property ${file}: no oom_kill_disable in "${value}"`);
      value = String(Number(m[1]));
    }
    return { name, value, perms };
  } finally {
    closeSync(fd);
  }
}

export class CgroupCollector {
  private readonly skip: (name: string) => boolean;
  private readonly ctls: Ctl[];
  private readonly sets: CgSet[] = [];
  private readonly hier: Hierarchies;
  private readonly mode: CgroupMode;
  private readonly log: (line: string) => void;
  private nextId = 1;
  private rootSet: number | undefined;
  /** The dumper's own set: the inventory's root_cg_set. */
  readonly dumperSet: number;

  constructor(private readonly opts: CgroupDumpOptions = {}) {
    const only = opts.dumpControllers ?? [];
    this.skip = (name) => only.length > 0 && !only.includes(name);
    this.mode = opts.mode ?? 'soft';
    this.hier = new Hierarchies(opts.yard !== undefined ? { dir: opts.yard, mountMissing: false } : undefined);
    this.log = opts.log ?? (() => {});
    this.ctls = ownControllers(this.skip).map((c) => ({ cnames: c.cnames, heads: [], threaded: false }));
    this.dumperSet = this.setOf(threadCgroups('self', undefined, this.skip), false);
  }

  /** The cg_set of a dumped thread (the root's leader first: its set is the root set). */
  threadSet(pid: number, tid: number): number {
    const id = this.setOf(threadCgroups(pid, tid, this.skip), true);
    this.rootSet ??= id;
    return id;
  }

  private setOf(ctls: CgMember[], collect: boolean): number {
    const same = this.sets.find((s) => s.ctls.length === ctls.length && s.ctls.every((c, i) => c.name === ctls[i]!.name && c.path === ctls[i]!.path));
    if (same) return same.id;
    const set: CgSet = { id: this.nextId++, ctls };
    this.sets.push(set);
    if (collect) this.collect(set);
    return set.id;
  }

  /** CRIU's collect_cgroups for a new set. */
  private collect(set: CgSet): void {
    for (const cc of set.ctls) {
      let ctl = this.ctls.find((c) => cgroupContains(c.cnames, cc.name));
      if (!ctl) {
        // Only named hierarchies may be added this way.
        if (!cc.name.startsWith('name=')) throw new UserError(`cgroup controller ${cc.name} not found (it is not in the dumper's /proc/self/cgroup)`);
        ctl = { cnames: [cc.name], heads: [], threaded: false };
        this.ctls.push(ctl);
      }
      if (this.mode === 'ignore') continue;
      let root = cc.path;
      const global = this.opts.roots?.find((r) => r.ctrl === undefined);
      if (global) root = global.path;
      const own = this.opts.roots?.find((r) => r.ctrl === cc.name);
      if (own) root = own.path;
      const base = this.hier.dir(ctl);
      const start = root === '/' || root === '' ? '/' : root.replace(/\/+$/, '');
      this.walk(ctl, base, start);
      if (this.opts.freezerState && cc.name === 'freezer' && ctl.heads.length) {
        // As CRIU: one entry per head, all on the first head (there is one head in practice).
        const head = ctl.heads[0]!;
        const file = join(head.path === '/' ? base : join(base, head.path), 'freezer.state');
        for (let i = 0; i < ctl.heads.length; i++) head.props.push({ ...readProp(file, 'freezer.state'), value: this.opts.freezerState() });
      }
    }
  }

  /** ftw from `path` (relative to the hierarchy): every directory, parents first. */
  private walk(ctl: Ctl, base: string, path: string): void {
    const full = path === '/' ? base : join(base, path);
    let st;
    try {
      st = statSync(full);
    } catch (e) {
      throw new UserError(`cgroup ${controllerLabel(ctl)}:${path}: cannot walk it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
    if (!st.isDirectory()) return;
    const found = findDir(path, ctl.heads);
    if (found.kind !== 'exact') {
      const dir: Dir = { path, perms: permsOf(st), props: [], children: [] };
      for (const name of propsToDump(ctl.cnames, this.opts.props)) {
        const file = join(full, name);
        try {
          statSync(file);
        } catch {
          continue; // not on this kernel
        }
        const prop = readProp(file, name);
        if ((name === 'cgroup.type' && prop.value === 'threaded') || name === 'tasks') ctl.threaded = true;
        dir.props.push(prop);
      }
      if (found.kind === 'parent') found.dir.children.push(dir);
      else ctl.heads.push(dir);
    }
    let entries;
    try {
      entries = readdirSync(full, { withFileTypes: true });
    } catch (e) {
      throw new UserError(`cgroup ${controllerLabel(ctl)}:${path}: cannot list it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
    for (const e of entries) if (e.isDirectory()) this.walk(ctl, base, path === '/' ? `/${e.name}` : `${path}/${e.name}`);
  }

  /** cgroup.img's entry; undefined when every task is in the dumper's set. */
  entry(): CgroupEntry | undefined {
    if (this.rootSet === this.dumperSet && this.sets.length === 1) return undefined;
    const toEntry = (d: Dir, parent: string | undefined): CgroupDirEntry => ({
      dir_name: parent === undefined || parent === '/' ? d.path.slice(1) : d.path.slice(parent.length + 1),
      children: d.children.map((c) => toEntry(c, d.path)),
      properties: d.props,
      dir_perms: d.perms,
    });
    return {
      sets: this.sets.filter((s) => s.id !== this.dumperSet).map((s) => ({ id: s.id, ctls: s.ctls.map((c) => ({ name: c.name, path: c.path })) })),
      controllers: this.ctls.map((c) => ({ cnames: c.cnames, dirs: c.heads.map((h) => toEntry(h, undefined)), is_threaded: c.threaded })),
    };
  }

  /** Writes cgroup.img (empty when there is nothing to restore, as CRIU). */
  async write(dir: ImageDir): Promise<void> {
    try {
      const e = this.entry();
      if (e) {
        const n = (ds: CgroupDirEntry[]): number => ds.reduce((a, d) => a + 1 + n(d.children), 0);
        this.log(`cgroup.img: ${e.sets.length} cgroup sets, ${e.controllers.length} hierarchies, ${e.controllers.reduce((a, c) => a + n(c.dirs), 0)} directories`);
      }
      await dir.writeCgroups(e ? [e] : []);
    } finally {
      this.hier.close();
    }
  }

  /** Detaches any hierarchy mounted for the walk (also done by write()). */
  close(): void {
    this.hier.close();
  }
}
