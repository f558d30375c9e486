// Terminals: with --shell-job, stdio (fds 0-2) on a pty is dumped as CRIU's
// shell job does (tty_file_entry + tty-info.img + a reg_file_entry for the
// path); restore leaves such fds to the restorer's own stdio.
import type { BigIntStats } from 'node:fs';
import { FdType, TtyType } from '../../images/index.js';
import { isPty } from './common.js';
import { regEntry } from './reg.js';
import type { DumpFdKind } from './types.js';

export function ttyKind(): DumpFdKind<{ st: BigIntStats }> {
  return {
    name: 'terminal',
    claim(f) {
      if (!f.target.startsWith('/') || !f.st || !f.st.isCharacterDevice() || !isPty(f.st)) return undefined;
      if (f.stdio && f.shellJob) return { data: { st: f.st } };
      return `${f.where}: terminals are not supported${f.stdio ? ' (use --shell-job for stdio)' : ''}`;
    },
    describe(ctx, id, p) {
      const st = p.data.st;
      const minor = Number((st.rdev & 0xffn) | ((st.rdev >> 12n) & ~0xffn));
      const index = (Number((st.rdev >> 8n) & 0xfffn) - 136) * 256 + minor; // /dev/pts/<index>
      const infoId = index * 2; // slave end
      if (!ctx.ttyInfos.some((t) => t.id === infoId)) {
        ctx.ttyInfos.push({
          id: infoId, type: TtyType.PTY, locked: false, exclusive: false, packet_mode: false,
          sid: p.sid, pgrp: p.pgid, rdev: Number(st.rdev & 0xffffffffn), pty: { index },
        });
      }
      const regfId = ctx.newId();
      ctx.addEntry({ type: FdType.REG, id: regfId, reg: regEntry(regfId, p.target, p.flags, 0n, undefined) });
      return { type: FdType.TTY, id, tty: { id, tty_info_id: infoId, flags: p.flags, fown: p.fown, regf_id: regfId } };
    },
  };
}
