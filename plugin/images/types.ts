// TypeScript shapes of the image messages (proto/*.proto), with CRIU's
// snake_case field names — the same keys `crit decode` prints. uint64/int64
// fields are bigint, 32-bit fields number, bytes Buffer, enums number,
// repeated fields arrays (always present after a read; may be omitted when
// writing), optional fields `?`. Also the constants other areas need (the
// memory ones, PE_*, VMA_*, MAP_*, PROT_*, PAGE_SIZE, are in memory.ts).

// ---- constants ------------------------------------------------------------

/** enum fd_types. */
export const FdType = {
  UND: 0, REG: 1, PIPE: 2, FIFO: 3, INETSK: 4, UNIXSK: 5, EVENTFD: 6, EVENTPOLL: 7,
  INOTIFY: 8, SIGNALFD: 9, PACKETSK: 10, TTY: 11, FANOTIFY: 12, NETLINKSK: 13, NS: 14,
  TUNF: 15, EXT: 16, TIMERFD: 17, MEMFD: 18, BPFMAP: 19, PIDFD: 20,
  CTL_TTY: 65534, AUTOFS_PIPE: 65535,
} as const;

/** enum core_entry.march. */
export const March = { UNKNOWN: 0, X86_64: 1, ARM: 2, AARCH64: 3, PPC64: 4, S390: 5, MIPS: 6, LOONGARCH64: 7, RISCV64: 8 } as const;
/** enum user_x86_regs_mode. */
export const UserX86RegsMode = { NATIVE: 1, COMPAT: 2 } as const;
/** enum seccomp_mode. */
export const SeccompMode = { disabled: 0, strict: 1, filter: 2 } as const;
/** enum lsmtype. */
export const LsmType = { NO_LSM: 0, SELINUX: 1, APPARMOR: 2 } as const;
/** enum TtyType. */
export const TtyType = { UNKNOWN: 0, PTY: 1, CONSOLE: 2, VT: 3, CTTY: 4, EXT_TTY: 5, SERIAL: 6 } as const;
/** enum remap_type. */
export const RemapType = { LINKED: 0, GHOST: 1, PROCFS: 2 } as const;
/** enum checksum_algorithm (lazy-restore.proto). */
export const ChecksumAlgorithm = { CRC32C: 1 } as const;

/** task_core_entry.task_state values CRIU writes. */
export const TASK_ALIVE = 1;
export const TASK_DEAD = 2;
export const TASK_STOPPED = 3;

// ---- inventory / pstree / ids --------------------------------------------

export interface PluginsEntry { plugins: string[] }

export interface InventoryEntry {
  img_version: number;
  fdinfo_per_id?: boolean;
  root_ids?: TaskKobjIdsEntry;
  ns_per_id?: boolean;
  root_cg_set?: number;
  lsmtype?: number;
  dump_uptime?: bigint;
  pre_dump_mode?: number;
  tcp_close?: boolean;
  network_lock_method?: number;
  plugins_entry?: PluginsEntry;
  dump_criu_run_id?: string;
  allow_uprobes?: boolean;
}

export interface PstreeEntry {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  threads: number[];
}

export interface TaskKobjIdsEntry {
  vm_id: number;
  files_id: number;
  fs_id: number;
  sighand_id: number;
  pid_ns_id?: number;
  net_ns_id?: number;
  ipc_ns_id?: number;
  uts_ns_id?: number;
  mnt_ns_id?: number;
  user_ns_id?: number;
  cgroup_ns_id?: number;
  time_ns_id?: number;
}

// ---- core ------------------------------------------------------------------

export interface UserX86RegsEntry {
  r15: bigint; r14: bigint; r13: bigint; r12: bigint;
  bp: bigint; bx: bigint; r11: bigint; r10: bigint; r9: bigint; r8: bigint;
  ax: bigint; cx: bigint; dx: bigint; si: bigint; di: bigint;
  orig_ax: bigint; ip: bigint; cs: bigint; flags: bigint; sp: bigint; ss: bigint;
  fs_base: bigint; gs_base: bigint; ds: bigint; es: bigint; fs: bigint; gs: bigint;
  mode?: number;
}

export interface UserX86CetEntry { cet: bigint; ssp: bigint }

export interface UserX86XsaveEntry {
  xstate_bv: bigint;
  ymmh_space: number[];
  bndreg_state: bigint[];
  bndcsr_state: bigint[];
  opmask_reg: bigint[];
  zmm_upper: bigint[];
  hi16_zmm: bigint[];
  pkru: number[];
  cet?: UserX86CetEntry;
}

export interface UserX86FpregsEntry {
  cwd: number;
  swd: number;
  twd: number;
  fop: number;
  rip: bigint;
  rdp: bigint;
  mxcsr: number;
  mxcsr_mask: number;
  st_space: number[];
  xmm_space: number[];
  padding: number[];
  xsave?: UserX86XsaveEntry;
}

export interface UserDescT {
  entry_number: number;
  base_addr: number;
  limit: number;
  seg_32bit: boolean;
  contents_h: boolean;
  contents_l: boolean;
  read_exec_only: boolean;
  limit_in_pages: boolean;
  seg_not_present: boolean;
  usable: boolean;
}

export interface ThreadInfoX86 {
  clear_tid_addr: bigint;
  gpregs: UserX86RegsEntry;
  fpregs: UserX86FpregsEntry;
  tls: UserDescT[];
}

export interface RlimitEntry { cur: bigint; max: bigint }
export interface TaskRlimitsEntry { rlimits: RlimitEntry[] }

export interface ItimerEntry { isec: bigint; iusec: bigint; vsec: bigint; vusec: bigint }

export interface PosixTimerEntry {
  it_id: number;
  clock_id: number;
  si_signo: number;
  it_sigev_notify: number;
  sival_ptr: bigint;
  overrun: number;
  isec: bigint;
  insec: bigint;
  vsec: bigint;
  vnsec: bigint;
  notify_thread_id?: number;
}

export interface TaskTimersEntry {
  real: ItimerEntry;
  virt: ItimerEntry;
  prof: ItimerEntry;
  posix: PosixTimerEntry[];
}

export interface SiginfoEntry { siginfo: Buffer }
export interface SignalQueueEntry { signals: SiginfoEntry[] }

export interface SaEntry {
  sigaction: bigint;
  flags: bigint;
  restorer: bigint;
  mask: bigint;
  compat_sigaction?: boolean;
  mask_extended?: bigint;
}

export interface TaskCoreEntry {
  task_state: number;
  exit_code: number;
  personality: number;
  flags: number;
  blk_sigset: bigint;
  comm: string;
  timers?: TaskTimersEntry;
  rlimits?: TaskRlimitsEntry;
  cg_set?: number;
  signals_s?: SignalQueueEntry;
  old_seccomp_mode?: number;
  old_seccomp_filter?: number;
  loginuid?: number;
  oom_score_adj?: number;
  sigactions: SaEntry[];
  child_subreaper?: boolean;
  blk_sigset_extended?: bigint;
  stop_signo?: number;
  membarrier_registration_mask?: number;
}

export interface ThreadSasEntry { ss_sp: bigint; ss_size: bigint; ss_flags: number }

export interface CredsEntry {
  uid: number; gid: number; euid: number; egid: number;
  suid: number; sgid: number; fsuid: number; fsgid: number;
  cap_inh: number[];
  cap_prm: number[];
  cap_eff: number[];
  cap_bnd: number[];
  secbits: number;
  groups: number[];
  lsm_profile?: string;
  lsm_sockcreate?: string;
  apparmor_data?: Buffer;
  no_new_privs?: number;
  cap_amb: number[];
}

export interface RseqEntry {
  rseq_abi_pointer: bigint;
  rseq_abi_size: number;
  signature: number;
  rseq_cs_pointer?: bigint;
}

export interface ThreadCoreEntry {
  futex_rla: bigint;
  futex_rla_len: number;
  sched_nice?: number;
  sched_policy?: number;
  sched_prio?: number;
  blk_sigset?: bigint;
  sas?: ThreadSasEntry;
  pdeath_sig?: number;
  signals_p?: SignalQueueEntry;
  creds?: CredsEntry;
  seccomp_mode?: number;
  seccomp_filter?: number;
  comm?: string;
  blk_sigset_extended?: bigint;
  rseq_entry?: RseqEntry;
  cg_set?: number;
}

/** Register state of architectures we do not support (contents not modelled). */
export type OtherArchThreadInfo = Record<string, never>;

export interface CoreEntry {
  mtype: number;
  thread_info?: ThreadInfoX86;
  tc?: TaskCoreEntry;
  ids?: TaskKobjIdsEntry;
  thread_core?: ThreadCoreEntry;
  ti_arm?: OtherArchThreadInfo;
  ti_aarch64?: OtherArchThreadInfo;
  ti_ppc64?: OtherArchThreadInfo;
  ti_s390?: OtherArchThreadInfo;
  ti_mips?: OtherArchThreadInfo;
  ti_loongarch64?: OtherArchThreadInfo;
  ti_riscv64?: OtherArchThreadInfo;
}

// ---- memory ------------------------------------------------------------------

export interface VmaEntry {
  start: bigint;
  end: bigint;
  pgoff: bigint;
  shmid: bigint;
  prot: number;
  flags: number;
  status: number;
  fd: bigint;
  madv?: bigint;
  fdflags?: number;
}

export interface AioRingEntry { id: bigint; nr_req: number; ring_len: number }

export interface MmEntry {
  mm_start_code: bigint;
  mm_end_code: bigint;
  mm_start_data: bigint;
  mm_end_data: bigint;
  mm_start_stack: bigint;
  mm_start_brk: bigint;
  mm_brk: bigint;
  mm_arg_start: bigint;
  mm_arg_end: bigint;
  mm_env_start: bigint;
  mm_env_end: bigint;
  exe_file_id: number;
  mm_saved_auxv: bigint[];
  vmas: VmaEntry[];
  dumpable?: number;
  aios: AioRingEntry[];
  thp_disabled?: boolean;
}

export interface PagemapHead { pages_id: number }

export interface PagemapEntry {
  vaddr: bigint;
  /** Pre-4.2 count; we write it equal to nr_pages (0 when that does not fit 32 bits). */
  compat_nr_pages: number;
  in_parent?: boolean;
  flags?: number;
  nr_pages?: bigint;
}

// ---- files -------------------------------------------------------------------

export interface FownEntry { uid: number; euid: number; signum: number; pid_type: number; pid: number }

export interface RegFileEntry {
  id: number;
  flags: number;
  pos: bigint;
  fown: FownEntry;
  name: string;
  mnt_id?: number;
  size?: bigint;
  ext?: boolean;
  mode?: number;
  build_id: number[];
  checksum?: number;
  checksum_config?: number;
  checksum_parameter?: number;
}

export interface PipeEntry { id: number; pipe_id: number; flags: number; fown: FownEntry }
export interface PipeDataEntry { pipe_id: number; bytes: number; size?: number }
/** A FIFO's fd (fifo.proto): the pipe inode and the reg_file_entry of its path. */
export interface FifoEntry { id: number; pipe_id: number; regf_id?: number }
export interface ExtFileEntry { id: number; fown: FownEntry }

export interface TtyFileEntry { id: number; tty_info_id: number; flags: number; fown: FownEntry; regf_id?: number }

export interface WinsizeEntry { ws_row: number; ws_col: number; ws_xpixel: number; ws_ypixel: number }

export interface TermiosEntry {
  c_iflag: number; c_oflag: number; c_cflag: number; c_lflag: number;
  c_line: number; c_ispeed: number; c_ospeed: number;
  c_cc: number[];
}

export interface TtyPtyEntry { index: number }

export interface TtyInfoEntry {
  id: number;
  type: number;
  locked: boolean;
  exclusive: boolean;
  packet_mode: boolean;
  sid: number;
  pgrp: number;
  rdev: number;
  termios?: TermiosEntry;
  termios_locked?: TermiosEntry;
  winsize?: WinsizeEntry;
  pty?: TtyPtyEntry;
  dev?: number;
  uid?: number;
  gid?: number;
}

export interface TtyDataEntry { tty_id: number; data: Buffer }

/** memfd_file_entry (files.img, type MEMFD): one open memfd (or the file of a memfd/shared-anonymous VMA). */
export interface MemfdFileEntry { id: number; flags: number; pos: bigint; fown: FownEntry; inode_id: number }

/** memfd_inode_entry (memfd.img): one shmem object; its pages are in pagemap-shmem-<shmid>.img. */
export interface MemfdInodeEntry {
  name: string;
  uid: number;
  gid: number;
  size: bigint;
  shmid: number;
  seals: number;
  inode_id: bigint;
  hugetlb_flag?: number;
  mode?: number;
}

/** File kinds whose contents we do not model yet: only their id. */
export interface OpaqueFileEntry { id: number }

export interface SkOptsEntry {
  so_sndbuf: number; so_rcvbuf: number;
  so_snd_tmo_sec: bigint; so_snd_tmo_usec: bigint; so_rcv_tmo_sec: bigint; so_rcv_tmo_usec: bigint;
  reuseaddr?: boolean; so_priority?: number; so_rcvlowat?: number; so_mark?: number;
  so_passcred?: boolean; so_passsec?: boolean; so_dontroute?: boolean; so_no_check?: boolean;
  so_bound_dev?: string; so_filter: bigint[]; so_reuseport?: boolean; so_broadcast?: boolean; so_keepalive?: boolean;
  tcp_keepcnt?: number; tcp_keepidle?: number; tcp_keepintvl?: number;
  so_oobinline?: number; so_linger?: number; so_buf_lock?: number;
}

export interface TcpOptsEntry { cork?: boolean; nodelay?: boolean; keepcnt?: number; keepidle?: number; keepintvl?: number }

export interface IpOptsRawEntry { hdrincl?: boolean; nodefrag?: boolean; checksum?: boolean; icmpv_filter: number[] }
export interface IpOptsEntry { freebind?: boolean; raw?: IpOptsRawEntry; pktinfo?: boolean; tos?: number; ttl?: number }

/** sk_shutdown */
export const SkShutdown = { NONE: 0, READ: 1, WRITE: 2, BOTH: 3 } as const;

export interface InetSkEntry {
  id: number; ino: number; family: number; type: number; proto: number; state: number;
  src_port: number; dst_port: number; flags: number; backlog: number;
  /** Address bytes (network order) read as little-endian u32 words: 1 (IPv4) or 4 (IPv6). */
  src_addr: number[]; dst_addr: number[];
  fown: FownEntry; opts: SkOptsEntry;
  v6only?: boolean; ip_opts?: IpOptsEntry; ifname?: string; ns_id?: number; shutdown?: number; tcp_opts?: TcpOptsEntry;
}

export interface FilePermsEntry { mode: number; uid: number; gid: number }

/** unix_sk_entry (sk-unix.proto). */
export interface UnixSkEntry {
  id: number; ino: number; type: number; state: number; flags: number; uflags: number; backlog: number;
  /** Inode number of the peer (0: none). */
  peer: number;
  fown: FownEntry; opts: SkOptsEntry;
  /** Bound address bytes (abstract names start with a NUL byte); empty when unbound. */
  name: Buffer;
  shutdown?: number; file_perms?: FilePermsEntry; name_dir?: string; deleted?: boolean; ns_id?: number; mnt_id?: number;
}

/** uflags of unix_sk_entry: the entry describes a socket outside the tree. */
export const USK_EXTERN = 1;

/** sk_packet_entry (sk-packet.proto): one queued message; its bytes follow in the image. */
export interface SkPacketEntry { id_for: number; length: number; scm: { type: number; rights: number[] }[] }

export interface TcpStreamEntry {
  inq_len: number; inq_seq: number; outq_len: number; outq_seq: number;
  opt_mask: number; snd_wscale: number; mss_clamp: number; rcv_wscale?: number; timestamp?: number;
  cork?: boolean; nodelay?: boolean; unsq_len?: number;
  snd_wl1?: number; snd_wnd?: number; max_window?: number; rcv_wnd?: number; rcv_wup?: number;
}

export interface EventfdFileEntry { id: number; flags: number; fown: FownEntry; counter: bigint }

export interface EventpollTfdEntry { id: number; tfd: number; events: number; data: bigint; dev?: number; inode?: bigint; pos?: bigint }
export interface EventpollFileEntry { id: number; flags: number; fown: FownEntry; tfd: EventpollTfdEntry[] }

export interface SignalfdEntry { id: number; flags: number; fown: FownEntry; sigmask: bigint }

/** filelocks.img (file-lock.proto): one lock held by a dumped process. */
export interface FileLockEntry { flag: number; type: number; pid: number; fd: number; start: bigint; len: bigint }

export interface TimerfdEntry {
  id: number; flags: number; fown: FownEntry; clockid: number; ticks: bigint; settime_flags: number;
  vsec: bigint; vnsec: bigint; isec: bigint; insec: bigint;
}

export interface FhEntry { bytes: number; type: number; handle: bigint[]; path?: string; mnt_id?: number }
export interface InotifyWdEntry {
  id: number; i_ino: bigint; mask: number; ignored_mask: number; s_dev: number; wd: number; f_handle: FhEntry;
}
export interface InotifyFileEntry { id: number; flags: number; fown: FownEntry; wd: InotifyWdEntry[] }

export interface FileEntry {
  type: number;
  id: number;
  reg?: RegFileEntry;
  isk?: InetSkEntry;
  nsf?: OpaqueFileEntry;
  psk?: OpaqueFileEntry;
  nlsk?: OpaqueFileEntry;
  efd?: EventfdFileEntry;
  epfd?: EventpollFileEntry;
  sgfd?: SignalfdEntry;
  tunf?: OpaqueFileEntry;
  tfd?: TimerfdEntry;
  ify?: InotifyFileEntry;
  ffy?: OpaqueFileEntry;
  ext?: ExtFileEntry;
  usk?: UnixSkEntry;
  fifo?: FifoEntry;
  pipe?: PipeEntry;
  tty?: TtyFileEntry;
  memfd?: MemfdFileEntry;
  bpf?: OpaqueFileEntry;
  pidfd?: OpaqueFileEntry;
}

export interface FdinfoEntry {
  id: number;
  flags: number;
  type: number;
  fd: number;
  xattr_security_selinux?: string;
}

export interface FsEntry { cwd_id: number; root_id: number; umask?: number }

export interface RemapFilePathEntry { orig_id: number; remap_id: number; remap_type?: number }

export interface Timeval { tv_sec: bigint; tv_usec: bigint }

export interface GhostFileEntry {
  uid: number;
  gid: number;
  mode: number;
  dev?: number;
  ino?: bigint;
  rdev?: number;
  atim?: Timeval;
  mtim?: Timeval;
  chunks?: boolean;
  size?: bigint;
  symlnk_target?: string;
}

export interface GhostChunkEntry { len: bigint; off: bigint }

// ---- misc --------------------------------------------------------------------

export interface SeccompFilter { filter: Buffer; prev?: number; flags?: number }
export interface SeccompEntry { seccomp_filters: SeccompFilter[] }

// ---- cgroup.img ------------------------------------------------------------

export interface CgroupPerms { mode: number; uid: number; gid: number }
export interface CgroupPropEntry { name: string; value: string; perms?: CgroupPerms }
export interface CgroupDirEntry { dir_name: string; children: CgroupDirEntry[]; properties: CgroupPropEntry[]; dir_perms?: CgroupPerms }
export interface CgControllerEntry { cnames: string[]; dirs: CgroupDirEntry[]; is_threaded?: boolean }
export interface CgMemberEntry { name: string; path: string; cgns_prefix?: number }
export interface CgSetEntry { id: number; ctls: CgMemberEntry[] }
export interface CgroupEntry { sets: CgSetEntry[]; controllers: CgControllerEntry[] }

export interface Timespec { tv_sec: bigint; tv_nsec: bigint }
export interface TimensEntry { monotonic: Timespec; boottime: Timespec }

export interface DumpStatsEntry {
  freezing_time: number;
  frozen_time: number;
  memdump_time: number;
  memwrite_time: number;
  pages_scanned: bigint;
  pages_skipped_parent: bigint;
  pages_written: bigint;
  irmap_resolve?: number;
  pages_lazy: bigint;
  page_pipes?: bigint;
  page_pipe_bufs?: bigint;
  shpages_scanned?: bigint;
  shpages_skipped_parent?: bigint;
  shpages_written?: bigint;
}

export interface RestoreStatsEntry {
  pages_compared: bigint;
  pages_skipped_cow: bigint;
  forking_time: number;
  restore_time: number;
  pages_restored?: bigint;
}

export interface StatsEntry { dump?: DumpStatsEntry; restore?: RestoreStatsEntry }

// ---- lazy-restore's own images -------------------------------------------------

/** First entry of lr-workingset-<pid>.img. */
export interface WorkingSetHead {
  pid: number;
  /** Wall-clock start of the recording, ns since the epoch. */
  started_ns?: bigint;
  page_size?: number;
}

/** One run of faulted pages, in fault order. */
export interface WorkingSetRange {
  /** Dump-time address of the first page. */
  vaddr: bigint;
  nr_pages: bigint;
  /** First fault in this run, ns after started_ns. */
  at_ns?: bigint;
}

/** The single entry of lr-checksums-<pages_id>.img. */
export interface PageChecksumsEntry {
  pages_id: number;
  /** Bytes per checksummed chunk (a multiple of the page size); the last chunk may be short. */
  chunk_size: number;
  algorithm: number;
  file_size: bigint;
  /** CRC32C of each chunk, in file order. */
  checksums: number[];
}
