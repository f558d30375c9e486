// What most fd kinds do the same way with their own entry in files.img
// (`file.efd`, `file.tfd`, …): refuse a files.img entry without it, read
// the description's flags and owner from it, and set up per-description
// state (epoll watches, timers) once, from the description's first use.
import { UserError } from '../../errors.js';
import type { FileEntry, FownEntry } from '../../images/index.js';
import type { FdUse, LoadContext, RestoreFdKind } from './types.js';

/** The files.img fields that hold a kind's own entry with its flags and owner. */
type OwnEntryKey = { [K in keyof FileEntry]-?: NonNullable<FileEntry[K]> extends { flags: number; fown?: FownEntry | undefined } ? K : never }[keyof FileEntry];

export interface OwnEntry<E> {
  /** The entry (check() made sure it is there). */
  of(file: FileEntry): E;
  /** Refuses a files.img entry without it (a UserError naming pid, fd and id). */
  require(file: FileEntry, use: FdUse): void;
  flags(file: FileEntry): number;
  fown(file: FileEntry): FownEntry | undefined;
  /** check (refuses an entry without it), flags and fown: for a kind with nothing more to check. */
  readonly kind: Pick<RestoreFdKind, 'check' | 'flags' | 'fown'>;
}

/**
 * The kind's own entry `key`; `what` names the kind with its article ("an
 * eventfd"), `data` the missing data ("eventfd") in the refusal.
 */
export function ownEntry<K extends OwnEntryKey>(key: K, what: string, data: string): OwnEntry<NonNullable<FileEntry[K]>> {
  const of = (f: FileEntry): NonNullable<FileEntry[K]> => f[key]!;
  const require = (file: FileEntry, use: FdUse): void => {
    if (!file[key]) throw new UserError(`pid ${use.pid}: fd ${use.fd}: files.img id ${file.id} is ${what} without ${data} data`);
  };
  const flags = (f: FileEntry): number => of(f).flags;
  const fown = (f: FileEntry): FownEntry | undefined => of(f).fown;
  return { of, require, flags, fown, kind: { check: (_ctx, file, use) => require(file, use), flags, fown } };
}

/** Whether fd `fd` of `pid` is the first use of description `id` (state that belongs to the description is set up there, once). */
export function isFirstUse(ctx: LoadContext, id: number, pid: number, fd: number): boolean {
  const first = ctx.uses(id)[0];
  return first?.pid === pid && first.fd === fd;
}
