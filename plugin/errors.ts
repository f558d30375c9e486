// Error classes shared by the library and the CLI. A UserError is something
// the user can fix (bad image, missing pid, permission): the CLI prints its
// message on one line and exits with its exitCode, without a stack trace.
// Anything else is a bug and is printed with its stack.

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
