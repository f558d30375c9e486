// Logging for the library and the CLI, with CRIU's verbosity levels:
// 0 messages only, 1 + errors, 2 + warnings (default), 3 + info, 4 + debug.
// Messages go to stderr, or to a log file (CRIU's -o, relative to -W).
// Every line may carry a context prefix like CRIU's "pid-fd" ("1234-7: ...").
import { appendFileSync, openSync, closeSync } from 'node:fs';

export const LogLevel = { msg: 0, error: 1, warn: 2, info: 3, debug: 4 } as const;
export type LogLevel = (typeof LogLevel)[keyof typeof LogLevel];

interface LogConfig { level: number; file: string | undefined }
const config: LogConfig = { level: LogLevel.warn, file: undefined };

export function configureLog(opts: { level?: number; file?: string }): void {
  if (opts.level !== undefined) config.level = opts.level;
  if (opts.file !== undefined) {
    // Create/truncate once so a run's log starts empty, like CRIU.
    closeSync(openSync(opts.file, 'w'));
    config.file = opts.file;
  }
}

/**
 * Milliseconds since this process started (as performance.now(), whose
 * first use loads node's perf_hooks: ~1 ms of CPU at a command's start).
 */
export function sinceStartMs(): number {
  return process.uptime() * 1000;
}

/** True once -o sent the log to a file. */
export function logFileConfigured(): boolean {
  return config.file !== undefined;
}

export function logLevel(): number {
  return config.level;
}

const tags = ['', 'Error', 'Warn', 'Info', 'Debug'];

function write(level: number, prefix: string, msg: string): void {
  if (level > config.level) return;
  const t = process.uptime().toFixed(6);
  const line = `(${t.padStart(12)}) ${level === LogLevel.error || level === LogLevel.warn ? `${tags[level]}: ` : ''}${prefix ? `${prefix}: ` : ''}${msg}\n`;
  if (config.file !== undefined) appendFileSync(config.file, line);
  else process.stderr.write(line);
}

export interface Logger {
  msg(msg: string): void;
  error(msg: string): void;
  warn(msg: string): void;
  info(msg: string): void;
  debug(msg: string): void;
  /** A logger whose lines carry an extra prefix, e.g. log.child(`${pid}-${fd}`). */
  child(prefix: string): Logger;
}

export function logger(prefix = ''): Logger {
  return {
    msg: (m) => write(LogLevel.msg, prefix, m),
    error: (m) => write(LogLevel.error, prefix, m),
    warn: (m) => write(LogLevel.warn, prefix, m),
    info: (m) => write(LogLevel.info, prefix, m),
    debug: (m) => write(LogLevel.debug, prefix, m),
    child: (p) => logger(prefix ? `${prefix} ${p}` : p),
  };
}

export const log: Logger = logger();
