// Scheduling state of a restored thread (thread_core sched_nice /
// sched_policy / sched_prio), injected in that thread before the creds
// drop the privilege a lower nice value or a real-time policy needs.
import { UserError, errnoName } from '../errors.js';
import type { ThreadCoreEntry } from '../images/index.js';
import { type RemoteTask } from './task.js';

const NR_SETPRIORITY = 141;
const NR_SCHED_SETSCHEDULER = 144;
const PRIO_PROCESS = 0;
const SCHED_OTHER = 0;

export function restoreSched(t: RemoteTask, pid: number, tid: number, tc: ThreadCoreEntry): void {
  const who = pid === tid ? `pid ${pid}` : `pid ${pid} tid ${tid}`;
  const policy = tc.sched_policy ?? SCHED_OTHER;
  if (policy !== SCHED_OTHER) {
    const param = Buffer.alloc(8);
    param.writeInt32LE(tc.sched_prio ?? 0, 0);
    t.write(t.scratch + 0x1000n, param);
    const r = t.raw(NR_SCHED_SETSCHEDULER, 0, policy, t.scratch + 0x1000n);
    if (r < 0n && r > -4096n) throw new UserError(`${who}: cannot restore the scheduling policy ${policy} (priority ${tc.sched_prio ?? 0}): sched_setscheduler: ${errnoName(Number(-r))}`);
  }
  const nice = tc.sched_nice ?? 0;
  if (nice !== 0) {
    // who = 0: the calling thread (Linux applies PRIO_PROCESS to one thread).
    const r = t.raw(NR_SETPRIORITY, PRIO_PROCESS, 0, nice);
    if (r < 0n && r > -4096n) throw new UserError(`${who}: cannot restore nice ${nice}: setpriority: ${errnoName(Number(-r))}`);
  }
}
