// Page-server codec and stream parsers against the bytes captured from
// CRIU 4.2 sessions (IMAGE-FORMAT.md §6.5, §6.6), plus abuse of the parsers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DST_SHMEM,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  PS_IOV_ADD_F,
  PS_IOV_CLOSE,
  PS_IOV_GET,
  PS_IOV_OPEN2,
  ProtocolError,
  addFHeader,
  closeHeader,
  decodeDstId,
  decodeHeader,
  encodeDstId,
  encodeHeader,
  getHeader,
  getReplyHeader,
  int32Reply,
  open2Header,
  open2Reply,
  parentHeader,
  validateCommand,
} from '../../plugin/pageserver/protocol.js';
import { CommandParser, ReplyParser, type CommandEvent } from '../../plugin/pageserver/parser.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// §6.5 captured push session, command #2 (pid 20785).
const CAPTURED_ADD_F = hex('06 00 04 00 00 00 00 00 01 00 00 00 00 00 00 00 00 90 91 04 cb 55 00 00 01 31 51 00 00 00 00 00');
// §6.6 captured first GET (pid 20150).
const CAPTURED_GET = hex('07 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 40 df 82 47 7f 00 00 b6 4e 00 00 00 00 00 00');
const CAPTURED_CLOSE = hex('23 10 00 00' + '00'.repeat(28));

test('captured ADD_F header decodes and re-encodes byte-exact', () => {
  const h = decodeHeader(CAPTURED_ADD_F);
  assert.deepEqual(h, { cmd: PS_IOV_ADD_F, flags: PE_PRESENT, nrPages: 1n, vaddr: 0x55cb04919000n, dstId: 0x513101n });
  assert.deepEqual(decodeDstId(h.dstId), { kind: 'task', id: 20785 });
  assert.deepEqual(addFHeader(20785, PE_PRESENT, 0x55cb04919000n, 1n), CAPTURED_ADD_F);
  assert.deepEqual(encodeHeader(h), CAPTURED_ADD_F);
});

test('captured GET carries the raw pid as dst_id', () => {
  const h = decodeHeader(CAPTURED_GET);
  assert.deepEqual(h, { cmd: PS_IOV_GET, flags: 0, nrPages: 1n, vaddr: 0x7f4782df4000n, dstId: 20150n });
  assert.deepEqual(getHeader(20150, 0x7f4782df4000n, 1n), CAPTURED_GET);
});

test('captured CLOSE, OPEN2 dst_id and the unframed replies', () => {
  assert.deepEqual(closeHeader(), CAPTURED_CLOSE);
  assert.equal(decodeHeader(CAPTURED_CLOSE).cmd, PS_IOV_CLOSE);
  assert.deepEqual(closeHeader(true).subarray(0, 4), hex('24 10 00 00'));
  const open2 = open2Header(20785);
  assert.equal(open2.readUInt32LE(0), PS_IOV_OPEN2);
  assert.equal(open2.readBigUInt64LE(24), 0x513101n);
  assert.deepEqual(open2Reply(false), hex('00'));
  assert.deepEqual(open2Reply(true), hex('01'));
  assert.deepEqual(int32Reply(0), hex('00 00 00 00'));
  assert.equal(parentHeader(7).readUInt32LE(0), 5);
});

test('wire values of ADD_F flag combinations (§6.3)', () => {
  const raw = (flags: number): number => addFHeader(1, flags, 0x1000n, 1n).readUInt32LE(0);
  assert.equal(raw(PE_PRESENT), 0x00040006);
  assert.equal(raw(PE_LAZY | PE_PRESENT), 0x00060006);
  assert.equal(raw(PE_LAZY), 0x00020006);
  assert.equal(raw(PE_PARENT), 0x00010006);
  assert.equal(getReplyHeader(5n, 0x2000n, 3n).readUInt32LE(0), 0x00040006);
  assert.throws(() => addFHeader(1, PE_PARENT | PE_PRESENT, 0n, 1n), ProtocolError);
});

test('dst_id packing, shmem and legacy type values', () => {
  assert.equal(encodeDstId(20785), 0x513101n);
  assert.equal(encodeDstId(3, DST_SHMEM), 0x302n);
  for (const t of [10, 11, 16, 17]) assert.equal(decodeDstId((9n << 8n) | BigInt(t)).kind, 'task');
  for (const t of [27, 28, 29, 32, 33, 34]) assert.equal(decodeDstId((9n << 8n) | BigInt(t)).kind, 'shmem');
  assert.throws(() => decodeDstId((9n << 8n) | 3n), /unknown pagemap type 3/);
  assert.throws(() => encodeDstId(-1), RangeError);
});

test('padding bytes are ignored on receive and zero on send', () => {
  const b = Buffer.from(CAPTURED_GET);
  b.fill(0xee, 4, 8);
  assert.deepEqual(decodeHeader(b), decodeHeader(CAPTURED_GET));
  assert.deepEqual(encodeHeader(decodeHeader(b)), CAPTURED_GET);
});

test('validateCommand rejects malformed headers', () => {
  const bad = (over: Partial<ReturnType<typeof decodeHeader>>, re: RegExp): void => {
    assert.throws(() => validateCommand({ ...decodeHeader(CAPTURED_ADD_F), ...over }), re);
  };
  bad({ cmd: 0x99 }, /unknown page-server command 0x99/);
  bad({ cmd: PS_IOV_CLOSE, flags: 4 }, /carries flags/);
  bad({ flags: 0 }, /invalid flags 0x0/);
  bad({ flags: 0x10 }, /invalid flags 0x10/);
  bad({ nrPages: 0n }, /0 pages/);
  bad({ vaddr: 0x1234n }, /not page-aligned/);
  bad({ vaddr: 0xfffffffffffff000n, nrPages: 2n }, /overflows/);
  assert.doesNotThrow(() => validateCommand(decodeHeader(CAPTURED_CLOSE)));
});

/** Feeds `bytes` to a CommandParser split into pieces of the given sizes (cycled). */
function parseSplit(bytes: Buffer, sizes: number[]): { events: CommandEvent[]; parser: CommandParser } {
  const parser = new CommandParser();
  const events: CommandEvent[] = [];
  let pos = 0;
  for (let i = 0; pos < bytes.length; i++) {
    const n = sizes[i % sizes.length]!;
    events.push(...parser.push(bytes.subarray(pos, pos + n)));
    pos += n;
  }
  return { events, parser };
}

function pushSession(): { bytes: Buffer; pages: Buffer } {
  const pages = Buffer.alloc(3 * 4096);
  for (let i = 0; i < pages.length; i++) pages[i] = (i * 7 + (i >> 12)) & 0xff;
  const bytes = Buffer.concat([
    open2Header(20785),
    addFHeader(20785, PE_PRESENT, 0x55cb04919000n, 1n),
    pages.subarray(0, 4096),
    addFHeader(20785, PE_LAZY, 0x7f0000000000n, 8n), // no data follows LAZY-only
    addFHeader(20785, PE_LAZY | PE_PRESENT, 0x7f0dc4b52000n, 2n),
    pages.subarray(4096),
    closeHeader(),
  ]);
  return { bytes, pages };
}

test('CommandParser yields the same session for every split of the stream', () => {
  const { bytes, pages } = pushSession();
  for (const sizes of [[bytes.length], [1], [3, 29, 31], [32], [4095, 1, 33], [7, 4096, 13]]) {
    const { events, parser } = parseSplit(bytes, sizes);
    const cmds = events.filter((e) => e.type === 'command').map((e) => (e.type === 'command' ? [e.header.cmd, e.header.flags, e.payload] : []));
    assert.deepEqual(cmds, [
      [PS_IOV_OPEN2, 0, 0n],
      [PS_IOV_ADD_F, PE_PRESENT, 4096n],
      [PS_IOV_ADD_F, PE_LAZY, 0n],
      [PS_IOV_ADD_F, PE_LAZY | PE_PRESENT, 8192n],
      [PS_IOV_CLOSE, 0, 0n],
    ], `split ${sizes.join(',')}`);
    const data = Buffer.concat(events.flatMap((e) => (e.type === 'data' ? [e.chunk] : [])));
    assert.deepEqual(data, pages);
    assert.equal(events.filter((e) => e.type === 'end').length, 5);
    assert.equal(parser.commands, 5);
    assert.ok(parser.idle);
    parser.finish();
  }
});

test('CommandParser reports short payloads and truncated headers at end of stream', () => {
  const { bytes } = pushSession();
  const cut = 32 + 32 + 100; // inside the first ADD_F's data
  const p1 = parseSplit(bytes.subarray(0, cut), [50]).parser;
  assert.throws(() => p1.finish(), /ended inside the page data of command #2 \(100 of 4096 bytes\)/);
  const p2 = parseSplit(bytes.subarray(0, 40), [50]).parser;
  assert.throws(() => p2.finish(), /inside a command header \(8 of 32 bytes\)/);
});

test('CommandParser rejects an unknown command and stays failed', () => {
  const bytes = Buffer.concat([open2Header(1), encodeHeader({ cmd: 0x55, flags: 0, nrPages: 0n, vaddr: 0n, dstId: 0n })]);
  const parser = new CommandParser();
  assert.throws(() => parser.push(bytes), (e: unknown) => e instanceof ProtocolError && /command #2: unknown page-server command 0x55/.test(e.message));
  assert.throws(() => parser.push(Buffer.alloc(1)), ProtocolError);
});

test('ReplyParser: GET replies, int32 status, any split', () => {
  const data = Buffer.alloc(2 * 4096, 0x5a);
  const bytes = Buffer.concat([getReplyHeader(20150n, 0x7f4782df4000n, 2n), data, int32Reply(0)]);
  for (const step of [1, 5, 32, 33, 4096, bytes.length]) {
    const p = new ReplyParser();
    p.expect({ kind: 'pages', maxPages: 4n });
    p.expect({ kind: 'i32' });
    const replies = [];
    for (let pos = 0; pos < bytes.length; pos += step) replies.push(...p.push(bytes.subarray(pos, pos + step)));
    assert.equal(replies.length, 2);
    const r0 = replies[0]!;
    assert.ok(r0.kind === 'pages');
    assert.equal(r0.header.vaddr, 0x7f4782df4000n);
    assert.equal(r0.header.dstId, 20150n);
    assert.deepEqual(r0.data, data);
    assert.deepEqual(replies[1], { kind: 'i32', value: 0 });
    assert.equal(p.pending, 0);
  }
});

test('ReplyParser rejects zero-page, oversized, wrong-command replies and stray bytes', () => {
  const mk = (max: bigint): ReplyParser => {
    const p = new ReplyParser();
    p.expect({ kind: 'pages', maxPages: max });
    return p;
  };
  assert.throws(() => mk(1n).push(encodeHeader({ cmd: PS_IOV_ADD_F, flags: PE_PRESENT, nrPages: 0n, vaddr: 0n, dstId: 1n })), /0 pages/);
  assert.throws(() => mk(1n).push(getReplyHeader(1n, 0x1000n, 2n)), /exceeds the 1 requested/);
  assert.throws(() => mk(1n).push(addFHeader(1, PE_LAZY, 0x1000n, 1n)), /expected ADD_F\|PRESENT/);
  assert.throws(() => mk(1n).push(CAPTURED_GET), /expected ADD_F\|PRESENT/);
  assert.throws(() => new ReplyParser().push(Buffer.from([0])), /no request outstanding/);
  const p = new ReplyParser();
  p.expect({ kind: 'u8' });
  assert.deepEqual(p.push(Buffer.from([1])), [{ kind: 'u8', value: 1 }]);
});
