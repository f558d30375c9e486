// FIFOs (named pipes): fifo_entry in files.img pointing at a reg_file_entry
// for the path, queued bytes in fifo-data.img, as CRIU writes them.
import { FdType, requireKind } from '../../images/index.js';
import { PipeDataCollector } from './pipe-data.js';
import { regEntry } from './reg.js';
import type { DumpFdKind } from './types.js';

export function fifoKind(): DumpFdKind<{ ino: number }> {
  const data = new PipeDataCollector(requireKind('FIFO_DATA'));
  return {
    name: 'fifo',
    claim(f) {
      if (!f.target.startsWith('/') || !f.st?.isFIFO()) return undefined;
      if (f.target.endsWith(' (deleted)')) return `${f.where}: deleted FIFOs are not supported`;
      return { data: { ino: Number(f.st.ino) } };
    },
    describe(ctx, id, p, hostFd) {
      data.collect(p.data.ino, p.flags, hostFd);
      const regfId = ctx.newId();
      ctx.addEntry({ type: FdType.REG, id: regfId, reg: { ...regEntry(regfId, p.target, p.flags, 0n, p.st), fown: p.fown } });
      return { type: FdType.FIFO, id, fifo: { id, pipe_id: p.data.ino, regf_id: regfId } };
    },
    async writeImages(dir) {
      await data.write(dir);
    },
  };
}
