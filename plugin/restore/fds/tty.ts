// Terminals: only --shell-job stdio, which stays the restorer's own
// (as the restore has always done; CRIU reattaches the shell's terminal).
import { UserError } from '../../errors.js';
import { FdType } from '../../images/index.js';
import type { RestoreFdKind } from './types.js';

export const ttyKind: RestoreFdKind = {
  type: FdType.TTY,
  name: 'terminal',
  check(_ctx, _file, use) {
    if (use.fd > 2) throw new UserError(`pid ${use.pid}: fd ${use.fd} is a terminal, which restore supports only as stdio of a --shell-job`);
  },
  inherits: () => true,
  flags: (f) => f.tty?.flags ?? 0,
  create() {
    throw new Error('terminals are inherited, never created');
  },
};
