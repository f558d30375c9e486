// Image kinds: magic numbers, header layout, file-name patterns and the
// protobuf message each kind holds. Names are the ones `crit` prints in its
// "magic" key, so JSON produced here matches crit's.

/** First magic of every normal image (not inventory, not service images). */
export const IMG_COMMON = 0x54564319;
/** First magic of the service images (stats-*, irmap-cache). */
export const IMG_SERVICE = 0x55105940;
/** inventory.img_version that every current image set carries. */
export const IMG_VERSION_V1_1 = 2;

export type HeaderKind = 'inventory' | 'common' | 'service' | 'raw';

/**
 * How the raw bytes after an entry (EXTRA) are sized; see IMAGE-FORMAT §1.4.
 * Each rule names the protobuf fields it needs by number, so entries can be
 * skipped even for message types we do not model.
 */
export type ExtraRule =
  | { kind: 'field'; field: number } // length = value of one varint field
  | { kind: 'tcp-stream' } // inq_len (1) + outq_len (3)
  | { kind: 'ipc-shm' } // size (2) rounded up to 4, unless in_pagemaps (3)
  | { kind: 'ipc-sem' } // nsems (2) * u16, rounded up to 8
  | { kind: 'ipc-msg' } // qnum (3) times: u32 LEN + ipc_msg, then its msize (2) rounded up to 8
  | { kind: 'bpfmap' } // keys_bytes (2) + values_bytes (3)
  | { kind: 'ghost' }; // first entry: contents to EOF unless chunks (9); chunk entries: len (1)

export interface ImageKind {
  /** crit's name for the magic, e.g. "CORE". */
  readonly name: string;
  /** Image magic (second magic for common/service images); 0 for raw images. */
  readonly magic: number;
  readonly header: HeaderKind;
  /** File-name pattern; `%` stands for the id (decimal unless `hexId`). */
  readonly pattern: string;
  readonly hexId?: boolean;
  /** Protobuf message type of the entries, when we model it. */
  readonly message?: string;
  /** Message type of the first entry when it differs (pagemap head, working-set head). */
  readonly headMessage?: string;
  readonly extra?: ExtraRule;
  /** Legacy kinds CRIU only reads as a fall-back; never chosen by magic lookup. */
  readonly legacy?: boolean;
}

/** Magic of lr-workingset-<pid>.img ("LRWS"). Not a CRIU magic. */
export const LR_WORKINGSET_MAGIC = 0x4c525753;
/** Magic of lr-checksums-<pages_id>.img ("LRCS"). Not a CRIU magic. */
export const LR_CHECKSUMS_MAGIC = 0x4c524353;

function k(name: string, magic: number, pattern: string, rest: Partial<ImageKind> = {}): ImageKind {
  return { name, magic, header: 'common', pattern, ...rest };
}
function raw(name: string, pattern: string): ImageKind {
  return { name, magic: 0, header: 'raw', pattern };
}

/** Every image kind we know, in CRIU's table order. */
export const IMAGE_KINDS: readonly ImageKind[] = [
  k('INVENTORY', 0x58313116, 'inventory.img', { header: 'inventory', message: 'inventory_entry' }),
  k('FDINFO', 0x56213732, 'fdinfo-%.img', { message: 'fdinfo_entry' }),
  k('PAGEMAP', 0x56084025, 'pagemap-%.img', { message: 'pagemap_entry', headMessage: 'pagemap_head' }),
  k('PAGEMAP', 0x56084025, 'pagemap-shmem-%.img', { message: 'pagemap_entry', headMessage: 'pagemap_head' }),
  k('REG_FILES', 0x50363636, 'reg-files.img', { message: 'reg_file_entry' }),
  k('EXT_FILES', 0x59255641, 'ext-files.img', { message: 'ext_file_entry' }),
  k('NS_FILES', 0x61394011, 'ns-files.img'),
  k('EVENTFD_FILE', 0x44523722, 'eventfd.img', { message: 'eventfd_file_entry' }),
  k('EVENTPOLL_FILE', 0x45023858, 'eventpoll.img', { message: 'eventpoll_file_entry' }),
  k('EVENTPOLL_TFD', 0x44433746, 'eventpoll-tfd.img', { message: 'eventpoll_tfd_entry' }),
  k('SIGNALFD', 0x57323820, 'signalfd.img', { message: 'signalfd_entry' }),
  k('INOTIFY_FILE', 0x48424431, 'inotify.img', { message: 'inotify_file_entry' }),
  k('INOTIFY_WD', 0x54562009, 'inotify-wd.img', { message: 'inotify_wd_entry' }),
  k('FANOTIFY_FILE', 0x55096122, 'fanotify.img', { message: 'fanotify_file_entry' }),
  k('FANOTIFY_MARK', 0x56506035, 'fanotify-mark.img', { message: 'fanotify_mark_entry' }),
  k('CORE', 0x55053847, 'core-%.img', { message: 'core_entry' }),
  k('IDS', 0x54432030, 'ids-%.img', { message: 'task_kobj_ids_entry' }),
  k('MM', 0x57492820, 'mm-%.img', { message: 'mm_entry' }),
  k('VMAS', 0x54123737, 'vmas-%.img', { message: 'vma_entry' }),
  k('PIPES', 0x56513555, 'pipes.img', { message: 'pipe_entry' }),
  k('PIPES_DATA', 0x56453709, 'pipes-data.img', { message: 'pipe_data_entry', extra: { kind: 'field', field: 2 } }),
  k('FIFO', 0x58364939, 'fifo.img'),
  k('FIFO_DATA', 0x59333054, 'fifo-data.img', { message: 'pipe_data_entry', extra: { kind: 'field', field: 2 } }),
  k('PSTREE', 0x50273030, 'pstree.img', { message: 'pstree_entry' }),
  k('SIGACT', 0x55344201, 'sigacts-%.img', { message: 'sa_entry' }),
  k('UNIXSK', 0x54373943, 'unixsk.img'),
  k('INETSK', 0x56443851, 'inetsk.img', { message: 'inet_sk_entry' }),
  k('PACKETSK', 0x60454618, 'packetsk.img'),
  k('NETLINK_SK', 0x58005614, 'netlinksk.img'),
  k('SK_QUEUES', 0x56264026, 'sk-queues.img', { message: 'sk_packet_entry', extra: { kind: 'field', field: 2 } }),
  k('ITIMERS', 0x57464056, 'itimers-%.img', { message: 'itimer_entry' }),
  k('POSIX_TIMERS', 0x52603957, 'posix-timers-%.img', { message: 'posix_timer_entry' }),
  k('CREDS', 0x54023547, 'creds-%.img', { message: 'creds_entry' }),
  k('UTSNS', 0x54473203, 'utsns-%.img', { message: 'utsns_entry' }),
  k('IPC_VAR', 0x53115007, 'ipcns-var-%.img', { message: 'ipc_var_entry' }),
  k('IPCNS_SHM', 0x46283044, 'ipcns-shm-%.img', { message: 'ipc_shm_entry', extra: { kind: 'ipc-shm' } }),
  k('IPCNS_MSG', 0x55453737, 'ipcns-msg-%.img', { message: 'ipc_msg_entry', extra: { kind: 'ipc-msg' } }),
  k('IPCNS_SEM', 0x59573019, 'ipcns-sem-%.img', { message: 'ipc_sem_entry', extra: { kind: 'ipc-sem' } }),
  k('FS', 0x51403912, 'fs-%.img', { message: 'fs_entry' }),
  k('REMAP_FPATH', 0x59133954, 'remap-fpath.img', { message: 'remap_file_path_entry' }),
  k('GHOST_FILE', 0x52583605, 'ghost-file-%.img', {
    hexId: true, headMessage: 'ghost_file_entry', message: 'ghost_chunk_entry', extra: { kind: 'ghost' },
  }),
  k('MEMFD_INODE', 0x48453499, 'memfd.img', { message: 'memfd_inode_entry' }),
  k('TCP_STREAM', 0x51465506, 'tcp-stream-%.img', { hexId: true, message: 'tcp_stream_entry', extra: { kind: 'tcp-stream' } }),
  k('MNTS', 0x55563928, 'mountpoints-%.img', { message: 'mnt_entry' }),
  k('NETDEV', 0x57373951, 'netdev-%.img', { message: 'net_device_entry' }),
  k('NETNS', 0x55933752, 'netns-%.img', { message: 'netns_entry' }),
  raw('IFADDR', 'ifaddr-%.img'),
  raw('ROUTE', 'route-%.img'),
  raw('ROUTE6', 'route6-%.img'),
  raw('RULE', 'rule-%.img'),
  raw('IPTABLES', 'iptables-%.img'),
  raw('IP6TABLES', 'ip6tables-%.img'),
  raw('NFTABLES', 'nftables-%.img'),
  raw('TMPFS_IMG', 'tmpfs-%.tar.gz.img'),
  raw('TMPFS_DEV', 'tmpfs-dev-%.tar.gz.img'),
  k('AUTOFS', 0x49353943, 'autofs-%.img'),
  k('BINFMT_MISC', 0x67343323, 'binfmt-misc-%.img', { legacy: true }),
  k('BINFMT_MISC', 0x67343323, 'binfmt-misc.img'),
  k('TTY_FILES', 0x59433025, 'tty.img', { message: 'tty_file_entry' }),
  k('TTY_INFO', 0x59453036, 'tty-info.img', { message: 'tty_info_entry' }),
  k('TTY_DATA', 0x59413026, 'tty-data.img', { message: 'tty_data_entry' }),
  k('FILE_LOCKS', 0x54323616, 'filelocks.img', { message: 'file_lock_entry' }),
  k('RLIMIT', 0x57113925, 'rlimit-%.img', { message: 'rlimit_entry' }),
  raw('PAGES', 'pages-%.img'),
  k('SIGNAL', 0x59255647, 'signal-s-%.img', { message: 'siginfo_entry' }),
  k('SIGNAL', 0x59255647, 'signal-p-%.img', { message: 'siginfo_entry', legacy: true }),
  k('TUNFILE', 0x57143751, 'tunfile.img'),
  k('CGROUP', 0x59383330, 'cgroup.img', { message: 'cgroup_entry' }),
  k('TIMERFD', 0x50493712, 'timerfd.img', { message: 'timerfd_entry' }),
  k('CPUINFO', 0x61404013, 'cpuinfo.img'),
  k('SECCOMP', 0x64413049, 'seccomp.img', { message: 'seccomp_entry' }),
  k('USERNS', 0x55474906, 'userns-%.img'),
  raw('NETNF_CT', 'netns-ct-%.img'),
  raw('NETNF_EXP', 'netns-exp-%.img'),
  k('FILES', 0x56303138, 'files.img', { message: 'file_entry' }),
  k('TIMENS', 0x43114433, 'timens-%.img', { message: 'timens_entry' }),
  k('PIDNS', 0x61157326, 'pidns-%.img'),
  k('BPFMAP_FILE', 0x57506142, 'bpfmap-file.img'),
  k('BPFMAP_DATA', 0x64324033, 'bpfmap-data.img', { extra: { kind: 'bpfmap' } }),
  k('APPARMOR', 0x59423047, 'apparmor.img'),
  k('PIDFD', 0x54435556, 'pidfd.img'),
  k('STATS', 0x57093306, 'stats-%', { header: 'service', message: 'stats_entry' }),
  k('IRMAP_CACHE', 0x57004059, 'irmap-cache', { header: 'service' }),
  k('LR_WORKINGSET', LR_WORKINGSET_MAGIC, 'lr-workingset-%.img', {
    message: 'working_set_range', headMessage: 'working_set_head',
  }),
  k('LR_CHECKSUMS', LR_CHECKSUMS_MAGIC, 'lr-checksums-%.img', { message: 'page_checksums_entry' }),
];

interface PatternMatcher { kind: ImageKind; re: RegExp; fixed: boolean }

const matchers: PatternMatcher[] = IMAGE_KINDS.map((kind) => {
  const fixed = !kind.pattern.includes('%');
  const escaped = kind.pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const id = kind.name === 'STATS' ? '([a-z]+)' : kind.hexId ? '([0-9a-f]+)' : '(\\d+)';
  return { kind, re: new RegExp(`^${escaped.replace('%', id)}$`), fixed };
});

const byMagic = new Map<number, ImageKind>();
for (const kind of IMAGE_KINDS) {
  if (kind.header !== 'raw' && !kind.legacy && !byMagic.has(kind.magic)) byMagic.set(kind.magic, kind);
}
const byName = new Map<string, ImageKind>();
for (const kind of IMAGE_KINDS) if (!byName.has(kind.name)) byName.set(kind.name, kind);

/** The kind an image magic denotes (for magics shared by several kinds, the current one). */
export function kindByMagic(magic: number): ImageKind | undefined {
  return byMagic.get(magic >>> 0);
}

/** The kind for a crit magic name ("CORE", "PAGEMAP", …). */
export function kindByName(name: string): ImageKind | undefined {
  return byName.get(name);
}

export interface ParsedFileName {
  kind: ImageKind;
  /** The key in the name (pid, tid, files_id, pages_id, …); undefined for fixed names. */
  id: string | undefined;
}

/**
 * Identifies a file by name. More specific patterns win (pagemap-shmem-1.img
 * is a shmem pagemap, not a pagemap with id "shmem-1"), which holds because
 * ids are numeric and the literal parts never overlap otherwise.
 */
export function parseFileName(fileName: string): ParsedFileName | undefined {
  for (const m of matchers) {
    const r = m.re.exec(fileName);
    if (r) return { kind: m.kind, id: m.fixed ? undefined : r[1] };
  }
  return undefined;
}

/** File name of an image of `kind` keyed by `id` (ignored for fixed names). */
export function imageFileName(kind: ImageKind, id?: number | bigint | string): string {
  if (!kind.pattern.includes('%')) return kind.pattern;
  if (id === undefined) throw new TypeError(`image ${kind.pattern} needs an id`);
  const s = typeof id === 'string' ? id : kind.hexId ? id.toString(16) : id.toString(10);
  return kind.pattern.replace('%', s);
}

/** Looks a kind up by name and throws for names not in the table (a programming error). */
export function requireKind(name: string, pattern?: string): ImageKind {
  const kind = pattern === undefined
    ? byName.get(name)
    : IMAGE_KINDS.find((x) => x.name === name && x.pattern === pattern);
  if (!kind) throw new TypeError(`unknown image kind ${name}${pattern ? ` (${pattern})` : ''}`);
  return kind;
}

export const KIND = {
  inventory: requireKind('INVENTORY'),
  pstree: requireKind('PSTREE'),
  core: requireKind('CORE'),
  ids: requireKind('IDS'),
  mm: requireKind('MM'),
  fs: requireKind('FS'),
  files: requireKind('FILES'),
  fdinfo: requireKind('FDINFO'),
  pagemap: requireKind('PAGEMAP', 'pagemap-%.img'),
  pagemapShmem: requireKind('PAGEMAP', 'pagemap-shmem-%.img'),
  pages: requireKind('PAGES'),
  seccomp: requireKind('SECCOMP'),
  cgroup: requireKind('CGROUP'),
  mnts: requireKind('MNTS'),
  utsns: requireKind('UTSNS'),
  ipcVar: requireKind('IPC_VAR'),
  ipcShm: requireKind('IPCNS_SHM'),
  ipcMsg: requireKind('IPCNS_MSG'),
  ipcSem: requireKind('IPCNS_SEM'),
  tmpfsDev: requireKind('TMPFS_DEV'),
  timens: requireKind('TIMENS'),
  ttyInfo: requireKind('TTY_INFO'),
  fileLocks: requireKind('FILE_LOCKS'),
  memfdInode: requireKind('MEMFD_INODE'),
  tcpStream: requireKind('TCP_STREAM'),
  skQueues: requireKind('SK_QUEUES'),
  stats: requireKind('STATS'),
  workingSet: requireKind('LR_WORKINGSET'),
  checksums: requireKind('LR_CHECKSUMS'),
  remapFpath: requireKind('REMAP_FPATH'),
  ghostFile: requireKind('GHOST_FILE'),
  netdev: requireKind('NETDEV'),
  ifaddr: requireKind('IFADDR'),
  route: requireKind('ROUTE'),
  route6: requireKind('ROUTE6'),
} as const;
