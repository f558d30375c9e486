// Small helpers shared by the lazy-pages server's modules.
import { closeSync } from 'node:fs';
import { isSystemError } from '../errors.js';

/** One line for an error: `syscall: CODE (message)` for system errors, else the message. */
export function errText(e: unknown): string {
  if (isSystemError(e)) return `${e.syscall}: ${e.code} (${e.message})`;
  return e instanceof Error ? e.message : String(e);
}

/** `e` as an Error (a thrown non-Error becomes one with its text). */
export function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

export function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* already closed */
  }
}
