// Streaming parsers for the page-server byte stream. TCP delivers arbitrary
// slices, so both parsers accept any split of the input (down to one byte)
// and keep their state between pushes.
//  - CommandParser: the server side; yields validated command headers and
//    the page data that follows them as zero-copy slices, so a push session
//    of any size streams to disk without buffering whole entries.
//  - ReplyParser: the client side; the client tells it what it expects next
//    (a GET reply of at most N pages, a 1-byte OPEN2 reply, an int32 status)
//    because the unframed replies cannot be recognised on their own.
import {
  HEADER_SIZE,
  INT32_REPLY_SIZE,
  OPEN2_REPLY_SIZE,
  PAGE_SIZE,
  ProtocolError,
  decodeHeader,
  payloadBytes,
  validateCommand,
  validateGetReply,
  type PsHeader,
} from './protocol.js';

export type CommandEvent =
  | { type: 'command'; header: PsHeader; payload: bigint }
  | { type: 'data'; chunk: Buffer }
  | { type: 'end'; header: PsHeader };

/**
 * Server-side parser. For every command it yields `command`, then zero or
 * more `data` slices totalling `payload` bytes, then `end`. A protocol
 * violation throws ProtocolError; the parser is then unusable.
 */
export class CommandParser {
  private hdr = Buffer.alloc(HEADER_SIZE);
  private hdrFill = 0;
  private current: PsHeader | undefined;
  private remaining = 0n;
  private failed: ProtocolError | undefined;
  /** Commands fully received so far (for error messages and tests). */
  commands = 0;

  push(chunk: Buffer): CommandEvent[] {
    if (this.failed) throw this.failed;
    const out: CommandEvent[] = [];
    let pos = 0;
    try {
      while (pos < chunk.length) {
        if (this.current === undefined) {
          const take = Math.min(HEADER_SIZE - this.hdrFill, chunk.length - pos);
          chunk.copy(this.hdr, this.hdrFill, pos, pos + take);
          this.hdrFill += take;
          pos += take;
          if (this.hdrFill < HEADER_SIZE) break;
          this.hdrFill = 0;
          const h = decodeHeader(this.hdr);
          validateCommand(h);
          this.current = h;
          this.remaining = payloadBytes(h);
          out.push({ type: 'command', header: h, payload: this.remaining });
        } else {
          const avail = BigInt(chunk.length - pos);
          const take = Number(avail < this.remaining ? avail : this.remaining);
          out.push({ type: 'data', chunk: chunk.subarray(pos, pos + take) });
          pos += take;
          this.remaining -= BigInt(take);
        }
        if (this.current !== undefined && this.remaining === 0n) {
          out.push({ type: 'end', header: this.current });
          this.current = undefined;
          this.commands++;
        }
      }
    } catch (e) {
      if (e instanceof ProtocolError) this.failed = new ProtocolError(`command #${this.commands + 1}: ${e.message}`);
      throw this.failed ?? e;
    }
    return out;
  }

  /** True between commands (a clean place for the stream to end). */
  get idle(): boolean {
    return this.current === undefined && this.hdrFill === 0;
  }

  /** Call at end of stream: throws if it ended inside a header or payload. */
  finish(): void {
    if (this.failed) throw this.failed;
    if (this.hdrFill !== 0) throw new ProtocolError(`stream ended inside a command header (${this.hdrFill} of ${HEADER_SIZE} bytes)`);
    if (this.current !== undefined) {
      const total = payloadBytes(this.current);
      throw new ProtocolError(`stream ended inside the page data of command #${this.commands + 1} (${total - this.remaining} of ${total} bytes)`);
    }
  }
}

export type Expectation = { kind: 'pages'; maxPages: bigint } | { kind: 'u8' } | { kind: 'i32' };

export type Reply =
  | { kind: 'pages'; header: PsHeader; data: Buffer }
  | { kind: 'u8'; value: number }
  | { kind: 'i32'; value: number };

/**
 * Client-side parser: replies arrive strictly in request order, so the
 * client queues one expectation per request that has a reply.
 */
export class ReplyParser {
  private expectations: Expectation[] = [];
  private head = 0;
  private small = Buffer.alloc(HEADER_SIZE);
  private smallFill = 0;
  private pageHeader: PsHeader | undefined;
  private data: Buffer | undefined;
  private dataFill = 0;
  private failed: ProtocolError | undefined;

  /** Appends what the next unanswered request's reply must look like. */
  expect(e: Expectation): void {
    this.expectations.push(e);
  }

  /** Number of replies still expected. */
  get pending(): number {
    return this.expectations.length - this.head;
  }

  /** Forget all expectations and partial input (after a reconnect). */
  reset(): void {
    this.expectations = [];
    this.head = 0;
    this.smallFill = 0;
    this.pageHeader = undefined;
    this.data = undefined;
    this.dataFill = 0;
    this.failed = undefined;
  }

  push(chunk: Buffer): Reply[] {
    if (this.failed) throw this.failed;
    const out: Reply[] = [];
    let pos = 0;
    try {
      while (pos < chunk.length) {
        const exp = this.expectations[this.head];
        if (exp === undefined) throw new ProtocolError(`unexpected ${chunk.length - pos} bytes from the page server (no request outstanding)`);
        if (exp.kind === 'u8' || exp.kind === 'i32') {
          const need = exp.kind === 'u8' ? OPEN2_REPLY_SIZE : INT32_REPLY_SIZE;
          const take = Math.min(need - this.smallFill, chunk.length - pos);
          chunk.copy(this.small, this.smallFill, pos, pos + take);
          this.smallFill += take;
          pos += take;
          if (this.smallFill < need) break;
          this.smallFill = 0;
          out.push(exp.kind === 'u8' ? { kind: 'u8', value: this.small[0]! } : { kind: 'i32', value: this.small.readInt32LE(0) });
          this.shift();
          continue;
        }
        if (this.pageHeader === undefined) {
          const take = Math.min(HEADER_SIZE - this.smallFill, chunk.length - pos);
          chunk.copy(this.small, this.smallFill, pos, pos + take);
          this.smallFill += take;
          pos += take;
          if (this.smallFill < HEADER_SIZE) break;
          this.smallFill = 0;
          const h = decodeHeader(this.small);
          validateGetReply(h);
          if (h.nrPages > exp.maxPages) {
            throw new ProtocolError(`page-server reply of ${h.nrPages} pages at 0x${h.vaddr.toString(16)} exceeds the ${exp.maxPages} requested`);
          }
          this.pageHeader = h;
          this.data = Buffer.allocUnsafe(Number(h.nrPages) * PAGE_SIZE);
          this.dataFill = 0;
        }
        const data = this.data!;
        const take = Math.min(data.length - this.dataFill, chunk.length - pos);
        chunk.copy(data, this.dataFill, pos, pos + take);
        this.dataFill += take;
        pos += take;
        if (this.dataFill === data.length) {
          out.push({ kind: 'pages', header: this.pageHeader, data });
          this.pageHeader = undefined;
          this.data = undefined;
          this.shift();
        }
      }
    } catch (e) {
      if (e instanceof ProtocolError) this.failed = e;
      throw e;
    }
    return out;
  }

  private shift(): void {
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.expectations.length) {
      this.expectations = this.expectations.slice(this.head);
      this.head = 0;
    }
  }
}
