// Small facts shared by the dump-side fd kinds.
import type { BigIntStats } from 'node:fs';
import type { FownEntry } from '../../images/index.js';

export const O_ACCMODE = 3;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_APPEND = 0o2000;
export const O_LARGEFILE = 0o100000;
export const O_CLOEXEC = 0o2000000;
export const FD_CLOEXEC = 1;

export const ZERO_FOWN: FownEntry = { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 };

/** Owner of the file description from fdinfo? /proc does not show it: see fown.ts. */
export function isPty(st: BigIntStats): boolean {
  const major = Number((st.rdev >> 8n) & 0xfffn);
  return major >= 136 && major <= 143;
}

export function isMemDevice(st: BigIntStats): boolean {
  return Number(st.rdev >> 8n) === 1; // major 1: null, zero, full, random, urandom...
}

/** One line of an fdinfo text ("eventfd-count:\t5" → "5"). */
export function fdinfoField(text: string, key: string): string | undefined {
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0 && line.slice(0, i) === key) return line.slice(i + 1).trim();
  }
  return undefined;
}
