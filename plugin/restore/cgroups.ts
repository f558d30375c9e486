// Restoring cgroup membership and properties from cgroup.img, as CRIU 4.2
// does (criu/cgroup.c prepare_cgroup, restore_task_cgroup,
// prepare_cgroup_properties, restore_freezer_state), by --manage-cgroups mode:
//   ignore  nothing: the tree stays in the restorer's cgroups;
//   none    the cgroups must exist; no property, owner or mode is touched;
//   props   the cgroups must exist; their properties are restored;
//   soft    missing cgroups are created with their properties, existing
//           ones keep theirs (the default);
//   full    missing cgroups are created, every cgroup gets its properties;
//   strict  as full, but a cgroup that already exists is an error.
// --cgroup-root [CTRL:]/PATH moves what the image holds under a new root
// (the sets' paths and the top directories are rewritten). Each process is
// moved into its set when it differs from its parent's (children inherit),
// a thread into its own set in threaded hierarchies (v1, or v2 "threaded");
// properties that only take before tasks arrive (cpuset.cpus, devices.list,
// ...) are written when a cgroup is created, the others once every task is
// in, freezer.state last, right before the tree is released.
import { chmodSync, chownSync, closeSync, constants as fsConstants, mkdirSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { cgroupContains, controllerLabel, coveredMask, Hierarchies, threadCgroups, type CgroupMode } from '../cgroup/hierarchy.js';
import { isMembershipFile, isSpecialProp } from '../cgroup/props.js';
import { ImageDir } from '../images/imagedir.js';
import { mark } from '../phases.js';
import type { CgControllerEntry, CgroupDirEntry, CgroupEntry, CgroupPerms, CgroupPropEntry, CgSetEntry } from '../images/types.js';

export interface CgroupRoot {
  /** The hierarchy as a cgroup file names it ("cpu", "name=systemd", "" for v2); undefined: every hierarchy. */
  ctrl: string | undefined;
  path: string;
}

export interface CgroupRestoreOptions {
  /** --manage-cgroups (default soft). */
  mode?: CgroupMode;
  /** --cgroup-root, in the order given. */
  roots?: readonly CgroupRoot[];
  /** --cgroup-yard: the hierarchies are (or get) mounted there. */
  yard?: string;
  log?: (line: string) => void;
}

function errCode(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? String(e);
}

function joinRel(parent: string, name: string): string {
  const n = name.replace(/^\/+/, '');
  if (n === '') return parent;
  return parent === '' ? n : `${parent}/${n}`;
}

/**
 * CRIU's rewrite_cgroup_roots: each hierarchy's new root (its own
 * --cgroup-root, else the global one) replaces the top directories' names
 * and the start of every set path under them.
 */
export function rewriteRoots(e: CgroupEntry, roots: readonly CgroupRoot[]): void {
  // CRIU keeps the per-hierarchy roots in a list it prepends to; the last global one wins.
  const own = roots.filter((r) => r.ctrl !== undefined).reverse();
  const global = [...roots].reverse().find((r) => r.ctrl === undefined)?.path;
  for (const ctrl of e.controllers) {
    let mask = (1 << ctrl.cnames.length) - 1;
    let newroot: string | undefined;
    for (const o of own) {
      const covered = coveredMask(ctrl.cnames, o.ctrl!) & mask;
      if (covered) {
        if (newroot !== undefined && newroot !== o.path) throw new UserError(`--cgroup-root: different roots for one hierarchy ${controllerLabel(ctrl)}: ${newroot} and ${o.path}`);
        newroot = o.path;
        mask &= ~covered;
      }
      if (!mask) break;
    }
    newroot ??= global;
    if (newroot === undefined) continue;
    for (const head of ctrl.dirs) rewriteSets(e.sets, ctrl, head, newroot);
  }
}

function rewriteSets(sets: CgSetEntry[], ctrl: CgControllerEntry, head: CgroupDirEntry, newroot: string): void {
  const dir = head.dir_name;
  let renamed = false;
  for (const set of sets) {
    for (const m of set.ctls) {
      if (!cgroupContains(ctrl.cnames, m.name) || !m.path.slice(1).startsWith(dir)) continue;
      // CRIU appends the rest as is; a '/' keeps a sub-cgroup of a top-level
      // directory ("" head) from running into the new root's name.
      const rest = m.path.slice(dir.length + 1);
      m.path = rest === '' || rest.startsWith('/') || newroot.endsWith('/') ? `${newroot}${rest}` : `${newroot}/${rest}`;
      renamed = true;
    }
  }
  if (renamed) head.dir_name = newroot;
}

interface Ctl {
  entry: CgControllerEntry;
  base: string;
}

export class CgroupRestorer {
  private readonly hier: Hierarchies;
  private readonly ctls: Ctl[] = [];
  private freezer: { prop: CgroupPropEntry; path: string } | undefined;
  private readonly log: (line: string) => void;

  private constructor(private readonly entry: CgroupEntry, private readonly mode: CgroupMode, private readonly rootSet: number, log: (line: string) => void, yard: string | undefined) {
    this.log = log;
    this.hier = new Hierarchies(yard !== undefined ? { dir: yard, mountMissing: true } : undefined);
  }

  /**
   * Reads cgroup.img and prepares every cgroup it holds (before any task
   * exists). Undefined when there is nothing to do: ignore mode, no image,
   * or no sets (every task was in the dumper's cgroups).
   */
  static async open(imagesDir: string, opts: CgroupRestoreOptions): Promise<CgroupRestorer | undefined> {
    const mode = opts.mode ?? 'soft';
    if (mode === 'ignore') return undefined;
    const dir = await ImageDir.open(imagesDir);
    const e = await dir.cgroups();
    if (!e || e.sets.length === 0) return undefined;
    const inv = await dir.inventory();
    rewriteRoots(e, opts.roots ?? []);
    mark('cgroups: image read');
    const r = new CgroupRestorer(e, mode, inv.root_cg_set ?? 0, opts.log ?? (() => {}), opts.yard);
    try {
      r.prepare();
      mark('cgroups: prepared');
    } catch (err) {
      r.close();
      throw err;
    }
    return r;
  }

  /** The set of the tasks' parent at the top: the dumper's (inventory root_cg_set). */
  get dumperSet(): number {
    return this.rootSet;
  }

  private prepare(): void {
    this.log(`cgroups: ${this.entry.sets.length} sets, ${this.entry.controllers.length} hierarchies (--manage-cgroups=${this.mode})`);
    for (const c of this.entry.controllers) {
      if (c.cnames.length < 1) throw new UserError('cgroup.img: a hierarchy without controller names');
      const ctl: Ctl = { entry: c, base: this.hier.dir(c) };
      this.ctls.push(ctl);
      this.prepareDirs(ctl, '', c.dirs);
    }
  }

  private prepareDirs(ctl: Ctl, parent: string, dirs: CgroupDirEntry[]): void {
    for (const d of dirs) {
      const rel = joinRel(parent, d.dir_name);
      const path = join(ctl.base, rel);
      const label = `${controllerLabel(ctl.entry)}:/${rel}`;
      let exists = true;
      try {
        statSync(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new UserError(`cgroup ${label}: ${errCode(e)}`);
        exists = false;
      }
      if (!exists) {
        if (this.mode === 'none' || this.mode === 'props') throw new UserError(`cgroup ${label} does not exist (--manage-cgroups=${this.mode} creates none) (ENOENT)`);
        try {
          mkdirSync(path, { recursive: true, mode: 0o755 });
        } catch (e) {
          throw new UserError(`cgroup ${label}: cannot create it (${errCode(e)})`);
        }
        this.log(`cgroups: created ${label}`);
        this.perms(path, d.dir_perms, label);
        for (const p of d.properties) if (isSpecialProp(p.name)) this.restoreSpecial(path, p);
      } else {
        if (this.mode === 'strict') throw new UserError(`cgroup ${label} already exists (--manage-cgroups=strict) (EEXIST)`);
        // soft and none keep an existing cgroup's properties.
        if (this.mode === 'soft' || this.mode === 'none') d.properties = [];
        if (this.mode !== 'none') this.perms(path, d.dir_perms, label);
      }
      this.prepareDirs(ctl, rel, d.children);
    }
  }

  private perms(path: string, p: CgroupPerms | undefined, label: string): void {
    if (!p) return;
    try {
      chownSync(path, p.uid, p.gid);
      chmodSync(path, p.mode & 0o7777);
    } catch (e) {
      throw new UserError(`cgroup ${label}: cannot set owner and mode of ${path} (${errCode(e)})`);
    }
  }

  /** CRIU's restore_special_property. */
  private restoreSpecial(dir: string, p: CgroupPropEntry): void {
    if (p.name === 'memory.swappiness' && p.value === '60') return;
    if (p.name === 'memory.oom_control' && p.value === '0') return;
    if (p.name === 'devices.list') {
      // The list is rebuilt: deny everything, then allow each line (one write per line).
      const perms = p.perms ? { ...p.perms, mode: 0o200 } : undefined;
      this.writeProp(dir, { name: 'devices.deny', value: 'a', ...(perms ? { perms } : {}) }, false, false);
      if (p.value === '') return;
      this.writeProp(dir, { name: 'devices.allow', value: p.value, ...(perms ? { perms } : {}) }, true, false);
      return;
    }
    this.writeProp(dir, p, false, false);
  }

  /** CRIU's restore_cgroup_prop. */
  private writeProp(dir: string, p: CgroupPropEntry, splitLines: boolean, skipFails: boolean): void {
    const file = join(dir, p.name);
    const subtree = p.name === 'cgroup.subtree_control';
    let fd: number;
    try {
      fd = openSync(file, subtree ? fsConstants.O_RDWR : fsConstants.O_WRONLY);
    } catch (e) {
      throw new UserError(`cgroup property ${file}: cannot open it (${errCode(e)})`);
    }
    try {
      if (p.perms) {
        try {
          chownSync(file, p.perms.uid, p.perms.gid);
          chmodSync(file, p.perms.mode & 0o7777);
        } catch (e) {
          throw new UserError(`cgroup property ${file}: cannot set owner and mode (${errCode(e)})`);
        }
      }
      if (isMembershipFile(p.name)) return;
      if (p.name === 'cgroup.type' && p.value !== 'threaded') return;
      const put = (value: string): void => {
        try {
          writeSync(fd, value);
        } catch (e) {
          const code = errCode(e);
          if (code === 'EOPNOTSUPP' && p.name === 'memory.kmem.limit_in_bytes') return; // deprecated by the kernel
          if (skipFails) {
            this.log(`cgroups: cannot write "${value}" to ${file} (${code}), skipped`);
            return;
          }
          throw new UserError(`cgroup property ${file}: cannot write "${value}" (${code})`);
        }
      };
      if (subtree) {
        const buf = Buffer.alloc(1023);
        const n = readSync(fd, buf, 0, buf.length, 0);
        const current = buf.toString('utf8', 0, n).trim();
        const words = [
          ...(current ? current.split(/\s+/).map((c) => `-${c}`) : []),
          ...(p.value ? p.value.split(' ').map((c) => `+${c}`) : []),
        ];
        if (words.length) put(words.join(' '));
        return;
      }
      if (splitLines) {
        for (const line of p.value.split('\n')) put(line);
      } else {
        put(p.value);
      }
    } finally {
      closeSync(fd);
    }
  }

  private ctlOf(name: string, what: string): Ctl {
    const c = this.ctls.find((x) => cgroupContains(x.entry.cnames, name));
    if (!c) throw new UserError(`cgroup.img: no hierarchy for ${name || 'cgroup v2'} (${what})`);
    return c;
  }

  private set(id: number, what: string): CgSetEntry {
    const s = this.entry.sets.find((x) => x.id === id);
    if (!s) throw new UserError(`cgroup.img: no cgroup set ${id} (${what})`);
    return s;
  }

  /**
   * Moves a process (its pid as we see it) into cgroup set `id` unless that
   * is the set it inherits (`inherited`: its parent's, the dumper's for the root).
   */
  moveProcess(pid: number, id: number | undefined, inherited: number, what: string): void {
    if (!id || id === inherited) return;
    // Hierarchies it is in already are left alone: a write to cgroup.procs
    // takes the kernel's threadgroup lock even when nothing moves, which
    // costs an RCU grace period (10-15 ms here) on the first write. (runc
    // puts the restorer into the container's cgroups, so a runc restore
    // has nothing to move.)
    const now = new Map(threadCgroups(pid, undefined).map((m) => [m.name, m.path]));
    for (const m of this.set(id, what).ctls) {
      if (now.get(m.name) === m.path) continue;
      const c = this.ctlOf(m.name, what);
      const file = join(c.base, m.path, 'cgroup.procs');
      try {
        writeOnce(file, String(pid));
      } catch (e) {
        throw new UserError(`${what}: cannot move pid ${pid} into cgroup ${controllerLabel(c.entry)}:${m.path} (${errCode(e)})`);
      }
    }
  }

  /** Moves a thread into its own set in the threaded hierarchies (CRIU's cgroupd). */
  moveThread(tid: number, id: number | undefined, processSet: number | undefined, what: string): void {
    if (!id || id === processSet) return;
    for (const m of this.set(id, what).ctls) {
      const c = this.ctlOf(m.name, what);
      if (c.entry.is_threaded !== true) continue;
      const v2 = c.entry.cnames[0] === '';
      const file = join(c.base, m.path, v2 ? 'cgroup.threads' : 'tasks');
      try {
        writeOnce(file, String(tid));
      } catch (e) {
        throw new UserError(`${what}: cannot move thread ${tid} into cgroup ${controllerLabel(c.entry)}:${m.path} (${errCode(e)})`);
      }
    }
  }

  /** Every task is in: the properties of every cgroup that kept them (CRIU's prepare_cgroup_properties). */
  restoreProperties(): void {
    for (const c of this.ctls) this.dirProps(c, '', c.entry.dirs);
  }

  private dirProps(c: Ctl, parent: string, dirs: CgroupDirEntry[]): void {
    for (const d of dirs) {
      const rel = joinRel(parent, d.dir_name);
      if (d.dir_name !== '') {
        const path = join(c.base, rel);
        for (const p of d.properties) {
          if (p.name === 'freezer.state') {
            this.freezer = { prop: p, path };
            continue;
          }
          if (isSpecialProp(p.name)) continue;
          if (p.name === 'net_prio.ifpriomap') {
            // Only the interfaces with a priority; one write each, failures skipped (interfaces differ between hosts).
            const lines = p.value.split('\n').filter((l) => l !== '' && Number.parseInt(l.slice(l.indexOf(' ') + 1), 10) !== 0);
            if (lines.length) this.writeProp(path, { ...p, value: lines.join('\n') }, true, true);
            continue;
          }
          this.writeProp(path, p, false, false);
        }
      }
      this.dirProps(c, rel, d.children);
    }
  }

  /** The freezer cgroup's state at dump time (a paused container stays paused), right before the release. */
  restoreFreezerState(): void {
    if (!this.freezer) return;
    this.writeProp(this.freezer.path, this.freezer.prop, false, false);
    this.log(`cgroups: ${join(this.freezer.path, 'freezer.state')} set to ${this.freezer.prop.value}`);
  }

  /** Detaches any hierarchy mounted for the restore. */
  close(): void {
    this.hier.close();
  }
}

/** One write(2) of `value` to an existing cgroup file (O_WRONLY, as CRIU). */
function writeOnce(file: string, value: string): void {
  const fd = openSync(file, fsConstants.O_WRONLY);
  try {
    writeSync(fd, value);
  } finally {
    closeSync(fd);
  }
}
