// CLI commands of the product area: check (like `criu check`) and stats.
// Heavy modules are imported inside the action handlers.
import type { Command } from 'commander';
import { UserError } from '../../errors.js';

/** CRIU's `check --feature` names that map onto our checks (see `criu check --help`). */
const criuFeatures: Record<string, readonly string[]> = {
  uffd: ['userfaultfd', 'uffd-api'],
  // Lazy restore of processes that fork, mremap, madvise or munmap.
  'uffd-noncoop': ['userfaultfd', 'uffd-api', 'uffd:EVENT_FORK', 'uffd:EVENT_REMAP', 'uffd:EVENT_REMOVE', 'uffd:EVENT_UNMAP'],
  // Our pre-dump tracks writes with userfaultfd write-protect and PAGEMAP_SCAN, not soft-dirty.
  mem_dirty_track: ['uffd:WP_ASYNC', 'pagemap-scan'],
  clone3_set_tid: ['clone3-set_tid'],
  pidfd_store: ['pidfd_open', 'pidfd_getfd'],
  can_map_vdso: ['vdso'],
  // fd kinds we dump and restore, with the kernel support CRIU checks for them.
  timerfd: ['timerfd'],
  kcmp_epoll: ['kcmp-epoll-tfd'],
  // State dump reads with ptrace or from /proc, and restores (plugin/dump/seccomp.ts, locks.ts, fds/inet.ts).
  get_rseq_conf: ['ptrace-rseq-config'],
  seccomp_filters: ['ptrace-seccomp-filter'],
  seccomp_suspend: ['ptrace-suspend-seccomp'],
  ns_pid: ['ns-pid'],
  fdinfo_lock: ['fdinfo-lock'],
  sockopt_buf_lock: ['so-buf-lock'],
};

/** The rest of CRIU's feature names: valid there, not something lazy-restore does. */
const criuOnlyFeatures = new Set([
  'mnt_id', 'aio_remap', 'tun', 'tun_ns', 'userns',
  'loginuid', 'cgroupns', 'autofs', 'tcp_half_closed', 'compat_cr', 'sk_ns', 'sk_unix_file', 'net_diag_raw', 'nsid',
  'link_nsid', 'timens', 'external_net_ns', 'newifindex', 'nftables', 'has_ipt_legacy',
  'apparmor_stacking', 'network_lock_nftables', 'memfd_hugetlb', 'move_mount_set_group', 'openat2',
  'ipv6_freebind', 'pagemap_scan_guard_pages',
]);

/** Our check names for a --feature argument (ours, CRIU's, or the lazy-pages group). */
function featureChecks(name: string, lazy: readonly string[]): readonly string[] {
  if (name === 'lazy-pages' || name === 'lazy_pages') return lazy;
  if (Object.hasOwn(criuFeatures, name)) return criuFeatures[name]!;
  if (criuOnlyFeatures.has(name)) throw new UserError(`check: CRIU feature ${name} is not supported by lazy-restore`);
  return [name];
}

export function register(program: Command): void {
  program
    .command('check')
    .description('check that this kernel supports everything lazy-restore uses (like criu check)')
    .option('--json', 'print the results as JSON')
    .option('--feature <name>', 'check one feature only; exit 1 if it is missing (ours, e.g. uffd:EVENT_FORK or lazy-pages, or CRIU\'s: uffd, uffd-noncoop, mem_dirty_track, clone3_set_tid, pidfd_store, can_map_vdso, timerfd, kcmp_epoll, get_rseq_conf, seccomp_filters, seccomp_suspend, ns_pid, fdinfo_lock, sockopt_buf_lock)')
    .option('--extra', 'accepted for CRIU compatibility (every check always runs)')
    .option('--experimental', 'accepted for CRIU compatibility (every check always runs)')
    .option('--all', 'accepted for CRIU compatibility (every check always runs)')
    .addHelpText('after', '\nExamples:\n  lazy-restore check\n  lazy-restore check --feature lazy-pages\n  lazy-restore check --feature uffd-noncoop   # CRIU\'s name, as runc and LXC ask\n  lazy-restore check --json')
    .action(async (opts: { json?: boolean; feature?: string }) => {
      const { runChecks, formatChecks, verdict, lazyRestoreFeatures } = await import('../../check/index.js');
      // Refuse a feature CRIU knows but we do not before probing anything.
      if (opts.feature !== undefined) featureChecks(opts.feature, lazyRestoreFeatures);
      const results = await runChecks();
      if (opts.feature !== undefined) {
        const names = featureChecks(opts.feature, lazyRestoreFeatures);
        const sel = results.filter((r) => names.includes(r.name));
        if (sel.length === 0) throw new UserError(`check: unknown feature ${opts.feature}`);
        const bad = sel.filter((r) => r.status !== 'ok');
        process.stdout.write(opts.json ? `${JSON.stringify(sel, null, 2)}\n` : formatChecks(sel).split('\n\n')[0] + '\n');
        if (bad.length) throw new UserError(`check: ${bad.map((r) => r.name).join(', ')} not supported`);
        return;
      }
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ results, verdict: verdict(results) }, null, 2)}\n`);
      } else {
        process.stdout.write(formatChecks(results));
      }
      if (!verdict(results).ok) throw new UserError('check: required kernel features are missing');
    });

  program
    .command('stats <file>')
    .description('summarise a --stats-file and optionally draw its fault timeline')
    .option('--plot <out.svg>', 'write an SVG: time on x, address on y, faults and background pushes in two colours')
    .option('--pid <pid>', 'only this process', (v) => Number(v))
    .option('--json', 'print the stats file back as JSON (validated)')
    .addHelpText('after', '\nExamples:\n  lazy-restore lazy-pages -D img --stats-file img/stats.json\n  lazy-restore stats img/stats.json --plot timeline.svg')
    .action(async (file: string, opts: { plot?: string; pid?: number; json?: boolean }) => {
      const { readFile, writeFile } = await import('node:fs/promises');
      const { isStatsFile, plotTimeline, summarize } = await import('../../stats/index.js');
      let parsed: unknown;
      try {
        parsed = JSON.parse(await readFile(file, 'utf8'));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        throw new UserError(`${file}: ${code ? `cannot read (${code})` : 'not valid JSON'}`);
      }
      if (!isStatsFile(parsed)) throw new UserError(`${file}: not a lazy-restore stats file (version 1)`);
      process.stdout.write(opts.json ? `${JSON.stringify(parsed, null, 2)}\n` : summarize(parsed));
      if (opts.plot !== undefined) {
        await writeFile(opts.plot, plotTimeline(parsed, opts.pid !== undefined ? { pid: opts.pid } : {}));
        process.stdout.write(`timeline written to ${opts.plot}\n`);
      }
    });
}
