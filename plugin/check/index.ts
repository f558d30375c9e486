// `lazy-restore check`: probes the kernel features the tool relies on (like
// `criu check`). The probes run in a separate helper program (native/helpers/
// lr-check.c) so that a misbehaving probe cannot disturb the caller; this
// module adds what each result means for the user and the overall verdict.
import { execFile } from 'node:child_process';
import { access } from 'node:fs/promises';
import { promisify } from 'node:util';
import { helperPath } from '../native/addon.js';

const execFileP = promisify(execFile);

export type CheckStatus = 'ok' | 'missing' | 'info';

export interface CheckResult {
  name: string;
  status: CheckStatus;
  detail: string;
  /** What a missing feature means for the user. */
  impact: string;
  /** Whether lazy-restore cannot work without it. */
  required: boolean;
}

interface Meaning { impact: string; required: boolean }

const meanings: Record<string, Meaning> = {
  kernel: { impact: 'Linux 6.x on x86_64 is the supported target', required: true },
  capabilities: { impact: 'dump and restore need CAP_SYS_PTRACE and CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE (run as root)', required: true },
  userfaultfd: { impact: 'no lazy restore: restore --lazy-pages and the lazy-pages daemon cannot work (eager restore still works)', required: false },
  '/dev/userfaultfd': { impact: 'only a fallback when the userfaultfd syscall is blocked', required: false },
  'uffd-api': { impact: 'no lazy restore', required: false },
  'uffd:EVENT_FORK': { impact: 'a lazily restored process that forks would give its child zero pages: lazy restore refuses to run', required: false },
  'uffd:EVENT_REMAP': { impact: 'mremap of lazy memory cannot be followed: lazy restore refuses to run', required: false },
  'uffd:EVENT_REMOVE': { impact: 'madvise(MADV_DONTNEED) of lazy memory cannot be followed: lazy restore refuses to run', required: false },
  'uffd:EVENT_UNMAP': { impact: 'munmap of lazy memory cannot be followed: lazy restore refuses to run', required: false },
  'uffd:THREAD_ID': { impact: 'fault statistics cannot name the faulting thread', required: false },
  'uffd:WP_ASYNC': { impact: 'no write tracking: pre-dump / incremental dumps are unavailable (soft-dirty is not used)', required: false },
  'uffd:WP_UNPOPULATED': { impact: 'write tracking misses never-touched pages', required: false },
  'uffd:MOVE': { impact: 'pages cannot be moved into place without a copy (optional optimisation)', required: false },
  'uffd:POISON': { impact: 'unservable pages cannot be poisoned individually; the process is killed instead', required: false },
  ptrace: { impact: 'no dump and no restore (both work by ptrace syscall injection)', required: true },
  'clone3-set_tid': { impact: 'restore cannot recreate original PIDs (use --pidns where supported)', required: true },
  pidfd_open: { impact: 'restored processes cannot be watched for exit; the daemon-death watchdog is unavailable', required: true },
  pidfd_getfd: { impact: 'the userfaultfd created inside a restored process cannot be handed to the daemon: no lazy restore', required: false },
  'prctl-mm-map': { impact: 'brk, argv/env bounds, auxv and /proc/PID/exe cannot be restored', required: true },
  vdso: { impact: 'the vDSO cannot be moved to its dumped address: restored programs crash on clock_gettime', required: true },
  'pagemap-scan': { impact: 'write tracking for incremental dumps is unavailable', required: false },
  'soft-dirty': { impact: 'none: incremental dumps use userfaultfd write-protect', required: false },
  timerfd: { impact: 'timerfds cannot be restored with their expiration count (TFD_IOC_SET_TICKS): a tree holding one is refused', required: false },
  'kcmp-epoll-tfd': { impact: 'epoll watches cannot be matched to the files they watch: a tree holding an epoll fd is refused', required: false },
  'ptrace-rseq-config': { impact: 'rseq registrations cannot be read: a tree using rseq (glibc registers it for every thread) cannot be dumped', required: false },
  'ptrace-seccomp-filter': { impact: 'seccomp filters cannot be read: a tree with seccomp filters is refused at dump', required: false },
  'ptrace-suspend-seccomp': { impact: 'a thread in seccomp mode cannot be dumped (its injected syscalls would be filtered)', required: false },
  'ns-pid': { impact: 'pids inside a pid namespace cannot be read: trees in their own pid namespace cannot be dumped', required: false },
  'fdinfo-lock': { impact: 'file locks are not visible: --file-locks cannot dump them', required: false },
  'so-buf-lock': { impact: 'SO_BUF_LOCK of inet sockets is neither read nor restored', required: false },
  crit: { impact: 'images cannot be cross-checked with Debian crit (optional; apt-get install criu)', required: false },
};

function meaningOf(name: string): Meaning {
  return meanings[name] ?? { impact: 'optional kernel feature', required: false };
}

export async function runChecks(): Promise<CheckResult[]> {
  const { stdout } = await execFileP(helperPath('lr-check'), [], { timeout: 20_000 });
  const results: CheckResult[] = [];
  for (const line of stdout.split('\n')) {
    if (!line) continue;
    const [name = '', status = 'info', detail = ''] = line.split('\t');
    const st: CheckStatus = status === 'ok' || status === 'missing' ? status : 'info';
    results.push({ name, status: st, detail, ...meaningOf(name) });
  }
  let crit = true;
  try {
    await access('/usr/bin/crit');
  } catch {
    crit = false;
  }
  results.push({ name: 'crit', status: crit ? 'ok' : 'missing', detail: crit ? '/usr/bin/crit' : 'not installed', ...meaningOf('crit') });
  return results;
}

/** Lazy restore needs every one of these. */
export const lazyRestoreFeatures = ['userfaultfd', 'uffd-api', 'uffd:EVENT_FORK', 'uffd:EVENT_REMAP', 'uffd:EVENT_REMOVE', 'uffd:EVENT_UNMAP', 'pidfd_getfd'] as const;

export interface CheckVerdict { ok: boolean; lazyOk: boolean; missingRequired: string[] }

export function verdict(results: CheckResult[]): CheckVerdict {
  const missing = results.filter((r) => r.status === 'missing');
  const missingRequired = missing.filter((r) => r.required).map((r) => r.name);
  const lazyOk = lazyRestoreFeatures.every((f) => results.some((r) => r.name === f && r.status === 'ok'));
  return { ok: missingRequired.length === 0, lazyOk, missingRequired };
}

export function formatChecks(results: CheckResult[]): string {
  const w = Math.max(...results.map((r) => r.name.length));
  const lines = results.map((r) => {
    const tag = r.status === 'ok' ? 'OK     ' : r.status === 'missing' ? 'MISSING' : 'INFO   ';
    const tail = r.status === 'missing' ? ` -> ${r.impact}` : '';
    return `${tag} ${r.name.padEnd(w)}  ${r.detail}${tail}`;
  });
  const v = verdict(results);
  lines.push('');
  lines.push(v.ok ? (v.lazyOk ? 'Looks good: dump, restore and lazy restore are supported.' : 'Dump and restore are supported; lazy restore is not (see above).')
    : `Not supported: ${v.missingRequired.join(', ')}.`);
  return `${lines.join('\n')}\n`;
}
