// The /proc facts of one fd and the kind that claims it: used to plan the
// tree's fds (index.ts planFds) and files that exist only in flight, passed
// in a unix socket's queued message (SCM_RIGHTS) and peeked into the dumper
// (table.ts scmFile: pid is then the dumper's own).
import { readFileSync, statSync } from 'node:fs';
import { parseFdinfo } from '../proc.js';
import { O_CLOEXEC, ZERO_FOWN } from './common.js';
import type { DumpFdKind, DumpFdOptions, FdFacts, PlannedFd } from './types.js';

export function facts(pid: number, fd: number, target: string, opts: DumpFdOptions, proc: { sid: number; pgid: number }): FdFacts | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
  } catch {
    return undefined; // closed meanwhile; the post-freeze pass sees the final table
  }
  const info = parseFdinfo(text);
  const f: FdFacts = {
    pid, fd, target, flags: info.flags & ~O_CLOEXEC, cloexec: (info.flags & O_CLOEXEC) !== 0, pos: info.pos,
    fdinfo: text, stdio: fd <= 2, shellJob: opts.shellJob, tcpEstablished: opts.tcpEstablished, skipInFlight: opts.skipInFlight, ghostLimit: opts.ghostLimit, linkRemap: opts.linkRemaps !== undefined, sid: proc.sid, pgid: proc.pgid, where: `pid ${pid}: fd ${fd} (${target})`,
  };
  try {
    f.st = statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
  } catch (e) {
    f.statError = (e as NodeJS.ErrnoException).code ?? String(e);
  }
  return f;
}

/** The planned fd (the first kind that claims it), or the problem that refuses it. */
export function claimFd(kinds: readonly DumpFdKind[], f: FdFacts): PlannedFd | string {
  for (const kind of kinds) {
    const r = kind.claim(f);
    if (r === undefined) continue;
    if (typeof r === 'string') return r;
    return { ...f, kind, data: r.data, fown: { ...ZERO_FOWN } };
  }
  return `${f.where}: ${f.target.startsWith('socket:') ? 'sockets are' : 'this kind of file is'} not supported`;
}
