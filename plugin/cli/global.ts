// CRIU-compatible global options, accepted anywhere on the command line so
// that scripts written for `criu` work unchanged: -W/--work-dir,
// -o/--log-file (relative to the work dir), -v/-vN/-vvv/--verbosity=N,
// --no-default-config, --status-fd FD. They are taken out of argv before
// commander sees it. CRIU options we do not implement are named in a clear
// error instead of commander's generic "unknown option".
import { writeSync, closeSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { UserError, ExitCode } from '../errors.js';

export interface GlobalOptions {
  workDir: string | undefined;
  logFile: string | undefined;
  verbosity: number | undefined;
  statusFd: number | undefined;
}

const globals: GlobalOptions = { workDir: undefined, logFile: undefined, verbosity: undefined, statusFd: undefined };

export function globalOptions(): Readonly<GlobalOptions> {
  return globals;
}

/** The work dir (-W), else the images dir, else the current directory. */
export function workDirFor(imagesDir: string | undefined): string {
  return globals.workDir ?? imagesDir ?? process.cwd();
}

/** Log file path resolved against the work dir like CRIU does. */
export function resolveLogFile(imagesDir: string | undefined): string | undefined {
  if (globals.logFile === undefined || globals.logFile === '-') return undefined;
  return isAbsolute(globals.logFile) ? globals.logFile : join(workDirFor(imagesDir), globals.logFile);
}

/**
 * Tells a waiting parent that the service is ready: CRIU writes one zero
 * byte to --status-fd and closes it (lazy-pages, page-server).
 */
export function signalReady(): void {
  const fd = globals.statusFd;
  if (fd === undefined) return;
  globals.statusFd = undefined;
  try {
    writeSync(fd, Buffer.from([0]));
    closeSync(fd);
  } catch (e) {
    throw new UserError(`--status-fd ${fd}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}

/** CRIU options that lazy-restore deliberately does not implement. */
const unsupportedCriuOptions = new Set([
  '--tcp-established', '--tcp-close', '--skip-in-flight', '--ext-unix-sk', '--file-locks', '--link-remap',
  '--ghost-limit', '--manage-cgroups', '--cgroup-root', '--cgroup-props', '--cgroup-props-file', '--cgroup-dump-controller',
  '--cgroup-yard', '--evasive-devices', '--inherit-fd', '--external', '--ext-mount-map', '--root', '--freeze-cgroup',
  '--auto-dedup', '--cpu-cap', '--network-lock', '--timeout', '--action-script', '--exec-cmd', '--enable-external-sharing',
  '--enable-external-masters', '--force-irmap', '--irmap-scan-path', '--lsm-profile', '--lsm-mount-context', '--orphan-pts-master',
  '--enable-fs', '--weak-sysctls', '--lazy-migrate', '--remote', '--config', '--display-stats', '--mntns-compat-mode',
  '--skip-mnt', '--ghost-fiemap', '--allow-uprobes', '--unprivileged', '--veth-pair', '--join-ns', '--empty-ns',
  '--pre-dump-mode', '--track-mem', '--ps-socket', '--stream', '--check-only', '--file-validation', '--tls-no-cn-verify',
  '--tls-cacrl', '--shell-job-pgid',
]);

/**
 * Takes the global options out of argv (returns the rest) and records them.
 * Throws a UserError naming any CRIU option we do not support.
 */
export function extractGlobalOptions(argv: string[]): string[] {
  const rest: string[] = [];
  const needValue = (i: number, name: string): string => {
    const v = argv[i + 1];
    if (v === undefined) throw new UserError(`option ${name} needs a value`, { exitCode: ExitCode.usage });
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    const [name, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = (): string => {
      if (inline !== undefined) return inline;
      const v = needValue(i, name);
      i++;
      return v;
    };
    if (name === '-W' || name === '--work-dir') globals.workDir = value();
    else if (name === '-o' || name === '--log-file') globals.logFile = value();
    else if (name === '--verbosity') globals.verbosity = parseLevel(value());
    else if (name === '--no-default-config') { /* we read no config files */ }
    else if (name === '--status-fd') {
      const fd = Number(value());
      if (!Number.isInteger(fd) || fd < 0) throw new UserError(`--status-fd needs a file descriptor number`, { exitCode: ExitCode.usage });
      globals.statusFd = fd;
    } else if (/^-v+$/.test(a)) globals.verbosity = Math.min(4, (globals.verbosity ?? 2) + a.length - 1);
    else if (/^-v\d$/.test(a)) globals.verbosity = parseLevel(a.slice(2));
    else if (unsupportedCriuOptions.has(name)) {
      throw new UserError(`CRIU option ${name} is not supported by lazy-restore`, { exitCode: ExitCode.usage });
    } else rest.push(a);
  }
  return rest;
}

function parseLevel(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UserError(`bad verbosity level ${v}`, { exitCode: ExitCode.usage });
  return Math.min(n, 4);
}
