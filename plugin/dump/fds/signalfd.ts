// signalfd → file_entry.sgfd: the signal mask ("sigmask" in fdinfo, hex)
// and the status flags.
import { FdType, type FownEntry, type SignalfdEntry } from '../../images/index.js';
import type { DumpFdKind } from './types.js';

export function parseSignalfdMask(text: string): bigint {
  const m = /^sigmask:\s*([0-9a-fA-F]+)\s*$/m.exec(text);
  if (!m) throw new Error('no sigmask in fdinfo');
  return BigInt(`0x${m[1]}`);
}

export function describeSignalfd(id: number, flags: number, fown: FownEntry, fdinfo: string): SignalfdEntry {
  return { id, flags, fown, sigmask: parseSignalfdMask(fdinfo) };
}

export function signalfdKind(): DumpFdKind<null> {
  return {
    name: 'signalfd',
    claim: (f) => (f.target === 'anon_inode:[signalfd]' ? { data: null } : undefined),
    describe: (_ctx, id, p) => ({ type: FdType.SIGNALFD, id, sgfd: describeSignalfd(id, p.flags, p.fown, p.fdinfo) }),
  };
}
