// signalfd → file_entry.sgfd: the signal mask ("sigmask" in fdinfo, hex)
// and the status flags.
import type { FownEntry, SignalfdEntry } from '../../images/index.js';

export function parseSignalfdMask(text: string): bigint {
  const m = /^sigmask:\s*([0-9a-fA-F]+)\s*$/m.exec(text);
  if (!m) throw new Error('no sigmask in fdinfo');
  return BigInt(`0x${m[1]}`);
}

export function describeSignalfd(id: number, flags: number, fown: FownEntry, fdinfo: string): SignalfdEntry {
  return { id, flags, fown, sigmask: parseSignalfdMask(fdinfo) };
}
