// signalfd: signalfd4(-1, mask) inside the owner.
import { FdType } from '../../images/index.js';
import { NR } from '../task.js';
import { SCR_EVENT_ARGS } from './eventfd.js';
import { ownEntry } from './own-entry.js';
import type { RestoreFdKind } from './types.js';

const sg = ownEntry('sgfd', 'a signalfd', 'signalfd');

export const signalfdKind: RestoreFdKind = {
  type: FdType.SIGNALFD,
  name: 'signalfd',
  ...sg.kind,
  create(_ctx, file, owner) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(sg.of(file).sigmask);
    owner.write(owner.scratch + SCR_EVENT_ARGS, b);
    return { taskFd: Number(owner.call('signalfd4', NR.signalfd4, -1, owner.scratch + SCR_EVENT_ARGS, 8, 0)) };
  },
};
