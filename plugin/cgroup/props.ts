// Which cgroup properties (files of a cgroup directory) a dump records, as
// CRIU 4.2's built-in lists (criu/cgroup-props.c): per v1 controller, the
// global v1 ones, the global v2 ones; and which of them must be written
// when the cgroup is created, before any task or child enters it
// (CRIU's special properties).

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

/** The properties a dump reads in a directory of the hierarchy with these controllers, in CRIU's order. */
export function propsToDump(cnames: readonly string[]): string[] {
  const own = cnames.flatMap((c) => CONTROLLER_PROPS[c] ?? []);
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
