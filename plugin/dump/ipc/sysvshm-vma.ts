// A SysV shared memory attach (shmat) as a VMA: "/SYSV<key> (deleted)" in
// /proc/PID/maps, inode = the segment's id. Written as CRIU 4.2 writes it:
// VMA_AREA_REGULAR | VMA_ANON_SHARED | VMA_AREA_SYSVIPC, MAP_SHARED |
// MAP_ANONYMOUS, shmid = the segment id, fdflags from the map_files link's
// mode; no pages (the segment's contents go with the IPC namespace,
// plugin/dump/ipc/sysvipc.ts). As CRIU, only a process whose IPC namespace
// is dumped may have one (the root's namespace, not the dumper's).
import { lstatSync } from 'node:fs';
import { MAP_ANONYMOUS, MAP_SHARED, VMA_ANON_SHARED, VMA_AREA_REGULAR, VMA_AREA_SYSVIPC, type VmaEntry } from '../../images/index.js';
import { nsId } from '../proc.js';
import type { SmapsVma } from '../proc.js';

const O_RDONLY = 0;
const O_WRONLY = 1;
const O_RDWR = 2;

export function isSysvShmVma(v: SmapsVma): boolean {
  return v.path.startsWith('/SYSV');
}

/** The vma_entry of a SysV shm attach, or why it cannot be dumped. */
export function planSysvShmVma(pid: number, v: SmapsVma, name: string, prot: number, flags: number, madv: bigint): { entry: VmaEntry; peFlags: number } | string {
  if ((flags & MAP_SHARED) === 0) return `${name}: a private mapping of SysV shared memory is not supported`;
  if (nsId(pid, 'ipc') === nsId('self', 'ipc')) {
    // CRIU: "Task P with SysVIPC shmem map @A doesn't live in IPC ns".
    return `${name}: SysV shared memory of the dumper's own IPC namespace cannot be dumped (only a tree in an IPC namespace of its own carries its segments, as with CRIU)`;
  }
  let fdflags = O_RDONLY;
  try {
    const m = Number(lstatSync(`/proc/${pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`).mode) & 0o600;
    fdflags = m === 0o600 ? O_RDWR : m === 0o200 ? O_WRONLY : O_RDONLY;
  } catch (e) {
    return `${name}: cannot stat its map_files link (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  }
  const entry: VmaEntry = {
    start: v.start, end: v.end, pgoff: v.pgoff, shmid: BigInt(v.inode), prot, flags: flags | MAP_ANONYMOUS,
    status: VMA_AREA_REGULAR | VMA_ANON_SHARED | VMA_AREA_SYSVIPC, fd: -1n, fdflags,
  };
  if (madv !== 0n) entry.madv = madv;
  return { entry, peFlags: 0 };
}
