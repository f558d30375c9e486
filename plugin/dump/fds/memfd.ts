// Open memfds (and shared anonymous memory reopened through map_files):
// memfd_file_entry pointing at the object that plugin/dump/shmem.ts dumps
// once for the tree (memfd.img + its pages).
import { isShmemPath, planShmemFd, type ShmemRef } from '../shmem.js';
import type { DumpFdKind } from './types.js';

export function memfdKind(): DumpFdKind<{ ref: ShmemRef }> {
  return {
    name: 'memfd',
    claim(f) {
      if (!f.target.startsWith('/') || !isShmemPath(f.target)) return undefined;
      const ref = planShmemFd(f.pid, f.fd, f.target);
      return typeof ref === 'string' ? ref : { data: { ref } };
    },
    describe(ctx, id, p) {
      const e = ctx.memfdEntry(p.data.ref, id, p.flags, p.pos);
      if (e.memfd) e.memfd.fown = p.fown;
      return e;
    },
  };
}
