// Process groups whose leader is not in the tree (CRIU's pgid helper): a
// process dumped in group G where no process of the tree is G (its leader
// exited, e.g. zdtm zombie01: a child that made its own group, cloned a
// sibling with CLONE_PARENT and exited). Restore recreates the group with a
// short-lived helper: a stub cloned in the member with pid G, which makes
// group G (setpgid(0, 0)); the members join it; the helper is then killed
// and reaped by the member that cloned it, whose stray SIGCHLD is taken back.
import { UserError } from '../errors.js';
import { cont, waitPid } from '../inject/ptrace.js';
import { injectClone } from './process.js';
import { drainSigchld } from './taskstate.js';
import { NR, RemoteTask } from './task.js';

export interface GroupMember {
  /** The member's pid (as in the images). */
  pid: number;
  /** Its dumped process group. */
  pgid: number;
  task: RemoteTask;
}

export interface GroupHelperHooks {
  /** A helper was created (host pid): kill it if the restore fails. */
  created(outer: number): void;
  /** The helper is gone (reaped). */
  gone(outer: number): void;
}

const HELPER_WAIT_MS = 10000;

/** The groups of `members` that need a helper (led by no process in `inTree`), in first-member order. */
export function orphanGroups(members: readonly { pid: number; pgid: number }[], inTree: ReadonlySet<number>, inherited?: number): Map<number, number[]> {
  const groups = new Map<number, number[]>();
  for (const m of members) {
    if (m.pgid === m.pid || m.pgid <= 0 || inTree.has(m.pgid) || m.pgid === inherited) continue;
    const g = groups.get(m.pgid) ?? [];
    g.push(m.pid);
    groups.set(m.pgid, g);
  }
  return groups;
}

/**
 * Puts every member whose group has no leader in the tree into a group of
 * that id. `inherited`: a group the restored root keeps from the restorer
 * (--shell-job), never recreated.
 */
export function restoreOrphanGroups(members: readonly GroupMember[], inTree: ReadonlySet<number>, hooks: GroupHelperHooks, inherited?: number): void {
  const byPid = new Map(members.map((m) => [m.pid, m]));
  for (const [pgid, pids] of orphanGroups(members, inTree, inherited)) {
    const first = byPid.get(pids[0]!)!;
    let outer: number;
    try {
      outer = injectClone(first.task, pgid, false);
    } catch (e) {
      if (e instanceof UserError && /EEXIST/.test(e.message)) {
        throw new UserError(`pid ${first.pid}: cannot recreate its process group ${pgid}: pid ${pgid} is in use (clone3 set_tid: EEXIST)`);
      }
      throw e;
    }
    hooks.created(outer);
    const helper = new RemoteTask(outer);
    helper.findGadget();
    helper.scratch = first.task.scratch;
    helper.call('setpgid(0, 0)', NR.setpgid, 0, 0);
    for (const pid of pids) byPid.get(pid)!.task.call(`setpgid(0, ${pgid})`, NR.setpgid, 0, pgid);
    // Kill the helper; as its tracer, see it die, which hands it to its parent to reap.
    process.kill(outer, 'SIGKILL');
    const deadline = Date.now() + HELPER_WAIT_MS;
    for (;;) {
      const st = waitPid(outer, Math.max(0, deadline - Date.now()));
      if (st === null) throw new UserError(`pid ${first.pid}: the helper for process group ${pgid} did not end within ${HELPER_WAIT_MS} ms`);
      if (st.kind === 'exited' || st.kind === 'signaled') break;
      try { cont(outer, 0); } catch { /* already dying */ }
    }
    // Its parent reaps it (wait4 with the pid the member sees: the group id).
    const r = first.task.raw(NR.wait4, pgid, 0, 0, 0);
    if (r !== BigInt(pgid)) throw new UserError(`pid ${first.pid}: could not reap the helper for process group ${pgid} (wait4 returned ${r})`);
    hooks.gone(outer);
    drainSigchld(first.task);
  }
}
