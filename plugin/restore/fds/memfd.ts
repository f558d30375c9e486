// Open memfds (memfd_file_entry): the object itself is created once by
// plugin/restore/shmem.ts (with its contents and seals); each open file
// description is a reopen of it by path inside the owner, at its offset.
import { UserError } from '../../errors.js';
import { FdType, type FileEntry } from '../../images/index.js';
import { NR } from '../task.js';
import type { RestoreFdKind } from './types.js';
import { O_CLOEXEC } from '../../inject/constants.js';

const OPEN_STRIP = 0o100 | 0o200 | 0o400 | 0o1000 | 0o20000000; // CREAT EXCL NOCTTY TRUNC TMPFILE-bit

export const memfdKind: RestoreFdKind = {
  type: FdType.MEMFD,
  name: 'memfd',
  setsFlags: false,
  check(ctx, file, use) {
    if (!file.memfd || !ctx.options.memfds?.refs.has(file.id)) throw new UserError(`pid ${use.pid}: fd ${use.fd}: memfd file id ${file.id} has no memfd object`);
  },
  flags: (f: FileEntry) => f.memfd?.flags ?? 0,
  fown: (f: FileEntry) => f.memfd?.fown,
  create(ctx, file, owner) {
    const m = file.memfd!;
    const ref = ctx.options.memfds!.refs.get(file.id)!;
    const pathOf = ctx.options.memfds!.path;
    if (!pathOf) throw new Error('memfd objects were not created before the fds');
    const path = pathOf(ref.key);
    const fd = owner.openat(path, (m.flags & ~OPEN_STRIP) | O_CLOEXEC);
    const at = owner.raw(NR.lseek, fd, m.pos, 0);
    if (at !== m.pos) {
      owner.raw(NR.close, fd);
      throw new UserError(`pid ${owner.pid}: cannot seek memfd ${ref.key} to ${m.pos}: result ${at}`);
    }
    return { taskFd: fd };
  },
};
