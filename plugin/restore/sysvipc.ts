// Restoring a dumped IPC namespace (images from plugin/dump/ipc or CRIU):
// when the root's ipc_ns_id differs from inventory root_ids, the root is
// given a new IPC namespace (CLONE_NEWIPC: a container's is made with it,
// anything else unshares it in the root stub before any child is cloned)
// and its SysV objects are created again inside it, as CRIU 4.2 does: the
// sysctls of ipcns-var first, then each shm segment, message queue and
// semaphore set with its dumped id (kernel/<kind>_next_id), key, mode and
// owner, the segments filled from pagemap-shmem-<shm id>.img (checksums
// verified) or the raw bytes CRIU writes when not in_pagemaps, the queues'
// messages sent again in order, the sets' values set. The work is done by
// native/ipc/sysvipc.cc from a thread inside the new namespace.
//
// Each process's SysV attaches (VMA_AREA_SYSVIPC VMAs) are shmat'd again at
// their addresses by the process itself (an injected shmat), one shmat per
// attach (a chain of VMAs from offset 0 to the segment's end, as CRIU
// requires), read-only unless some VMA of the segment in the tree had it
// open for writing; VMAs whose protection differs are mprotected. Segments
// always get their contents eagerly, also in a lazy restore (the segment
// exists before any process maps it; serving it through userfaultfd would
// need every attach registered). Segments that were marked for removal
// (SHM_DEST) are removed again once every attach exists.
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { ImageError, UserError } from '../errors.js';
import { decodeMessage, ImageDir, KIND, PAGE, PE_PRESENT, PROT_READ, PROT_WRITE, VMA_AREA_SYSVIPC, type VmaEntry } from '../images/index.js';
import type { PageVerifier } from '../integrity/checksums.js';
import { addon } from '../native/addon.js';
import type { SysvIpcDesc, SysvIpcSpec } from '../native/types.js';
import { IPC_VAR_SYSCTLS } from '../images/ipc-var.js';
import { NR, type RemoteTask } from './task.js';

export const CLONE_NEWIPC = 0x08000000;
const SHM_RDONLY = 0o10000;
const SHM_DEST = 0o1000;
const O_RDWR = 2;

export interface SysvIpcPlan {
  /** ipc_ns_id of the images (their file names). */
  nsId: number;
  spec: SysvIpcSpec;
  /** Segments by id: size, and whether an attach needs write access. */
  segments: Map<number, { size: bigint; writable: boolean }>;
  /** Segments marked for removal at dump time (SHM_DEST): removed once attached again. */
  destroyed: number[];
  /** The images, for messages. */
  where: string;
}

/** How a VMA of SysV shared memory is restored (plugin/restore/plan.ts's VmaPlan.sysv). */
export interface SysvAttach {
  shmid: number;
  /** The first VMA of an attach: shmat here; the following ones are covered by it. */
  attach: boolean;
  rdonly: boolean;
}

const pad8 = (n: number): number => (n + 7) & ~7;

function desc(d: unknown, file: string, offset: number): SysvIpcDesc {
  const o = d as Partial<SysvIpcDesc> | undefined;
  if (!o || typeof o.id !== 'number' || typeof o.key !== 'number' || typeof o.mode !== 'number') throw new ImageError(file, offset, 'entry without an ipc_desc_entry');
  return { id: o.id, key: o.key, uid: o.uid ?? 0, gid: o.gid ?? 0, cuid: o.cuid ?? 0, cgid: o.cgid ?? 0, mode: o.mode };
}

/**
 * The IPC namespace to recreate, or undefined when the root shares the
 * restorer's (ipc_ns_id equal to root_ids', or not recorded).
 */
export async function loadSysvIpc(imagesDir: string, verifier: PageVerifier | undefined, log: (l: string) => void): Promise<SysvIpcPlan | undefined> {
  const dir = await ImageDir.open(imagesDir);
  const inv = await dir.inventory();
  const root = (await dir.pstree())[0];
  if (!root || !inv.root_ids) return undefined;
  const ids = await dir.ids(root.pid);
  if (ids.ipc_ns_id === undefined || inv.root_ids.ipc_ns_id === undefined || ids.ipc_ns_id === inv.root_ids.ipc_ns_id) return undefined;
  const nsId = ids.ipc_ns_id;
  const where = `${imagesDir}/ipcns-*-${nsId}.img`;

  // Sysctls, in CRIU's order; those this kernel does not have are left out.
  const varFile = dir.pathOf(KIND.ipcVar, nsId);
  const vars = await dir.readImage(KIND.ipcVar, nsId);
  if (!vars || vars.entries.length !== 1) throw new ImageError(varFile, undefined, vars ? `${vars.entries.length} entries instead of 1` : 'missing (the root had an IPC namespace of its own)');
  const v = vars.entries[0]!.message as Record<string, unknown>;
  const sysctls: [string, string][] = [];
  const missing: string[] = [];
  for (const [field, name, kind] of IPC_VAR_SYSCTLS) {
    const x = v[field];
    if (x === undefined || x === null || (Array.isArray(x) && x.length === 0)) continue;
    if (!existsSync(`/proc/sys/${name}`)) {
      missing.push(name);
      continue;
    }
    if (kind === 'u32x4') {
      if (!Array.isArray(x) || x.length !== 4) throw new ImageError(varFile, undefined, `sem_ctls has ${Array.isArray(x) ? x.length : 0} values instead of 4`);
      sysctls.push([name, x.map((n) => String(n)).join(' ')]);
    } else {
      sysctls.push([name, String(x)]);
    }
  }
  if (missing.length) log(`IPC namespace ${nsId}: this kernel has no ${missing.join(', ')}: left out`);

  const spec: SysvIpcSpec = { sysctls, shm: [], msg: [], sem: [] };
  const segments = new Map<number, { size: bigint; writable: boolean }>();
  const destroyed: number[] = [];

  const shmFile = dir.pathOf(KIND.ipcShm, nsId);
  for (const e of (await dir.readImage(KIND.ipcShm, nsId))?.entries ?? []) {
    const m = e.message as { desc?: unknown; size?: bigint | number; in_pagemaps?: boolean; hugetlb_flag?: number };
    const d = desc(m.desc, shmFile, e.offset);
    const size = BigInt(m.size ?? 0);
    if (m.hugetlb_flag) throw new UserError(`${shmFile}: SysV shm id ${d.id} is hugetlb memory, which restore does not support`);
    const limit = ((size + PAGE - 1n) / PAGE) * PAGE;
    const runs: { off: bigint; data: Buffer }[] = [];
    if (m.in_pagemaps) {
      if (await dir.hasShmemPagemap(d.id)) {
        const pm = await dir.pagemapShmem(d.id);
        const ranges: { vaddr: bigint; bytes: bigint; offset: bigint }[] = [];
        for await (const batch of pm.batches()) {
          for (const p of batch) {
            if (p.end > limit) throw new ImageError(pm.file, p.imageOffset, `pages at 0x${p.vaddr.toString(16)}-0x${p.end.toString(16)} lie past the end of SysV shm id ${d.id} (${size} bytes)`);
            if (!(p.flags & PE_PRESENT) || p.pagesOffset === undefined) throw new ImageError(pm.file, p.imageOffset, `SysV shm pages at 0x${p.vaddr.toString(16)} are not in the images (flags 0x${p.flags.toString(16)})`);
            ranges.push({ vaddr: p.vaddr, bytes: p.end - p.vaddr, offset: BigInt(p.pagesOffset) });
          }
        }
        verifier?.verify(root.pid, pm.pagesPath, ranges.map((r) => ({ offset: r.offset, len: r.bytes })));
        const fd = openSync(pm.pagesPath, 'r');
        try {
          for (const r of ranges) {
            const data = Buffer.alloc(Number(r.bytes));
            let got = 0;
            while (got < data.length) {
              const n = readSync(fd, data, got, data.length - got, r.offset + BigInt(got));
              if (n === 0) break;
              got += n;
            }
            if (got !== data.length) throw new ImageError(pm.pagesPath, Number(r.offset), `short pages file: ${got} of ${data.length} bytes (SysV shm id ${d.id})`);
            runs.push({ off: r.vaddr, data });
          }
        } finally {
          closeSync(fd);
        }
      }
    } else {
      // Older images: the contents follow the entry, size rounded up to 4 bytes.
      if (!e.extra || BigInt(e.extra.length) < size) throw new ImageError(shmFile, e.offset, `SysV shm id ${d.id}: ${e.extra?.length ?? 0} bytes of contents for ${size}`);
      if (size > 0n) runs.push({ off: 0n, data: e.extra.subarray(0, Number(size)) });
    }
    spec.shm.push({ desc: d, size, runs });
    segments.set(d.id, { size, writable: false });
    if (d.mode & SHM_DEST) destroyed.push(d.id);
  }

  const semFile = dir.pathOf(KIND.ipcSem, nsId);
  for (const e of (await dir.readImage(KIND.ipcSem, nsId))?.entries ?? []) {
    const m = e.message as { desc?: unknown; nsems?: number };
    const d = desc(m.desc, semFile, e.offset);
    const n = m.nsems ?? 0;
    if (n < 1 || !e.extra || e.extra.length < n * 2) throw new ImageError(semFile, e.offset, `semaphore set id ${d.id}: ${n} semaphores, ${e.extra?.length ?? 0} bytes of values`);
    const values: number[] = [];
    for (let i = 0; i < n; i++) values.push(e.extra.readUInt16LE(i * 2));
    spec.sem.push({ desc: d, values });
  }

  const msgFile = dir.pathOf(KIND.ipcMsg, nsId);
  for (const e of (await dir.readImage(KIND.ipcMsg, nsId))?.entries ?? []) {
    const m = e.message as { desc?: unknown; qbytes?: number; qnum?: number };
    const d = desc(m.desc, msgFile, e.offset);
    const extra = e.extra ?? Buffer.alloc(0);
    const messages: { mtype: bigint; data: Buffer }[] = [];
    let p = 0;
    for (let i = 0; i < (m.qnum ?? 0); i++) {
      // (framing.ts checked that every record lies inside the file.)
      const len = extra.readUInt32LE(p);
      const head = decodeMessage('ipc_msg', extra.subarray(p + 4, p + 4 + len), { file: msgFile, offset: e.offset }) as { mtype?: bigint | number; msize?: number };
      const mtype = BigInt(head.mtype ?? 0);
      if (mtype <= 0n) throw new ImageError(msgFile, e.offset, `message ${i} of queue id ${d.id} has type ${mtype} (must be > 0)`);
      const msize = head.msize ?? 0;
      messages.push({ mtype, data: Buffer.from(extra.subarray(p + 4 + len, p + 4 + len + msize)) });
      p += 4 + len + pad8(msize);
    }
    spec.msg.push({ desc: d, qbytes: m.qbytes ?? 0, messages });
  }
  return { nsId, spec, segments, destroyed, where };
}

/**
 * Marks every SysV VMA of each process with how it is restored, checking
 * CRIU's rules: each attach is a chain of VMAs from offset 0 to the end of
 * its segment, without holes. `vmas` are each process's VMA plans in order.
 */
export function planSysvAttaches(processes: readonly { pid: number; vmas: { vma: VmaEntry; sysv?: SysvAttach }[] }[], ipc: SysvIpcPlan | undefined): void {
  const name = (pid: number, v: VmaEntry): string => `pid ${pid}: VMA 0x${v.start.toString(16)}-0x${v.end.toString(16)}`;
  for (const p of processes) {
    for (const { vma } of p.vmas) {
      if (!(vma.status & VMA_AREA_SYSVIPC)) continue;
      const id = Number(vma.shmid);
      const seg = ipc?.segments.get(id);
      if (!seg) throw new UserError(`${name(p.pid, vma)} attaches SysV shm id ${id}, which the images do not have (no ipcns-shm image of the tree's IPC namespace holds it)`);
      if (vma.fdflags === undefined || vma.fdflags === null || (vma.fdflags & 3) === O_RDWR) seg.writable = true;
    }
  }
  for (const p of processes) {
    let chain: { id: number; first: VmaEntry; end: bigint } | undefined;
    const closeChain = (): void => {
      if (!chain) return;
      const seg = ipc!.segments.get(chain.id)!;
      const want = chain.first.start + ((seg.size + PAGE - 1n) / PAGE) * PAGE;
      if (chain.end !== want) throw new UserError(`${name(p.pid, chain.first)}: the attach of SysV shm id ${chain.id} does not cover the whole segment (ends at 0x${chain.end.toString(16)}, not 0x${want.toString(16)}), which restore does not support (as CRIU)`);
      chain = undefined;
    };
    for (const v of p.vmas) {
      const vma = v.vma;
      if (!(vma.status & VMA_AREA_SYSVIPC)) {
        closeChain();
        continue;
      }
      const id = Number(vma.shmid);
      const rdonly = !ipc!.segments.get(id)!.writable;
      if (vma.pgoff === 0n) {
        closeChain();
        chain = { id, first: vma, end: vma.end };
        v.sysv = { shmid: id, attach: true, rdonly };
        continue;
      }
      if (!chain || chain.id !== id || chain.end !== vma.start || vma.pgoff !== vma.start - chain.first.start) {
        throw new UserError(`${name(p.pid, vma)}: part of SysV shm id ${id} at offset 0x${vma.pgoff.toString(16)} without the rest of its attach before it, which restore does not support (as CRIU)`);
      }
      chain.end = vma.end;
      v.sysv = { shmid: id, attach: false, rdonly };
    }
    closeChain();
  }
}

function nsFdOf(pid: number): number {
  return openSync(`/proc/${pid}/ns/ipc`, 'r');
}

/**
 * Gives the root stub its IPC namespace (unless it was born with one) and
 * creates the objects in it.
 */
export function restoreSysvIpc(root: RemoteTask, rootPid: number, ipc: SysvIpcPlan, created: boolean, log: (l: string) => void): void {
  if (!created) root.call('unshare(CLONE_NEWIPC)', NR.unshare, CLONE_NEWIPC);
  const fd = nsFdOf(root.pid);
  try {
    addon.sysvIpcRestore(fd, ipc.spec);
  } catch (e) {
    throw new UserError(`pid ${rootPid}: cannot restore the SysV objects of its IPC namespace (${ipc.where}): ${(e as Error).message}`, { cause: e });
  } finally {
    closeSync(fd);
  }
  const s = ipc.spec;
  log(`IPC namespace ${ipc.nsId}: ${s.shm.length} SysV shm segments, ${s.msg.length} message queues (${s.msg.reduce((a, q) => a + q.messages.length, 0)} messages), ${s.sem.length} semaphore sets restored`);
}

/** Removes the segments that were marked for removal, now that every attach exists. */
export function finishSysvIpc(root: RemoteTask, rootPid: number, ipc: SysvIpcPlan): void {
  if (!ipc.destroyed.length) return;
  const fd = nsFdOf(root.pid);
  try {
    addon.sysvShmRemove(fd, ipc.destroyed);
  } catch (e) {
    throw new UserError(`pid ${rootPid}: ${(e as Error).message}`, { cause: e });
  } finally {
    closeSync(fd);
  }
}

/** Maps one SysV VMA inside the process (step 3 of restoreAddressSpace). */
export function attachSysvShm(t: RemoteTask, pid: number, vma: VmaEntry, a: SysvAttach): void {
  const at = `0x${vma.start.toString(16)}`;
  if (a.attach) {
    const r = t.call(`shmat(SysV shm id ${a.shmid} at ${at})`, NR.shmat, a.shmid, vma.start, a.rdonly ? SHM_RDONLY : 0);
    if (r !== vma.start) throw new UserError(`pid ${pid}: SysV shm id ${a.shmid} was attached at 0x${r.toString(16)}, not ${at}`);
  }
  const attached = PROT_READ | (a.rdonly ? 0 : PROT_WRITE);
  if (vma.prot !== attached) t.call(`mprotect(SysV shm ${at})`, NR.mprotect, vma.start, vma.end - vma.start, vma.prot);
}
