// Queued bytes of pipes and FIFOs (pipes-data.img / fifo-data.img), put back
// once per pipe through a write-capable fd, before any process runs.
import { writeSync } from 'node:fs';
import { ImageError, UserError } from '../../errors.js';
import type { ImageDir, ImageKind, PipeDataEntry } from '../../images/index.js';
import { addon } from '../../native/addon.js';
import { NR, type RemoteTask } from '../task.js';

const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;

export class PipeData {
  private readonly byPipe = new Map<number, { size: number | undefined; data: Buffer }>();

  static async load(dir: ImageDir, kind: ImageKind): Promise<PipeData> {
    const pd = new PipeData();
    const img = await dir.readImage(kind);
    for (const e of img?.entries ?? []) {
      const m = e.message as unknown as PipeDataEntry;
      const data = e.extra ?? Buffer.alloc(0);
      if (data.length !== m.bytes) throw new ImageError(img!.file, e.offset, `pipe ${m.pipe_id}: ${m.bytes} bytes announced, ${data.length} present`);
      if (pd.byPipe.has(m.pipe_id)) throw new ImageError(img!.file, e.offset, `pipe ${m.pipe_id} has data twice`);
      pd.byPipe.set(m.pipe_id, { size: m.size ?? undefined, data });
    }
    return pd;
  }

  /**
   * Writes pipe `pipeId`'s bytes into `writeFd` of `task` (a pipe end opened
   * for writing); grows the pipe to its dumped size first. Each pipe once.
   */
  restore(pipeId: number, task: RemoteTask, writeFd: number, what: string): void {
    const d = this.byPipe.get(pipeId);
    if (!d) return;
    this.byPipe.delete(pipeId);
    let cap = Number(task.call(`fcntl(F_GETPIPE_SZ) of ${what}`, NR.fcntl, writeFd, F_GETPIPE_SZ));
    if (d.size !== undefined && d.size > cap) {
      const r = task.raw(NR.fcntl, writeFd, F_SETPIPE_SZ, d.size);
      if (r >= 0n) cap = Number(r);
    }
    if (d.data.length > cap) {
      throw new UserError(`pid ${task.pid}: ${what} held ${d.data.length} queued bytes but its buffer can only be ${cap} bytes here (fcntl F_SETPIPE_SZ to ${d.size ?? '?'} failed: /proc/sys/fs/pipe-max-size?)`);
    }
    if (!d.data.length) return;
    const host = addon.restorePidfdGetfd(task.pid, writeFd);
    try {
      let off = 0;
      while (off < d.data.length) off += writeSync(host, d.data, off, d.data.length - off);
    } finally {
      addon.restoreCloseFd(host);
    }
  }
}
