// signalfd: signalfd4(-1, mask) inside the owner.
import { UserError } from '../../errors.js';
import { FdType, type FileEntry } from '../../images/index.js';
import { NR } from '../task.js';
import { SCR_EVENT_ARGS } from './eventfd.js';
import type { RestoreFdKind } from './types.js';

function sg(f: FileEntry): NonNullable<FileEntry['sgfd']> {
  return f.sgfd!;
}

export const signalfdKind: RestoreFdKind = {
  type: FdType.SIGNALFD,
  name: 'signalfd',
  check(_ctx, file, use) {
    if (!file.sgfd) throw new UserError(`pid ${use.pid}: fd ${use.fd}: files.img id ${file.id} is a signalfd without signalfd data`);
  },
  flags: (f) => sg(f).flags,
  fown: (f) => sg(f).fown,
  create(_ctx, file, owner) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(sg(file).sigmask);
    owner.write(owner.scratch + SCR_EVENT_ARGS, b);
    return { taskFd: Number(owner.call('signalfd4', NR.signalfd4, -1, owner.scratch + SCR_EVENT_ARGS, 8, 0)) };
  },
};
