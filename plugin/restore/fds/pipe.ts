// Pipes: created once per pipe (pipe_id) inside the first process that has
// an end, with its queued bytes; every fd of the tree that shares an end
// gets that same description. Further descriptions of the same pipe (a
// reopen through /proc) are reopened from it, as CRIU does.
// Ends whose other side is not in the images (a shell's or a runtime's
// stdio): --inherit-fd fd[N]:pipe:[INO] substitutes the restorer's fd N;
// without one, --shell-job stdio stays the restorer's own, and otherwise
// the pipe is recreated with the missing end closed (CRIU's behaviour:
// readers see EOF after the queued bytes, writers get EPIPE).
import { openSync } from 'node:fs';
import { UserError } from '../../errors.js';
import { FdType, requireKind, type FileEntry, type PipeEntry } from '../../images/index.js';
import { NR } from '../task.js';
import { PipeData } from './pipe-data.js';
import { ownEntry } from './own-entry.js';
import type { LoadContext, RestoreFdKind } from './types.js';
import { O_CLOEXEC } from '../../inject/constants.js';

const O_WRONLY = 1;
const O_ACCMODE = 3;
const O_NONBLOCK = 0o4000;
const SCR_PIPE = 0x1000n;

const pipeEntry = ownEntry('pipe', 'a pipe', 'pipe');
const pe = (f: FileEntry): PipeEntry => pipeEntry.of(f);

/** The pipe entries of one pipe, readers and writers in files.img order (only those some fd uses or a queued message carries). */
function group(ctx: LoadContext, pipeId: number): { readers: number[]; writers: number[] } {
  const readers: number[] = [];
  const writers: number[] = [];
  for (const f of ctx.files.values()) {
    if (f.type !== FdType.PIPE || f.pipe?.pipe_id !== pipeId || (!ctx.uses(f.id).length && !ctx.inFlight.has(f.id))) continue;
    (f.pipe.flags & O_WRONLY ? writers : readers).push(f.id);
  }
  return { readers, writers };
}

export function inheritKey(pipeId: number): string {
  return `pipe:[${pipeId}]`;
}

/** Reopens an fd of the restorer by /proc/self/fd with other flags (a new description of the same pipe). */
function reopen(fd: number, flags: number, what: string): number {
  try {
    return openSync(`/proc/self/fd/${fd}`, (flags & (O_ACCMODE | O_NONBLOCK)) | O_CLOEXEC);
  } catch (e) {
    throw new UserError(`${what}: cannot reopen fd ${fd}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
}

export function pipeKind(): RestoreFdKind {
  let data: PipeData | undefined;
  return {
  type: FdType.PIPE,
  name: 'pipe',
  async load(ctx) {
    data = await PipeData.load(ctx.dir, requireKind('PIPES_DATA'));
  },
  check(_ctx, file, use) {
    pipeEntry.require(file, use);
  },
  inherits(ctx, file, use) {
    const id = pe(file).pipe_id;
    if (ctx.options.inheritFds.has(inheritKey(id))) return false;
    const g = group(ctx, id);
    const oneEnded = !g.readers.length || !g.writers.length;
    return oneEnded && use.fd <= 2 && ctx.options.shellJob;
  },
  flags: pipeEntry.flags,
  fown: pipeEntry.fown,
  create(ctx, file, owner) {
    const p = pe(file);
    const what = `pid ${owner.pid}: pipe:[${p.pipe_id}]`;
    const inh = ctx.options.inheritFds.get(inheritKey(p.pipe_id));
    if (inh !== undefined) {
      ctx.log(`${what}: restored from the inherited fd ${inh} (--inherit-fd)`);
      return { hostFd: reopen(inh, p.flags, what) };
    }
    const g = group(ctx, p.pipe_id);
    const firstR = g.readers[0];
    const firstW = g.writers[0];
    if (file.id !== firstR && file.id !== firstW) {
      // Another open of the same pipe: reopen it from the first description.
      const base = ctx.ensure(firstR ?? firstW!);
      return { hostFd: reopen(base, p.flags, what) };
    }
    owner.call('pipe2', NR.pipe2, owner.scratch + SCR_PIPE, O_CLOEXEC);
    const fds = owner.read(owner.scratch + SCR_PIPE, 8);
    const r = fds.readInt32LE(0);
    const w = fds.readInt32LE(4);
    try {
      data!.restore(p.pipe_id, owner, w, `pipe:[${p.pipe_id}]`);
    } catch (e) {
      owner.raw(NR.close, r);
      owner.raw(NR.close, w);
      throw e;
    }
    if (firstR === undefined || firstW === undefined) {
      const use = ctx.uses(file.id)[0] ?? { pid: owner.pid, fd: -1 };
      ctx.log(`pid ${use.pid}: fd ${use.fd}: pipe:[${p.pipe_id}] has no ${firstR === undefined ? 'reader' : 'writer'} in the images (outside the tree or closed): restored with that end closed; --inherit-fd fd[N]:pipe:[${p.pipe_id}] would connect it`);
    }
    if (file.id === firstR) {
      if (firstW !== undefined) ctx.provide(firstW, { taskFd: w, task: owner });
      else owner.raw(NR.close, w);
      return { taskFd: r };
    }
    if (firstR !== undefined) ctx.provide(firstR, { taskFd: r, task: owner });
    else owner.raw(NR.close, r);
    return { taskFd: w };
  },
};
}
