// Regular files, directories, mem devices: reopened by path inside the
// owner, at the dumped offset. The file must still exist with its mode.
import { UserError } from '../../errors.js';
import { checkRegFile } from '../filecheck.js';
import { FdType, type FileEntry, type RegFileEntry } from '../../images/index.js';
import { NR } from '../task.js';
import { ownEntry } from './own-entry.js';
import type { RestoreFdKind } from './types.js';
import { O_CLOEXEC } from '../../inject/constants.js';

const O_PATH = 0o10000000;
const OPEN_STRIP = 0o100 | 0o200 | 0o400 | 0o1000 | 0o20000000; // CREAT EXCL NOCTTY TRUNC TMPFILE-bit

const regEntry = ownEntry('reg', 'a regular file', 'reg');
const reg = (f: FileEntry): RegFileEntry => regEntry.of(f);

/** The file a reg_file_entry names must still be there (size, build-id and mode, where recorded): plugin/restore/filecheck.ts. */
export { checkRegFile };

export const regKind: RestoreFdKind = {
  type: FdType.REG,
  name: 'regular file',
  setsFlags: false,
  check(ctx, file, use) {
    regEntry.require(file, use);
    if (ctx.options.checkFiles !== false) checkRegFile(reg(file), `fd ${use.fd}:`, use.pid, ctx.options.fileValidation);
  },
  flags: regEntry.flags,
  fown: regEntry.fown,
  create(_ctx, file, owner) {
    const r = reg(file);
    const fd = owner.openat(r.name, (r.flags & ~OPEN_STRIP) | O_CLOEXEC);
    if ((r.flags & O_PATH) === 0 && r.pos < 1n << 63n) {
      const at = owner.raw(NR.lseek, fd, r.pos, 0);
      if (at !== r.pos) {
        owner.raw(NR.close, fd);
        throw new UserError(`pid ${owner.pid}: cannot seek ${r.name} to ${r.pos}: result ${at}`);
      }
    }
    return { taskFd: fd };
  },
};
