// Error classes shared by the library and the CLI. A UserError is something
// the user can fix (bad image, missing pid, permission): the CLI prints its
// message on one line and exits with its exitCode, without a stack trace.
// Anything else is a bug and is printed with its stack. System errors
// detected in TypeScript are built with sysError(), so they look exactly like
// the addon's (native/common/errors.h): code, errno, syscall.
import { constants } from 'node:os';

/** Exit codes of the CLI, documented in the README. */
export const ExitCode = {
  ok: 0,
  failure: 1, // the operation failed (bad input, unsupported state, system error)
  usage: 2, // bad command line
  restoredFailed: 3, // the restored process tree was killed (e.g. a page could not be served)
  internal: 70, // a bug (EX_SOFTWARE)
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** Shape of errors raised by the native addon and by node's own syscalls. */
export interface SystemError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/** errno numbers by name (Errno.ESRCH), as this platform defines them. */
export const Errno = constants.errno;

// Where two names share a number, the one glibc's strerrorname_np gives (as
// the addon's errors carry): EAGAIN, EOPNOTSUPP.
const ERRNO_NAMES = new Map<number, string>([[Errno.EOPNOTSUPP, 'EOPNOTSUPP']]);
for (const [name, no] of Object.entries(Errno)) if (!ERRNO_NAMES.has(no)) ERRNO_NAMES.set(no, name);

/** Symbolic name of an errno value ("EPERM"), or "E<n>". */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}

/**
 * A system error for a failure detected in TypeScript (an injected syscall
 * that returned -errno, a short transfer, a protocol violation), shaped like
 * the addon's and node's own: message "CODE: syscall detail" unless `message`
 * is given, and code/errno/syscall set. `err` is the errno or its code name.
 */
export function sysError(err: number | string, syscall: string, detail?: string, message?: string): SystemError {
  // A code name (from an event that carries only the name) is looked up.
  const errno = typeof err === 'number' ? err : ((Errno as Record<string, number | undefined>)[err] ?? 0);
  const code = typeof err === 'number' ? errnoName(err) : err;
  const e = new Error(message ?? `${code}: ${syscall}${detail ? ` ${detail}` : ''}`) as SystemError;
  e.code = code;
  e.errno = errno;
  e.syscall = syscall;
  return e;
}

export function isSystemError(e: unknown): e is SystemError {
  return e instanceof Error && typeof (e as Partial<SystemError>).code === 'string'
    && typeof (e as Partial<SystemError>).errno === 'number';
}

export class UserError extends Error {
  readonly exitCode: ExitCode;
  constructor(message: string, options?: { cause?: unknown; exitCode?: ExitCode }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'UserError';
    this.exitCode = options?.exitCode ?? ExitCode.failure;
  }
}

/** A malformed or inconsistent image file. Names the file and the byte offset. */
export class ImageError extends UserError {
  readonly file: string;
  readonly offset: number | undefined;
  constructor(file: string, offset: number | undefined, what: string, options?: { cause?: unknown }) {
    super(`${file}${offset !== undefined ? ` at offset ${offset}` : ''}: ${what}`, options);
    this.name = 'ImageError';
    this.file = file;
    this.offset = offset;
  }
}

/**
 * Wraps a system error with context (pid, file) into a UserError whose
 * message names the errno code, e.g. "pid 1234: ptrace(PTRACE_SEIZE): EPERM (...)".
 */
export function systemUserError(context: string, e: unknown): UserError {
  if (isSystemError(e)) {
    return new UserError(`${context}: ${e.syscall}: ${e.code} (${e.message})`, { cause: e });
  }
  return new UserError(`${context}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}
