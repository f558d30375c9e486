// Queued bytes of pipes and FIFOs (pipes-data.img / fifo-data.img): read
// with tee() from a duplicate of a read end, so the pipe keeps them. As in
// CRIU, data is taken once per pipe and only through a descriptor that can
// read (a tree that holds only write ends leaves the bytes to the reader).
import { writeFile } from 'node:fs/promises';
import { encodeImage, type ImageDir, type ImageKind, type PipeDataEntry } from '../../images/index.js';
import { addon } from '../../native/addon.js';
import { O_WRONLY } from './common.js';

export class PipeDataCollector {
  private readonly seen = new Set<number>();
  private readonly entries: { message: PipeDataEntry; extra: Buffer }[] = [];

  constructor(private readonly kind: ImageKind) {}

  /** Records pipe `pipeId`'s queued bytes through `hostFd` (once per pipe, read ends only). */
  collect(pipeId: number, flags: number, hostFd: number): void {
    if (flags & O_WRONLY) return;
    if (this.seen.has(pipeId)) return;
    this.seen.add(pipeId);
    const { size, data } = addon.pipePeek(hostFd);
    this.entries.push({ message: { pipe_id: pipeId, bytes: data.length, size }, extra: data });
  }

  get bytes(): number {
    return this.entries.reduce((n, e) => n + e.extra.length, 0);
  }

  async write(dir: ImageDir): Promise<void> {
    if (!this.entries.length) return;
    await writeFile(dir.pathOf(this.kind), encodeImage(this.kind, this.entries));
  }
}
