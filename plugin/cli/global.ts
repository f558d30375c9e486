// CRIU-compatible global options, accepted anywhere on the command line so
// that scripts written for `criu` work unchanged: -W/--work-dir,
// -o/--log-file (relative to the work dir), -v/-vN/-vvv/--verbosity=N,
// --no-default-config, --status-fd FD, --track-mem (implied: pre-dump always
// tracks writes), --timeout (dump and pre-dump use it, the other commands
// ignore it like CRIU) and the compatibility options of criu-options.ts.
// They are taken out of argv before commander sees it, and
// CRIU's short aliases (-S, -j) are spelled out. CRIU options and commands we
// do not implement are named in a clear error instead of commander's generic
// "unknown option".
import { closeSync, openSync, writeSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { UserError, ExitCode } from '../errors.js';
import { compatValueTaking, criuOptions, resetCriuOptions, takeCriuOption } from './criu-options.js';

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
  return resolveInWorkDir(globals.logFile, imagesDir);
}

/**
 * A relative path given to CRIU (log file, --pidfile) names a file in the
 * work dir: CRIU changes into it before doing anything.
 */
export function resolveInWorkDir(path: string, imagesDir: string | undefined): string {
  return isAbsolute(path) ? path : join(workDirFor(imagesDir), path);
}

/**
 * Writes a pid file like CRIU: created exclusively (an existing file is an
 * error), mode 0600, the decimal pid without a newline.
 */
export function writePidfile(path: string, pid: number): void {
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (e) {
    throw new UserError(`--pidfile ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    writeSync(fd, String(pid));
  } finally {
    closeSync(fd);
  }
}

/**
 * The progress lines of a dump or restore: to stderr with --verbose, and
 * into the log (-o, -v3 and up) like CRIU's info messages.
 */
export async function progressLog(verbose: boolean): Promise<(line: string) => void> {
  const { logger } = await import('../log.js');
  const l = logger();
  return (line) => {
    if (verbose) process.stderr.write(`${line}\n`);
    l.info(line);
  };
}

/** page-server/lazy-pages -d: CRIU daemonizes; we run in the foreground only. */
export function refuseDaemon(o: { daemon?: boolean }, command: string): void {
  if (o.daemon) {
    throw new UserError(`CRIU option -d/--daemon is not supported for ${command}: start it in the background (&) with --status-fd FD and wait for its zero byte`, { exitCode: ExitCode.usage });
  }
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
  '--external', '--root',
  '--network-lock', '--action-script', '--exec-cmd', '--enable-external-sharing',
  '--enable-external-masters', '--force-irmap', '--irmap-scan-path', '--lsm-profile', '--lsm-mount-context', '--orphan-pts-master',
  '--enable-fs', '--weak-sysctls', '--lazy-migrate', '--remote', '--config', '--display-stats', '--mntns-compat-mode',
  '--skip-mnt', '--allow-uprobes', '--unprivileged', '--veth-pair', '--join-ns',
  '--ps-socket', '--leave-stopped', '--log-pid', '--libdir', '--join-ns', '--close', '--stream', '--check-only', '--tls-no-cn-verify',
  '--tls-cacrl', '--shell-job-pgid', '--deprecated', '--no-seccomp', '--criu-pidfd', '--no-mntns-compat-mode',
]);

/** Commands that take CRIU's --timeout (seconds to freeze the tree); the others accept and ignore it, as CRIU does. */
const timeoutCommands = new Set(['dump', 'pre-dump']);

/** Short CRIU options that are spelled differently here (or not at all). */
const shortAliases: Record<string, string> = { '-S': '--restore-sibling', '-j': '--shell-job', '-x': '--ext-unix-sk', '--daemon': '-d' };
const unsupportedShort: Record<string, string> = {
  '-s': '--leave-stopped', '-r': '--root', '-J': '--join-ns', '-L': '--libdir',
};

/** CRIU commands without a lazy-restore counterpart, and why. */
const unsupportedCommands: Record<string, string> = {
  dedup: 'image deduplication is not implemented',
  cpuinfo: 'cpuinfo images are not written or checked',
  exec: 'the exec action is not implemented (CRIU deprecated it too)',
  'image-streamer': 'image streaming is not implemented',
};

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
  resetCriuOptions();
  let command: string | undefined;
  let timeout: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    if (command === undefined && !a.startsWith('-') && (i === 0 || !valueTaking.has(argv[i - 1]!))) {
      command = a;
      const why = Object.hasOwn(unsupportedCommands, a) ? unsupportedCommands[a] : undefined;
      if (why !== undefined) throw new UserError(`CRIU command "${a}" is not supported by lazy-restore: ${why}`, { exitCode: ExitCode.usage });
    }
    const [name, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = (): string => {
      if (inline !== undefined) return inline;
      const v = needValue(i, name);
      i++;
      return v;
    };
    const used = takeCriuOption(argv, i);
    if (used > 0) {
      i += used - 1;
      continue;
    }
    if (name === '--timeout') {
      const v = value();
      if (!/^\d+$/.test(v)) throw new UserError(`--timeout needs a number of seconds, got "${v}"`, { exitCode: ExitCode.usage });
      timeout = v;
    }
    else if (name === '-W' || name === '--work-dir') globals.workDir = value();
    else if (name === '-o' || name === '--log-file') globals.logFile = value();
    else if (name === '--verbosity') {
      // An optional argument in CRIU (--verbosity=N; bare --verbosity adds one);
      // a separate numeric word is taken too.
      if (inline !== undefined) globals.verbosity = parseLevel(inline);
      else if (/^\d+$/.test(argv[i + 1] ?? '')) globals.verbosity = parseLevel(argv[++i]!);
      else globals.verbosity = Math.min(4, (globals.verbosity ?? 2) + 1);
    }
    else if (name === '--no-default-config') { /* we read no config files */ }
    else if (name === '--track-mem' || name === '--no-track-mem') { /* pre-dump always tracks writes (uffd write-protect) */ }
    else if (Object.hasOwn(shortAliases, a)) rest.push(shortAliases[a]!);
    else if (Object.hasOwn(unsupportedShort, a)) {
      throw new UserError(`CRIU option ${a} (${unsupportedShort[a]!}) is not supported by lazy-restore`, { exitCode: ExitCode.usage });
    }
    else if (name === '--status-fd') {
      const fd = Number(value());
      if (!Number.isInteger(fd) || fd < 0) throw new UserError(`--status-fd needs a file descriptor number`, { exitCode: ExitCode.usage });
      globals.statusFd = fd;
    } else if (/^-v+$/.test(a)) globals.verbosity = Math.min(4, (globals.verbosity ?? 2) + a.length - 1);
    else if (/^-v\d+$/.test(a)) globals.verbosity = parseLevel(a.slice(2));
    else if (a.startsWith('-v') && !a.startsWith('-v-')) {
      // getopt reads "-verbosity=0" as -v with the argument "erbosity=0",
      // which CRIU turns into a number with atoi (0 here); CRIU's test suite
      // passes exactly that to `criu check`.
      globals.verbosity = Math.min(4, Number.parseInt(a.slice(2), 10) || 0);
    }
    else if (unsupportedCriuOptions.has(name)) {
      throw new UserError(`CRIU option ${name} is not supported by lazy-restore`, { exitCode: ExitCode.usage });
    } else rest.push(a);
  }
  // CRIU (getopt) takes options before the command too ("criu -D d -v4 dump
  // -t 1"); commander wants the command first.
  if (command !== undefined && rest[0] !== command) {
    const at = rest.indexOf(command);
    if (at > 0) rest.unshift(...rest.splice(at, 1));
  }
  if (timeout !== undefined && command !== undefined && timeoutCommands.has(command)) rest.push('--timeout', timeout);
  if (command === 'restore' && criuOptions().emptyNs.length > 0) {
    throw new UserError('CRIU option --empty-ns is not supported for restore (it would restore into a new, empty network namespace)', { exitCode: ExitCode.usage });
  }
  return rest;
}

/** Options (of any command) whose value is the next argument: never taken for the command name. */
const valueTaking = new Set([
  '-W', '--work-dir', '-o', '--log-file', '--status-fd', '-D', '--images-dir', '-t', '--tree', '--pidfile',
  '--address', '--port', '--prev-images-dir', '--timeout', '--feature', '--verbosity', ...compatValueTaking,
]);

function parseLevel(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UserError(`bad verbosity level ${v}`, { exitCode: ExitCode.usage });
  return Math.min(n, 4);
}
