// cgroup hierarchies as CRIU 4.2 names and reaches them (criu/cgroup.c,
// proc_parse.c): a task's memberships from /proc/PID/task/TID/cgroup (one
// "name:path" per hierarchy, sorted by name; "" is cgroup v2, "name=X" a
// named v1 hierarchy, "cpu,cpuacct" co-mounted controllers), the
// controllers of our own cgroup file, and a directory where each hierarchy
// is mounted (the mount in our namespace when one shows the whole
// hierarchy, else one we mount in a private temporary directory and
// detach again in close()).
import { addon } from '../native/addon.js';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../errors.js';

/** --manage-cgroups modes (CRIU's CG_MODE_*). */
export type CgroupMode = 'none' | 'props' | 'soft' | 'full' | 'strict' | 'ignore';

/** One line of a cgroup file: a hierarchy's name and the path in it. */
export interface CgMember {
  name: string;
  path: string;
}

/** A hierarchy as CRIU's cg_controller: its controller names ("" for cgroup v2, "name=X" for a named one). */
export interface Controller {
  cnames: string[];
}

const NAME = 'name=';

function parseCgroupText(text: string, skip: (name: string) => boolean): CgMember[] {
  const out: CgMember[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const a = line.indexOf(':');
    const b = a < 0 ? -1 : line.indexOf(':', a + 1);
    if (b < 0) throw new UserError(`cgroup file line "${line}": not ID:CONTROLLERS:PATH`);
    const name = line.slice(a + 1, b);
    if (skip(name)) continue;
    out.push({ name, path: line.slice(b + 1) });
  }
  // CRIU keeps them sorted by name (strcmp order).
  return out.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
}

/** A thread's memberships (CRIU's parse_thread_cgroup), hierarchies `skip` names left out. */
export function threadCgroups(pid: number | 'self', tid: number | undefined, skip: (name: string) => boolean = () => false): CgMember[] {
  const file = tid === undefined ? `/proc/${pid}/cgroup` : `/proc/${pid}/task/${tid}/cgroup`;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`${file}: cannot read the task's cgroups (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  return parseCgroupText(text, skip);
}

/**
 * The real controllers of our own cgroup file, in its order (CRIU's
 * collect_controllers): named hierarchies are left out (they are added when
 * a dumped task is found in one), co-mounted controllers are one entry.
 */
export function ownControllers(skip: (name: string) => boolean = () => false): Controller[] {
  const out: Controller[] = [];
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    if (line === '') continue;
    const parts = line.split(':');
    const names = parts[1] ?? '';
    if (skip(names)) continue;
    const cnames = names.split(',').filter((n) => !n.startsWith(NAME));
    if (cnames.length) out.push({ cnames });
  }
  return out;
}

/**
 * CRIU's cgroup_contains: whether every controller of `cnames` is in the
 * comma-separated `name` (a cgroup file's or a --cgroup-root's); cgroup v2
 * ([""]) only matches "".
 */
export function cgroupContains(cnames: readonly string[], name: string): boolean {
  if (cnames.length === 1 && cnames[0] === '') return name === '';
  if (cnames.length === 0) return false;
  const parts = name.split(',');
  return cnames.every((c) => parts.includes(c));
}

/** Which of `cnames` `name` covers (bit i for cnames[i]), as CRIU's mask argument. */
export function coveredMask(cnames: readonly string[], name: string): number {
  if (cnames.length === 1 && cnames[0] === '') return name === '' ? 1 : 0;
  const parts = name.split(',');
  let m = 0;
  cnames.forEach((c, i) => { if (parts.includes(c)) m |= 1 << i; });
  return m;
}

/** The controller a membership belongs to. */
export function controllerOf(controllers: readonly Controller[], name: string): Controller | undefined {
  return controllers.find((c) => cgroupContains(c.cnames, name));
}

/** How a hierarchy is named in messages: "cpu,cpuacct", "name=systemd", "unified" for v2. */
export function controllerLabel(c: Controller): string {
  return c.cnames.length === 1 && c.cnames[0] === '' ? 'unified' : c.cnames.join(',');
}

interface CgroupMount {
  fstype: string;
  root: string;
  point: string;
  options: string[];
}

function cgroupMounts(): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const fstype = right[0] ?? '';
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    out.push({ fstype, root: unescape(left[3] ?? ''), point: unescape(left[4] ?? ''), options: (right[2] ?? '').split(',') });
  }
  return out;
}

/** Controller names the kernel knows (/proc/cgroups). */
function knownSubsystems(): Set<string> {
  const out = new Set<string>();
  for (const line of readFileSync('/proc/cgroups', 'utf8').split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    out.add(line.split('\t')[0]!);
  }
  return out;
}

/**
 * A directory for each hierarchy (CRIU mounts a fresh instance of each;
 * an existing mount of the whole hierarchy is the same file system).
 * Mounts made here are detached in close().
 */
export class Hierarchies {
  private readonly dirs = new Map<string, string>();
  private readonly mounted: string[] = [];
  private mounts: CgroupMount[] | undefined;
  private subsys: Set<string> | undefined;

  /**
   * CRIU's --cgroup-yard: a directory with each hierarchy mounted in a
   * subdirectory named after its controllers ("cpu,cpuacct", "systemd" for
   * name=systemd, "unified" for v2). At dump a missing one is an error; at
   * restore it is created and mounted there (and left mounted, as CRIU).
   */
  constructor(private readonly yard?: { dir: string; mountMissing: boolean }) {}

  /** The directory the whole hierarchy of `c` is reachable at. */
  dir(c: Controller): string {
    const key = c.cnames.join(',');
    const known = this.dirs.get(key);
    if (known !== undefined) return known;
    if (this.yard) {
      const sub = join(this.yard.dir, c.cnames.map((n) => (n.startsWith(NAME) ? n.slice(NAME.length) : n === '' ? 'unified' : n)).join(','));
      if (!existsSync(sub)) {
        if (!this.yard.mountMissing) throw new UserError(`--cgroup-yard: ${sub} does not exist (ENOENT)`);
        try {
          mkdirSync(sub, { mode: 0o700 });
        } catch (e) {
          throw new UserError(`--cgroup-yard: cannot create ${sub} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
        }
        this.mountAt(c, sub);
      }
      this.dirs.set(key, sub);
      return sub;
    }
    this.mounts ??= cgroupMounts();
    const v2 = c.cnames.length === 1 && c.cnames[0] === '';
    const subsys = (this.subsys ??= knownSubsystems());
    // A v1 mount is this hierarchy when its controller options are exactly these.
    const ctls = (m: CgroupMount): string[] => m.options.filter((o) => o.startsWith(NAME) || subsys.has(o));
    const found = this.mounts.find((m) => m.root === '/' && (v2 ? m.fstype === 'cgroup2'
      : m.fstype === 'cgroup' && ctls(m).length === c.cnames.length && c.cnames.every((n) => ctls(m).includes(n))));
    const dir = found ? found.point : this.mount(c, v2);
    this.dirs.set(key, dir);
    return dir;
  }

  private mount(c: Controller, _v2: boolean): string {
    const dir = mkdtempSync(join(tmpdir(), 'lazy-restore-cgyard-'));
    try {
      this.mountAt(c, dir);
    } catch (e) {
      try { rmdirSync(dir); } catch { /* best effort */ }
      throw e;
    }
    this.mounted.push(dir);
    return dir;
  }

  private mountAt(c: Controller, dir: string): void {
    const v2 = c.cnames.length === 1 && c.cnames[0] === '';
    const named = c.cnames.some((n) => n.startsWith(NAME));
    const data = v2 ? '' : [...(named ? ['none'] : []), ...c.cnames].join(',');
    try {
      addon.mountFs('none', dir, v2 ? 'cgroup2' : 'cgroup', data);
    } catch (e) {
      throw new UserError(`cgroup hierarchy ${controllerLabel(c)}: cannot mount it on ${dir} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
  }

  /** Detaches and removes the mounts made here. */
  close(): void {
    for (const dir of this.mounted.splice(0)) {
      try { addon.umountDetach(dir); } catch { /* gone already */ }
      try { rmdirSync(dir); } catch { /* still busy: left for the system */ }
    }
    this.dirs.clear();
  }
}
