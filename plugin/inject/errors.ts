// Builds node-style system errors (code/errno/syscall) for failures detected
// in TypeScript, e.g. an injected syscall that returned -errno, so callers
// handle them exactly like errors thrown by the native addon.
import { constants } from 'node:os';
import type { SystemError } from '../errors.js';

const names = new Map<number, string>();
for (const [name, no] of Object.entries(constants.errno)) if (!names.has(no)) names.set(no, name);

/** Symbolic name of an errno value ("EPERM"), or "E<n>". */
export function errnoName(errno: number): string {
  return names.get(errno) ?? `E${errno}`;
}

export function errnoError(errno: number, syscall: string, detail?: string): SystemError {
  const code = errnoName(errno);
  const e = new Error(`${code}: ${syscall}${detail ? ` ${detail}` : ''}`) as SystemError;
  e.code = code;
  e.errno = errno;
  e.syscall = syscall;
  return e;
}
