// Pipes (pipe_entry in files.img, queued bytes in pipes-data.img). Both ends
// may be anywhere in the tree; ends whose peer is outside the tree (a
// shell's or runtime's stdio) are dumped the same way, as CRIU does: the
// restore takes a replacement with --inherit-fd fd[N]:pipe:[INO].
import { FdType, requireKind } from '../../images/index.js';
import { PipeDataCollector } from './pipe-data.js';
import type { DumpFdKind } from './types.js';

const O_DIRECT = 0o40000;

export function pipeKind(): DumpFdKind<{ ino: number }> {
  const data = new PipeDataCollector(requireKind('PIPES_DATA'));
  return {
    name: 'pipe',
    claim(f) {
      const m = /^pipe:\[(\d+)\]$/.exec(f.target);
      if (!m) return undefined;
      if (f.flags & O_DIRECT) return `${f.where}: packet-mode pipes (O_DIRECT) are not supported`;
      return { data: { ino: Number(m[1]) } };
    },
    describe(_ctx, id, p, hostFd) {
      data.collect(p.data.ino, p.flags, hostFd);
      return { type: FdType.PIPE, id, pipe: { id, pipe_id: p.data.ino, flags: p.flags, fown: p.fown } };
    },
    async writeImages(dir) {
      await data.write(dir);
    },
  };
}
