// preDump(): CRIU's pre-dump — a full image set copied during a short
// freeze, with write tracking armed (plugin/dump/incremental.ts) so that the
// next dump (with prevImagesDir) copies only the pages written since. The
// tree always keeps running.
import { dump, type DumpOptions, type DumpResult } from './dump.js';

export type PreDumpOptions = Omit<DumpOptions, 'preDump' | 'leaveRunning' | 'lazyPages'>;

export function preDump(opts: PreDumpOptions): Promise<DumpResult> {
  return dump({ ...opts, preDump: true, leaveRunning: true });
}
