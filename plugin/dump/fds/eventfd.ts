// eventfd → file_entry.efd: the counter and the status flags, from
// /proc/PID/fdinfo ("eventfd-count" is printed in hex). A semaphore-mode
// eventfd is refused: CRIU's image has no field for EFD_SEMAPHORE, and
// restoring it as a plain counter would change what reads return.
import { FdType, type EventfdFileEntry, type FownEntry } from '../../images/index.js';
import { ZERO_FOWN } from './common.js';
import type { DumpFdKind } from './types.js';

export interface EventfdInfo {
  counter: bigint;
  semaphore: boolean;
}

export function parseEventfdFdinfo(text: string): EventfdInfo {
  const c = /^eventfd-count:\s*([0-9a-fA-F]+)\s*$/m.exec(text);
  if (!c) throw new Error('no eventfd-count in fdinfo');
  const s = /^eventfd-semaphore:\s*(\d+)\s*$/m.exec(text);
  return { counter: BigInt(`0x${c[1]}`), semaphore: s !== null && s[1] !== '0' };
}

/** The entry for one eventfd, or a problem (a sentence) if it cannot be restored faithfully. */
export function describeEventfd(id: number, flags: number, fown: FownEntry, fdinfo: string): EventfdFileEntry | string {
  const info = parseEventfdFdinfo(fdinfo);
  if (info.semaphore) return 'eventfd in semaphore mode (EFD_SEMAPHORE) is not supported';
  return { id, flags, fown, counter: info.counter };
}

export function eventfdKind(): DumpFdKind<null> {
  return {
    name: 'eventfd',
    claim(f) {
      if (f.target !== 'anon_inode:[eventfd]') return undefined;
      const e = describeEventfd(0, f.flags, ZERO_FOWN, f.fdinfo);
      return typeof e === 'string' ? `${f.where}: ${e}` : { data: null };
    },
    describe(_ctx, id, p) {
      const e = describeEventfd(id, p.flags, p.fown, p.fdinfo);
      if (typeof e === 'string') throw new Error(`${p.where}: ${e}`);
      return { type: FdType.EVENTFD, id, efd: e };
    },
  };
}
