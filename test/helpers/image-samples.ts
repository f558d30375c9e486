// Realistic sample messages for every image kind lazy-restore models, and a
// generator of random fully-populated messages for any schema type. Values
// follow what CRIU 4.2 writes (IMAGE-FORMAT §3), with 64-bit extremes mixed
// in so bigint handling is exercised.
import { messagePlan, type FieldPlan, type PlainMessage } from '../../plugin/images/codec.js';
import type {
  CoreEntry, FdinfoEntry, FileEntry, FownEntry, FsEntry, InventoryEntry, MmEntry, PstreeEntry, SaEntry, SeccompEntry,
  TaskKobjIdsEntry, TimensEntry, TtyInfoEntry, UserDescT,
} from '../../plugin/images/types.js';

const U64_MAX = (1n << 64n) - 1n;

/** Deterministic PRNG (mulberry32) so failures reproduce. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const fown = (): FownEntry => ({ uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 });

export const rootIds: TaskKobjIdsEntry = {
  vm_id: 1, files_id: 1, fs_id: 1, sighand_id: 1,
  pid_ns_id: 4026531836, net_ns_id: 4026531840, ipc_ns_id: 4026531839, uts_ns_id: 4026531838,
  mnt_ns_id: 4026531841, user_ns_id: 4026531837, cgroup_ns_id: 4026531835, time_ns_id: 4026531834,
};

export function inventory(withNew = true): InventoryEntry {
  const e: InventoryEntry = {
    img_version: 2, fdinfo_per_id: true, root_ids: rootIds, ns_per_id: true, root_cg_set: 1, lsmtype: 0,
    dump_uptime: 123456789012345n, pre_dump_mode: 1, tcp_close: false, network_lock_method: 0,
  };
  if (withNew) Object.assign(e, { plugins_entry: { plugins: ['amdgpu'] }, dump_criu_run_id: 'run-1', allow_uprobes: false });
  return e;
}

export const pstree: PstreeEntry[] = [
  { pid: 4242, ppid: 0, pgid: 4242, sid: 4242, threads: [4242, 4243] },
  { pid: 4250, ppid: 4242, pgid: 4242, sid: 4242, threads: [4250] },
];

export const ids: TaskKobjIdsEntry = { ...rootIds, vm_id: 2, files_id: 2, fs_id: 2, sighand_id: 2 };

function tls(n: number): UserDescT {
  return {
    entry_number: n, base_addr: 0, limit: 0, seg_32bit: false, contents_h: false, contents_l: false,
    read_exec_only: true, limit_in_pages: false, seg_not_present: true, usable: false,
  };
}

function sigactions(): SaEntry[] {
  const out: SaEntry[] = [];
  for (let sig = 1; sig <= 64; sig++) {
    if (sig === 9 || sig === 19) continue;
    out.push({
      sigaction: sig === 2 ? 0x55d0c0de1000n : 0n, flags: sig === 2 ? 0x04000000n : 0n,
      restorer: sig === 2 ? 0x7f0000001000n : 0n, mask: 0n, compat_sigaction: false,
    });
  }
  return out;
}

const words = (n: number, f: (i: number) => number): number[] => Array.from({ length: n }, (_, i) => f(i) >>> 0);
const qwords = (n: number, f: (i: number) => bigint): bigint[] => Array.from({ length: n }, (_, i) => f(i));

/** A leader's core as CRIU 4.2 writes it (withNew: include fields crit 3.17 does not know). */
export function coreLeader(withNew = true): CoreEntry {
  const siginfo = Buffer.alloc(128);
  siginfo.writeInt32LE(10, 0);
  const c: CoreEntry = {
    mtype: 1,
    thread_info: {
      clear_tid_addr: 0x7f1234567a10n,
      gpregs: {
        r15: 0n, r14: 1n, r13: 2n, r12: 3n, bp: 0x7ffd00001000n, bx: 5n, r11: 0x246n, r10: 0n, r9: 0n, r8: 0n,
        ax: 0xfffffffffffffffcn, cx: 0x7f12345678abn, dx: 0n, si: 0n, di: 0n, orig_ax: 0xe6n, ip: 0x7f12345678abn,
        cs: 0x33n, flags: 0x246n, sp: 0x7ffd00000f00n, ss: 0x2bn, fs_base: 0x7f1234567740n, gs_base: 0n,
        ds: 0n, es: 0n, fs: 0n, gs: 0n, mode: 1,
      },
      fpregs: {
        cwd: 0x37f, swd: 0, twd: 0, fop: 0, rip: 0n, rdp: 0n, mxcsr: 0x1f80, mxcsr_mask: 0xffff,
        st_space: words(32, (i) => i * 0x01010101), xmm_space: words(64, (i) => 0xffffffff - i), padding: [],
        xsave: {
          xstate_bv: 0x2e7n, ymmh_space: words(64, (i) => i), bndreg_state: qwords(8, () => 0n), bndcsr_state: qwords(8, () => 0n),
          opmask_reg: qwords(8, (i) => BigInt(i)), zmm_upper: qwords(64, (i) => U64_MAX - BigInt(i)),
          hi16_zmm: qwords(128, (i) => BigInt(i) << 40n), pkru: [0x55555554, 0],
        },
      },
      tls: [tls(12), tls(13), tls(14)],
    },
    tc: {
      task_state: 1, exit_code: 0, personality: 0, flags: 0x400040, blk_sigset: 0n, comm: 'sample-prog',
      timers: {
        real: { isec: 0n, iusec: 0n, vsec: 1n, vusec: 500000n },
        virt: { isec: 0n, iusec: 0n, vsec: 0n, vusec: 0n },
        prof: { isec: 0n, iusec: 0n, vsec: 0n, vusec: 0n },
        posix: [{ it_id: 0, clock_id: 1, si_signo: 14, it_sigev_notify: 0, sival_ptr: 0x55d0c0de2000n, overrun: 0,
          isec: 0n, insec: 0n, vsec: 5n, vnsec: 999n, notify_thread_id: 4243 }],
      },
      rlimits: { rlimits: Array.from({ length: 16 }, (_, i) => ({ cur: i === 7 ? 1024n : U64_MAX, max: i === 7 ? 524288n : U64_MAX })) },
      cg_set: 1,
      signals_s: { signals: [{ siginfo }] },
      loginuid: 0xffffffff,
      oom_score_adj: -17,
      sigactions: sigactions(),
      child_subreaper: false,
    },
    thread_core: {
      futex_rla: 0x7f1234567a20n, futex_rla_len: 24, sched_nice: -5, sched_policy: 0, sched_prio: 0,
      blk_sigset: 0x10000n, sas: { ss_sp: 0n, ss_size: 0n, ss_flags: 2 }, pdeath_sig: 0,
      signals_p: { signals: [] },
      creds: {
        uid: 0, gid: 0, euid: 0, egid: 0, suid: 0, sgid: 0, fsuid: 0, fsgid: 0,
        cap_inh: [0, 0], cap_prm: [0xffffffff, 0x1ff], cap_eff: [0xffffffff, 0x1ff], cap_bnd: [0xffffffff, 0x1ff],
        secbits: 0, groups: [0, 27], lsm_profile: 'unconfined', cap_amb: [],
      },
      seccomp_mode: 0, comm: 'sample-prog',
      rseq_entry: { rseq_abi_pointer: 0x7f1234567fe0n, rseq_abi_size: 32, signature: 0x53053053 },
    },
  };
  if (withNew) {
    c.thread_info!.fpregs.xsave!.cet = { cet: 0n, ssp: 0n };
    Object.assign(c.tc!, { stop_signo: 0, membarrier_registration_mask: 0 });
    Object.assign(c.thread_core!, { cg_set: 1 });
    Object.assign(c.thread_core!.creds!, { no_new_privs: 0, cap_amb: [0, 0] });
  }
  return c;
}

/** A non-leader thread's core: no tc. */
export function coreThread(): CoreEntry {
  const c = coreLeader(false);
  delete c.tc;
  c.thread_core!.comm = 'worker';
  return c;
}

/** A zombie's core: only mtype and tc. */
export const coreZombie: CoreEntry = {
  mtype: 1,
  tc: { task_state: 2, exit_code: 3, personality: 0, flags: 0, blk_sigset: 0n, comm: 'zombie', sigactions: [] },
};

export function mm(): MmEntry {
  return {
    mm_start_code: 0x55d0c0de0000n, mm_end_code: 0x55d0c0de1000n, mm_start_data: 0x55d0c0de3000n, mm_end_data: 0x55d0c0de4000n,
    mm_start_stack: 0x7ffd00001000n, mm_start_brk: 0x55d0c1000000n, mm_brk: 0x55d0c1021000n,
    mm_arg_start: 0x7ffd00001100n, mm_arg_end: 0x7ffd00001120n, mm_env_start: 0x7ffd00001120n, mm_env_end: 0x7ffd00001fe0n,
    exe_file_id: 1,
    mm_saved_auxv: [33n, 0x7ffd00100000n, 16n, 0x178bfbffn, 6n, 4096n, 0n, 0n],
    vmas: [
      { start: 0x55d0c0de0000n, end: 0x55d0c0de2000n, pgoff: 0n, shmid: 1n, prot: 5, flags: 0x2, status: 0x41, fd: -1n, madv: 0n, fdflags: 0 },
      { start: 0x55d0c0de3000n, end: 0x55d0c0de4000n, pgoff: 0x3000n, shmid: 1n, prot: 3, flags: 0x2, status: 0x41, fd: -1n, fdflags: 0 },
      { start: 0x55d0c1000000n, end: 0x55d0c1021000n, pgoff: 0n, shmid: 0n, prot: 3, flags: 0x22, status: 0x221, fd: -1n },
      { start: 0x7f0000000000n, end: 0x7f0000010000n, pgoff: 0n, shmid: 0n, prot: 3, flags: 0x22, status: 0x201, fd: -1n, madv: 1n << 14n },
      { start: 0x7ffd00000000n, end: 0x7ffd00002000n, pgoff: 0n, shmid: 0n, prot: 3, flags: 0x122, status: 0x201, fd: -1n },
      { start: 0x7ffd00100000n, end: 0x7ffd00102000n, pgoff: 0n, shmid: 0n, prot: 5, flags: 0x22, status: 0x209, fd: -1n },
      { start: 0xffffffffff600000n, end: 0xffffffffff601000n, pgoff: 0n, shmid: 0n, prot: 4, flags: 0x22, status: 0x204, fd: -1n },
    ],
    dumpable: 1,
    aios: [{ id: 0x7f0000100000n, nr_req: 128, ring_len: 8192 }],
    thp_disabled: false,
  };
}

export function files(withOpaque = true): FileEntry[] {
  const reg = (id: number, name: string, flags: number, extra: Partial<FileEntry['reg'] & object> = {}): FileEntry => ({
    type: 1, id, reg: { id, flags, pos: 0n, fown: fown(), name, build_id: [], ...extra },
  });
  const out: FileEntry[] = [
    reg(1, '/usr/bin/sample-prog', 0o100000, { size: 16344n, mode: 0o100755, build_id: [0xdeadbeef, 0x12345678, 0, 1, 2] }),
    reg(2, '/dev/null', 0o100002, { mnt_id: 23 }),
    reg(3, '/tmp/log \u00e9\u4e2d "quoted"\\', 0o102001, { pos: 0x1_0000_0000n, size: 42n, mode: 0o100644 }),
    { type: 2, id: 4, pipe: { id: 4, pipe_id: 123456, flags: 0, fown: fown() } },
    { type: 11, id: 5, tty: { id: 5, tty_info_id: 7, flags: 0o2, fown: fown(), regf_id: 6 } },
    reg(6, '/dev/pts/3', 0o2),
    { type: 16, id: 8, ext: { id: 8, fown: fown() } },
    reg(9, '/', 0o200000),
  ];
  if (withOpaque) out.push({ type: 10, id: 10, psk: { id: 10 } });
  return out;
}

export const fdinfo: FdinfoEntry[] = [
  { id: 2, flags: 0, type: 1, fd: 0 },
  { id: 3, flags: 0, type: 1, fd: 1 },
  { id: 3, flags: 0, type: 1, fd: 2 },
  { id: 4, flags: 1, type: 2, fd: 3 },
  { id: 5, flags: 0, type: 11, fd: 4 },
];

export const fs: FsEntry = { cwd_id: 9, root_id: 9, umask: 0o22 };

export const ttyInfo: TtyInfoEntry[] = [{
  id: 7, type: 1, locked: false, exclusive: false, packet_mode: false, sid: 4242, pgrp: 4242, rdev: 0x8803,
  termios: { c_iflag: 0x500, c_oflag: 5, c_cflag: 0xbf, c_lflag: 0x8a3b, c_line: 0, c_ispeed: 15, c_ospeed: 15, c_cc: words(19, (i) => i) },
  winsize: { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 }, pty: { index: 3 }, dev: 3, uid: 0, gid: 5,
}];

export const seccompEmpty: SeccompEntry = { seccomp_filters: [] };
export const seccomp: SeccompEntry = {
  seccomp_filters: [{ filter: Buffer.from('0600000000000000'.repeat(20), 'hex') }, { filter: Buffer.from([1, 2, 3]), prev: 0, flags: 1 }],
};
export const timens: TimensEntry = { monotonic: { tv_sec: 12345n, tv_nsec: 999999999n }, boottime: { tv_sec: 12400n, tv_nsec: 0n } };

// ---- random messages of any type -----------------------------------------------

function randomScalar(f: FieldPlan, r: () => number): unknown {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  switch (f.kind) {
    case 'u64': return pick([0n, 1n, 0x7fffffffffffn, U64_MAX, BigInt(Math.floor(r() * 2 ** 53)) * 2048n % (U64_MAX + 1n)]);
    case 's64': return pick([0n, -1n, 1n, -(1n << 63n), (1n << 63n) - 1n, BigInt(Math.floor(r() * 2 ** 40)) - (1n << 39n)]);
    case 'u32': return pick([0, 1, 127, 128, 0xffffffff, Math.floor(r() * 2 ** 32)]);
    case 's32': return pick([0, -1, 0x7fffffff, -0x80000000, Math.floor(r() * 2000) - 1000]);
    case 'bool': return r() < 0.5;
    case 'string': return pick(['', 'a', 'comm-\u00e9\u4e2d', '/tmp/x y/"z"\\\n', 'x'.repeat(200)]);
    case 'bytes': return Buffer.from(Array.from({ length: pick([0, 1, 57, 58, 128]) }, () => Math.floor(r() * 256)));
    case 'float': return 0;
    case 'enum': return pick([...f.enumNames!.keys()]);
    case 'message': return undefined;
  }
}

/** A random message of `type` with every field set (repeated: 0–3 items); depth-limited. */
export function randomMessage(type: string, r: () => number, depth = 0): PlainMessage {
  const out: PlainMessage = {};
  for (const f of messagePlan(type).fields) {
    const one = (): unknown => (f.kind === 'message' ? randomMessage(f.message!().name, r, depth + 1) : randomScalar(f, r));
    if (f.repeated) {
      const n = depth > 3 ? 0 : Math.floor(r() * 4);
      out[f.name] = Array.from({ length: n }, one);
    } else if (f.required || depth <= 3) {
      out[f.name] = one();
    }
  }
  return out;
}

/** Every message type in proto/ (package-less names). */
export function allMessageTypes(): string[] {
  return ALL_TYPES;
}
// Kept as a list (not reflected) so a type removed from proto/ fails loudly.
const ALL_TYPES = [
  'fown_entry', 'reg_file_entry', 'pipe_entry', 'pipe_data_entry', 'ext_file_entry',
  'winsize_entry', 'termios_entry', 'tty_pty_entry', 'tty_data_entry', 'tty_info_entry', 'tty_file_entry',
  'inet_sk_entry', 'ns_file_entry', 'packet_sock_entry', 'netlink_sk_entry', 'eventfd_file_entry', 'eventpoll_file_entry',
  'signalfd_entry', 'tunfile_entry', 'timerfd_entry', 'inotify_file_entry', 'fanotify_file_entry', 'unix_sk_entry',
  'fifo_entry', 'memfd_file_entry', 'memfd_inode_entry', 'bpfmap_file_entry', 'pidfd_entry',
  'fdinfo_entry', 'file_entry', 'file_lock_entry', 'fs_entry', 'remap_file_path_entry', 'timeval', 'ghost_file_entry', 'ghost_chunk_entry',
  'plugins_entry', 'inventory_entry', 'pstree_entry', 'creds_entry', 'sa_entry', 'siginfo_entry', 'signal_queue_entry',
  'rseq_entry', 'rlimit_entry', 'itimer_entry', 'posix_timer_entry', 'task_timers_entry',
  'user_x86_regs_entry', 'user_x86_cet_entry', 'user_x86_xsave_entry', 'user_x86_fpregs_entry', 'user_desc_t', 'thread_info_x86',
  'thread_info_arm', 'thread_info_aarch64', 'thread_info_ppc64', 'thread_info_s390', 'thread_info_mips',
  'thread_info_loongarch64', 'thread_info_riscv64',
  'task_rlimits_entry', 'task_core_entry', 'task_kobj_ids_entry', 'thread_sas_entry', 'thread_core_entry', 'core_entry',
  'vma_entry', 'aio_ring_entry', 'mm_entry', 'pagemap_head', 'pagemap_entry', 'seccomp_filter', 'seccomp_entry',
  'timespec', 'timens_entry', 'dump_stats_entry', 'restore_stats_entry', 'stats_entry',
  'working_set_head', 'working_set_range', 'page_checksums_entry',
  'mnt_entry', 'utsns_entry',
  // network namespace (netdev.proto, sysctl.proto: plugin/dump/netns.ts, plugin/restore/netns.ts)
  'sysctl_entry', 'tun_link_entry', 'macvlan_link_entry', 'sit_entry', 'net_device_entry', 'netns_id', 'netns_entry',
  // SysV IPC namespace (ipc-desc, ipc-var, ipc-shm, ipc-sem, ipc-msg)
  'ipc_desc_entry', 'ipc_var_entry', 'ipc_shm_entry', 'ipc_sem_entry', 'ipc_msg_entry', 'ipc_msg',
  // cgroup.proto (plugin/dump/cgroups.ts, plugin/restore/cgroups.ts)
  'cgroup_perms', 'cgroup_prop_entry', 'cgroup_dir_entry', 'cg_controller_entry', 'cg_member_entry', 'cg_set_entry', 'cgroup_entry',
  // rpc.proto (criu swrk/service, plugin/rpc)
  'criu_page_server_info', 'criu_veth_pair', 'ext_mount_map', 'join_namespace', 'inherit_fd', 'cgroup_root', 'unix_sk',
  'criu_opts', 'criu_dump_resp', 'criu_restore_resp', 'criu_notify', 'criu_features', 'criu_req', 'criu_resp', 'criu_version',
  // fd kinds: inet sockets, event objects (sk-inet, sk-opts, tcp-stream, eventpoll, fh, fsnotify)
  'sk_opts_entry', 'tcp_opts_entry', 'tcp_stream_entry', 'ip_opts_raw_entry', 'ip_opts_entry', 'eventpoll_tfd_entry',
  // unix sockets (sk-unix, sk-packet)
  'file_perms_entry', 'scm_entry', 'sk_packet_entry',
  'fh_entry', 'irmap_cache_entry', 'inotify_wd_entry', 'fanotify_inode_mark_entry', 'fanotify_mount_mark_entry', 'fanotify_mark_entry',
];
