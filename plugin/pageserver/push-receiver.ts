// The page server's push mode: a dumping client sends OPEN2/ADD_F/…/CLOSE
// and we write pagemap-<id>.img + pages-<n>.img (n from 0x10001),
// byte-compatible with a local dump (§6.5). One connection, one session,
// like CRIU.
import { closeSync, existsSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import type { Conn, PageServerStats } from './connection.js';
import { PagemapFileWriter } from './pagemap-file.js';
import {
  PAGE_SHIFT,
  PE_PARENT,
  PE_PRESENT,
  PS_IOV_ADD,
  PS_IOV_ADD_F,
  PS_IOV_CLOSE,
  PS_IOV_FORCE_CLOSE,
  PS_IOV_GET,
  PS_IOV_HOLE,
  PS_IOV_OPEN,
  PS_IOV_OPEN2,
  PS_IOV_PARENT,
  ProtocolError,
  commandName,
  decodeDstId,
  int32Reply,
  open2Reply,
  type PsHeader,
} from './protocol.js';
import { systemMessage } from './transport.js';
import type { Logger } from '../log.js';

/** First pages-<n>.img id a page server uses (CRIU's convention). */
export const FIRST_SERVER_PAGES_ID = 0x10001;

interface OpenPagemap {
  dst: bigint;
  writer: PagemapFileWriter;
  pagesPath: string;
  pagesFd: number;
  lastEnd: bigint;
  pending: bigint; // page-data bytes still expected for the current ADD
}

export class PushReceiver {
  private pagemap: OpenPagemap | undefined;
  private nextPagesId = FIRST_SERVER_PAGES_ID;
  private readonly created: string[] = [];
  /** CLOSE received: everything was flushed. */
  closed = false;

  /** `st`: the server's counters (pagesReceived, pagemapsWritten are counted here). */
  constructor(private readonly imagesDir: string, private readonly st: PageServerStats, private readonly log: Logger) {}

  command(conn: Conn, h: PsHeader): void {
    if (this.closed) throw new ProtocolError(`${commandName(h.cmd)} after CLOSE`);
    switch (h.cmd) {
      case PS_IOV_OPEN2:
        this.openPagemap(h.dstId);
        conn.sock.write(open2Reply(this.hasParent(h.dstId)));
        return;
      case PS_IOV_OPEN:
        this.openPagemap(h.dstId);
        return;
      case PS_IOV_PARENT:
        conn.sock.write(int32Reply(this.hasParent(h.dstId) ? 1 : 0));
        return;
      case PS_IOV_ADD:
      case PS_IOV_ADD_F:
      case PS_IOV_HOLE: {
        // An ADD for another pagemap silently opens it (legacy clients).
        if (this.pagemap?.dst !== h.dstId) this.openPagemap(h.dstId);
        const pm = this.pagemap!;
        const flags = h.cmd === PS_IOV_ADD ? PE_PRESENT : h.cmd === PS_IOV_HOLE ? PE_PARENT : h.flags;
        if (h.vaddr < pm.lastEnd) {
          throw new ProtocolError(`${commandName(h.cmd)} at 0x${h.vaddr.toString(16)} is below the end of the previous entry 0x${pm.lastEnd.toString(16)} (entries must ascend)`);
        }
        pm.writer.add({ vaddr: h.vaddr, nrPages: h.nrPages, flags });
        pm.lastEnd = h.vaddr + (h.nrPages << PAGE_SHIFT);
        if ((flags & PE_PRESENT) !== 0) {
          pm.pending = h.nrPages << PAGE_SHIFT;
          this.st.pagesReceived += h.nrPages;
        }
        return;
      }
      case PS_IOV_CLOSE:
      case PS_IOV_FORCE_CLOSE:
        this.closePagemap();
        this.closed = true;
        conn.sock.write(int32Reply(0));
        this.log.info(`push session closed: ${this.st.pagemapsWritten} pagemaps, ${this.st.pagesReceived} pages`);
        // CRIU waits for the client to close its end; so do we (the server's onEnd).
        return;
      case PS_IOV_GET:
        throw new ProtocolError('GET received by a page server not started with --lazy-pages');
      default:
        throw new ProtocolError(`unexpected ${commandName(h.cmd)}`);
    }
  }

  /** Page data of the current ADD. */
  data(chunk: Buffer): void {
    const pm = this.pagemap!;
    let off = 0;
    while (off < chunk.length) off += writeSync(pm.pagesFd, chunk, off, chunk.length - off);
    pm.pending -= BigInt(chunk.length);
  }

  /** The session failed: close what is open; before CLOSE, remove what was written. */
  abort(): void {
    try {
      this.closePagemap();
    } catch {
      /* already failing */
    }
    if (this.closed) return;
    // Half-written pagemaps must not be mistaken for a dump.
    for (const p of this.created) {
      try {
        unlinkSync(p);
      } catch {
        /* best effort */
      }
    }
  }

  private pagemapName(dst: bigint): string {
    const d = decodeDstId(dst);
    return d.kind === 'task' ? `pagemap-${d.id}.img` : `pagemap-shmem-${d.id}.img`;
  }

  private hasParent(dst: bigint): boolean {
    const parent = join(this.imagesDir, 'parent');
    return existsSync(parent) && existsSync(join(parent, this.pagemapName(dst)));
  }

  private openPagemap(dst: bigint): void {
    this.closePagemap();
    const name = this.pagemapName(dst);
    const pagesId = this.nextPagesId++;
    const pagesPath = join(this.imagesDir, `pages-${pagesId}.img`);
    const path = join(this.imagesDir, name);
    let writer: PagemapFileWriter;
    try {
      writer = new PagemapFileWriter(path, pagesId);
    } catch (e) {
      throw new UserError(`${path}: ${systemMessage(e)}`);
    }
    this.created.push(path);
    let pagesFd: number;
    try {
      pagesFd = openSync(pagesPath, 'wx', 0o600);
    } catch (e) {
      writer.close();
      throw new UserError(`${pagesPath}: ${systemMessage(e)}`);
    }
    this.created.push(pagesPath);
    this.pagemap = { dst, writer, pagesPath, pagesFd, lastEnd: 0n, pending: 0n };
    this.st.pagemapsWritten++;
  }

  private closePagemap(): void {
    const pm = this.pagemap;
    if (!pm) return;
    this.pagemap = undefined;
    try {
      pm.writer.close();
    } finally {
      closeSync(pm.pagesFd);
    }
  }
}
