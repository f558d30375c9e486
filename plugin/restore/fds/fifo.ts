// FIFOs: reopened by path. A read-write open is held meanwhile, so opening
// either end never blocks and the queued bytes (fifo-data.img) can be put
// back through it.
import { UserError } from '../../errors.js';
import { FdType, requireKind, type FileEntry, type RegFileEntry } from '../../images/index.js';
import { NR } from '../task.js';
import { PipeData } from './pipe-data.js';
import { checkRegFile } from './reg.js';
import type { LoadContext, RestoreFdKind } from './types.js';
import { O_CLOEXEC } from '../../inject/constants.js';

const O_RDWR = 2;
const O_ACCMODE = 3;
const O_NONBLOCK = 0o4000;

function regf(ctx: LoadContext, f: FileEntry): RegFileEntry | undefined {
  const id = f.fifo?.regf_id;
  return id === undefined ? undefined : ctx.files.get(id)?.reg;
}

export function fifoKind(): RestoreFdKind {
  let data: PipeData | undefined;
  let files: LoadContext['files'] | undefined;
  return {
  type: FdType.FIFO,
  name: 'fifo',
  async load(ctx) {
    data = await PipeData.load(ctx.dir, requireKind('FIFO_DATA'));
    files = ctx.files;
  },
  check(ctx, file, use) {
    const r = regf(ctx, file);
    if (!file.fifo || !r) throw new UserError(`pid ${use.pid}: fd ${use.fd}: files.img id ${file.id} is a fifo without its path (regf_id)`);
    if (ctx.options.checkFiles !== false) checkRegFile(r, `fd ${use.fd}: fifo`, use.pid);
  },
  flags(f) {
    const id = f.fifo?.regf_id;
    return (id !== undefined ? files?.get(id)?.reg?.flags : undefined) ?? 0;
  },
  fown(f) {
    const id = f.fifo?.regf_id;
    return id !== undefined ? files?.get(id)?.reg?.fown : undefined;
  },
  create(ctx, file, owner) {
    const r = regf(ctx, file)!;
    const holder = owner.openat(r.name, O_RDWR | O_CLOEXEC);
    try {
      data!.restore(file.fifo!.pipe_id, owner, holder, `fifo ${r.name}`);
      return { taskFd: owner.openat(r.name, (r.flags & O_ACCMODE) | O_NONBLOCK | O_CLOEXEC) };
    } finally {
      owner.raw(NR.close, holder);
    }
  },
};
}
