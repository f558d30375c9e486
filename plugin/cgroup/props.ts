// Which cgroup properties (files of a cgroup directory) a dump records, as
// CRIU 4.2's built-in lists (criu/cgroup-props.c): per v1 controller, the
// global v1 ones, the global v2 ones; and which of them must be written
// when the cgroup is created, before any task or child enters it
// (CRIU's special properties).
import { readFileSync } from 'node:fs';
import { ExitCode, UserError } from '../errors.js';

/** Properties recorded per v1 controller (CRIU's built-in table). */
const CONTROLLER_PROPS: Record<string, readonly string[]> = {
  cpu: ['cpu.shares', 'cpu.cfs_period_us', 'cpu.cfs_quota_us', 'cpu.rt_period_us', 'cpu.rt_runtime_us'],
  // limit_in_bytes before memsw.limit_in_bytes: restored in this order.
  memory: [
    'memory.limit_in_bytes', 'memory.memsw.limit_in_bytes', 'memory.swappiness', 'memory.soft_limit_in_bytes',
    'memory.move_charge_at_immigrate', 'memory.oom_control', 'memory.use_hierarchy', 'memory.kmem.limit_in_bytes',
    'memory.kmem.tcp.limit_in_bytes',
  ],
  cpuset: [
    'cpuset.cpus', 'cpuset.mems', 'cpuset.memory_migrate', 'cpuset.cpu_exclusive', 'cpuset.mem_exclusive',
    'cpuset.mem_hardwall', 'cpuset.memory_spread_page', 'cpuset.memory_spread_slab', 'cpuset.sched_load_balance',
    'cpuset.sched_relax_domain_level',
  ],
  blkio: ['blkio.weight'],
  freezer: [],
  perf_event: [],
  net_cls: ['net_cls.classid'],
  net_prio: ['net_prio.ifpriomap'],
  pids: ['pids.max'],
  devices: ['devices.list'],
};

/** Every v1 hierarchy's own files. */
const GLOBAL_V1 = ['cgroup.clone_children', 'notify_on_release', 'cgroup.procs', 'tasks'] as const;
/** cgroup v2's. */
const GLOBAL_V2 = ['cgroup.subtree_control', 'cgroup.max.descendants', 'cgroup.max.depth', 'cgroup.freeze', 'cgroup.type'] as const;

/** Per controller, the properties a dump records: CRIU's built-in table, changed by --cgroup-props(-file). */
export type PropsTable = ReadonlyMap<string, readonly string[]>;

export const BUILTIN_PROPS: PropsTable = new Map(Object.entries(CONTROLLER_PROPS));

/**
 * CRIU's --cgroup-props / --cgroup-props-file format (cgp_parse_stream), one
 * block per controller:
 *   "cpu":
 *    - "strategy": "replace"
 *    - "properties": ["cpu.shares", "cpu.cfs_period_us"]
 * "merge" appends to the controller's list, "replace" replaces it. Returns
 * the table with `text` applied; `what` names the option in errors.
 */
export function applyPropsStream(table: PropsTable, text: string, what: string): PropsTable {
  const out = new Map(table);
  const block = /"([^"]+)" *:\n - *"strategy": *"([^"]*)" *\n - *"properties": *\[ *((?:"[^"]+"(?: *, *"[^"]+")*)?)\] *(?:\n|$)/y;
  let at = 0;
  while (at < text.length) {
    block.lastIndex = at;
    const m = block.exec(text);
    if (!m) {
      const line = text.slice(0, at).split('\n').length;
      throw new UserError(`${what}: cannot parse the controller block at line ${line} (expected "CONTROLLER":\\n - "strategy": "merge|replace"\\n - "properties": ["NAME", ...])`, { exitCode: ExitCode.usage });
    }
    const [, name, strategy, list] = m;
    if (strategy !== 'merge' && strategy !== 'replace') throw new UserError(`${what}: unknown strategy "${strategy}" for controller ${name} (merge or replace)`, { exitCode: ExitCode.usage });
    const props = [...(list ?? '').matchAll(/"([^"]+)"/g)].map((x) => x[1]!);
    out.set(name!, strategy === 'merge' && out.has(name!) ? [...out.get(name!)!, ...props] : props);
    at = block.lastIndex;
  }
  return out;
}

/** The properties a dump reads in a directory of the hierarchy with these controllers, in CRIU's order. */
export function propsToDump(cnames: readonly string[], table: PropsTable = BUILTIN_PROPS): string[] {
  const own = cnames.flatMap((c) => table.get(c) ?? []);
  const v2 = cnames.length > 0 && cnames[0] === '';
  return [...own, ...(v2 ? GLOBAL_V2 : GLOBAL_V1)];
}

/**
 * Properties that cannot be set once the cgroup has tasks or children:
 * restored right after the directory is created (CRIU's special_props).
 */
const SPECIAL = new Set([
  'cpuset.cpus', 'cpuset.mems', 'devices.list', 'memory.kmem.limit_in_bytes', 'memory.swappiness',
  'memory.oom_control', 'memory.use_hierarchy', 'cgroup.type',
]);

export function isSpecialProp(name: string): boolean {
  return SPECIAL.has(name);
}

/** Files whose value is not recorded or written, only their owner and mode. */
export function isMembershipFile(name: string): boolean {
  return name === 'cgroup.procs' || name === 'tasks';
}

/**
 * The table a dump uses: the built-in one, then --cgroup-props (text), then
 * --cgroup-props-file (a file in the same format), as CRIU's cgp_init.
 */
export function propsTableFrom(stream: string | undefined, file: string | undefined): PropsTable {
  let t = BUILTIN_PROPS;
  if (stream !== undefined && stream !== '') t = applyPropsStream(t, stream, '--cgroup-props');
  if (file !== undefined && file !== '') {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new UserError(`--cgroup-props-file ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
    t = applyPropsStream(t, text, `--cgroup-props-file ${file}`);
  }
  return t;
}
