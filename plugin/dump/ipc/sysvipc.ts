// The SysV IPC objects of a dumped IPC namespace (the root's, when it is not
// the dumper's: CRIU dumps an IPC namespace only then), written as CRIU 4.2
// writes them: ipcns-var-<ns>.img (the namespace's IPC sysctls),
// ipcns-shm-<ns>.img (one ipc_shm_entry per segment, in_pagemaps: its
// contents in pagemap-shmem-<shm id>.img + a pages file, offsets in the
// segment as vaddr), ipcns-sem-<ns>.img (each set followed by its values,
// u16 each, padded to 8 bytes) and ipcns-msg-<ns>.img (each queue followed
// by its messages: u32 length, ipc_msg, text padded to 8 bytes). The objects
// are read by native/ipc/sysvipc.cc from a thread inside the namespace;
// messages are copied (MSG_COPY), never taken off their queue.
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { UserError } from '../../errors.js';
import { encodeImage, encodeMessage, KIND, PAGE_SIZE, PE_PRESENT, type EntryToWrite, type ImageDir } from '../../images/index.js';
import { addon } from '../../native/addon.js';
import { IPC_VAR_SYSCTLS } from '../../images/ipc-var.js';
import type { SysvIpcDesc, SysvIpcState } from '../../native/types.js';


/** The optional fields (proto2 `optional`): left out when the kernel has no such sysctl. */
const OPTIONAL = new Set(['mq_msg_default', 'mq_msgsize_default', 'msg_next_id', 'sem_next_id', 'shm_next_id']);

export function ipcDescEntry(d: SysvIpcDesc): SysvIpcDesc {
  // key is a key_t (int) in the kernel and uint32 in the image.
  return { key: d.key >>> 0, uid: d.uid, gid: d.gid, cuid: d.cuid, cgid: d.cgid, mode: d.mode, id: d.id };
}

/** ipc_var_entry from the sysctls as read in the namespace. */
export function ipcVarEntry(sysctls: Readonly<Record<string, string>>): Record<string, unknown> {
  const e: Record<string, unknown> = {};
  for (const [field, name, kind] of IPC_VAR_SYSCTLS) {
    const text = sysctls[name];
    if (text === undefined) {
      if (!OPTIONAL.has(field)) e[field] = kind === 'u32x4' ? [] : kind === 'u64' ? 0n : 0;
      continue;
    }
    if (kind === 'u32x4') e[field] = text.trim().split(/\s+/).map((x) => Number(x) >>> 0);
    else if (kind === 'u64') e[field] = BigInt.asUintN(64, BigInt(text.trim()));
    else {
      const n = Number(text.trim());
      // A *_next_id of -1 is the kernel's "none asked for": it cannot be written back (CRIU leaves it out).
      if (field.endsWith('_next_id') && n === -1) continue;
      e[field] = n >>> 0;
    }
  }
  return e;
}

export interface IpcDumpStats {
  shm: number;
  sem: number;
  msg: number;
  /** Pages of segment contents written. */
  shmPages: number;
  /** pages-<id>.img files written (their checksums are the caller's). */
  pagesIds: number[];
}

const pad8 = (n: number): number => (n + 7) & ~7;

/** Reads the IPC namespace of `pid` (frozen tree) and writes its images under id `nsId`. */
export async function dumpIpcNamespace(dir: ImageDir, pid: number, nsId: number, nextPagesId: () => number): Promise<IpcDumpStats> {
  let state: SysvIpcState;
  const nsFd = openSync(`/proc/${pid}/ns/ipc`, 'r');
  try {
    state = addon.sysvIpcDump(nsFd);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new UserError(`pid ${pid}: cannot read its IPC namespace (ipc:[${nsId}]): ${err.message}`, { cause: e });
  } finally {
    closeSync(nsFd);
  }
  const stats: IpcDumpStats = { shm: state.shm.length, sem: state.sem.length, msg: state.msg.length, shmPages: 0, pagesIds: [] };
  await dir.writeImage(KIND.ipcVar, nsId, [ipcVarEntry(state.sysctls)]);

  const shm: EntryToWrite[] = [];
  for (const s of state.shm) {
    shm.push({ message: { desc: ipcDescEntry(s.desc), size: s.size, in_pagemaps: true } });
    if (!s.runs.length) continue;
    const pagesId = nextPagesId();
    stats.pagesIds.push(pagesId);
    const w = await dir.shmemPagemapWriter(BigInt(s.desc.id), pagesId);
    try {
      for (const r of s.runs) {
        await w.add(r.off, r.data.length / PAGE_SIZE, PE_PRESENT, r.data);
        stats.shmPages += r.data.length / PAGE_SIZE;
      }
    } finally {
      await w.close();
    }
  }
  writeFileSync(dir.pathOf(KIND.ipcShm, nsId), encodeImage(KIND.ipcShm, shm));

  const sem: EntryToWrite[] = state.sem.map((s) => {
    const extra = Buffer.alloc(pad8(s.values.length * 2));
    s.values.forEach((v, i) => extra.writeUInt16LE(v, i * 2));
    return { message: { desc: ipcDescEntry(s.desc), nsems: s.values.length }, extra };
  });
  writeFileSync(dir.pathOf(KIND.ipcSem, nsId), encodeImage(KIND.ipcSem, sem));

  const msg: EntryToWrite[] = state.msg.map((q) => {
    const parts: Buffer[] = [];
    for (const m of q.messages) {
      const head = encodeMessage('ipc_msg', { mtype: m.mtype, msize: m.data.length });
      const len = Buffer.alloc(4);
      len.writeUInt32LE(head.length);
      const text = Buffer.alloc(pad8(m.data.length));
      m.data.copy(text);
      parts.push(len, head, text);
    }
    return { message: { desc: ipcDescEntry(q.desc), qbytes: q.qbytes, qnum: q.messages.length }, extra: Buffer.concat(parts) };
  });
  writeFileSync(dir.pathOf(KIND.ipcMsg, nsId), encodeImage(KIND.ipcMsg, msg));
  return stats;
}
