// ipcns-var-<ipc ns id>.img: which sysctl of an IPC namespace each field of
// ipc_var_entry holds (the same names and order as CRIU's ipc_sysctl_req).

/** ipc_var_entry fields and the sysctl each one is (CRIU's ipc_sysctl_req). */
export const IPC_VAR_SYSCTLS: readonly (readonly [field: string, sysctl: string, kind: 'u32' | 'u64' | 'u32x4'])[] = [
  ['sem_ctls', 'kernel/sem', 'u32x4'],
  ['msg_ctlmax', 'kernel/msgmax', 'u32'],
  ['msg_ctlmnb', 'kernel/msgmnb', 'u32'],
  ['auto_msgmni', 'kernel/auto_msgmni', 'u32'],
  ['msg_ctlmni', 'kernel/msgmni', 'u32'],
  ['shm_ctlmax', 'kernel/shmmax', 'u64'],
  ['shm_ctlall', 'kernel/shmall', 'u64'],
  ['shm_ctlmni', 'kernel/shmmni', 'u32'],
  ['shm_rmid_forced', 'kernel/shm_rmid_forced', 'u32'],
  ['mq_queues_max', 'fs/mqueue/queues_max', 'u32'],
  ['mq_msg_max', 'fs/mqueue/msg_max', 'u32'],
  ['mq_msgsize_max', 'fs/mqueue/msgsize_max', 'u32'],
  ['mq_msg_default', 'fs/mqueue/msg_default', 'u32'],
  ['mq_msgsize_default', 'fs/mqueue/msgsize_default', 'u32'],
  ['msg_next_id', 'kernel/msg_next_id', 'u32'],
  ['sem_next_id', 'kernel/sem_next_id', 'u32'],
  ['shm_next_id', 'kernel/shm_next_id', 'u32'],
];
