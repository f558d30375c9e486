// Protobuf codec for image entries, schema-driven, no generated code: the
// schemas in proto/ (CRIU's field names, keepCase) are parsed once into
// build/proto-schema.json (by the build; with protobufjs, re-made when
// proto/ changes) and read from there; each message type gets a plan (its
// fields in field-number order) on first use, and encode/decode walk the
// plan. Plain objects on our side: 64-bit integers as bigint, bytes as
// Buffer, enums as numbers, repeated fields always arrays, absent optional
// fields absent. Encoding is canonical (field-number order, unpacked
// repeated scalars, minimal varints), i.e. what protobuf-c and `crit encode`
// produce. (protobufjs itself generated code per type at run time and
// built a reflection tree: ~40 ms CPU of every command's start-up.)
import { readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImageError } from '../errors.js';

/** Where the .proto files live: <root>/proto, from dist/plugin/images/. */
export const PROTO_DIR: string = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'proto');

export type ScalarKind = 'u64' | 's64' | 'u32' | 's32' | 'bool' | 'string' | 'bytes' | 'float';

export interface FieldPlan {
  readonly name: string;
  readonly id: number;
  readonly repeated: boolean;
  readonly required: boolean;
  readonly kind: ScalarKind | 'enum' | 'message';
  /** Proto type name ("uint64", "fd_types", "vma_entry", …). */
  readonly protoType: string;
  /** enum: number -> name. */
  readonly enumNames?: ReadonlyMap<number, string>;
  /** enum: name -> number. */
  readonly enumValues?: ReadonlyMap<string, number>;
  /** message: the nested message's plan (resolved lazily, schemas may recurse). */
  readonly message?: () => MessagePlan;
  /** Protobuf wire type of one value (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32). */
  readonly wire: number;
}

export interface MessagePlan {
  readonly name: string;
  /** Fields in field-number order. */
  readonly fields: readonly FieldPlan[];
}

/** Plain object form of any message (the typed interfaces in types.ts are its specialisations). */
export type PlainMessage = { [field: string]: unknown };

const WIRE: Record<string, number> = {
  fixed64: 1, sfixed64: 1, double: 1, fixed32: 5, sfixed32: 5, float: 5, string: 2, bytes: 2,
};

const SCALARS: Record<string, ScalarKind> = {
  uint64: 'u64', fixed64: 'u64',
  int64: 's64', sint64: 's64', sfixed64: 's64',
  uint32: 'u32', fixed32: 'u32',
  int32: 's32', sint32: 's32', sfixed32: 's32',
  bool: 'bool', string: 'string', bytes: 'bytes',
  double: 'float', float: 'float',
};

/** The schema JSON as protobufjs writes it (Root.toJSON): nested namespaces, message fields, enum values. */
interface SchemaField { type: string; id: number; rule?: string }
interface SchemaNode { nested?: Record<string, SchemaNode>; fields?: Record<string, SchemaField>; values?: Record<string, number> }

let schemaCache: SchemaNode | undefined;
const plans = new Map<string, MessagePlan>();

/**
 * Parsed schemas cached as protobufjs JSON (build/proto-schema.json, written
 * by the build and on first use): parsing the .proto files costs a command
 * ~50 ms, reading the JSON ~1 ms. The cache is keyed by the names, sizes and
 * mtimes of the .proto files.
 */
const SCHEMA_CACHE: string = join(PROTO_DIR, '..', 'build', 'proto-schema.json');

function protoFingerprint(files: string[]): string {
  return files.map((f) => {
    const st = statSync(f);
    return `${f}:${st.size}:${st.mtimeMs}`;
  }).join('|');
}

/** Every schema in proto/ (loaded once): from the cache, else parsed with protobufjs and cached. */
export function protoSchema(): SchemaNode {
  if (!schemaCache) {
    const files = readdirSync(PROTO_DIR).filter((f) => f.endsWith('.proto')).sort().map((f) => join(PROTO_DIR, f));
    const fp = protoFingerprint(files);
    let root: SchemaNode | undefined;
    try {
      const cached = JSON.parse(readFileSync(SCHEMA_CACHE, 'utf8')) as { fingerprint?: string; root?: SchemaNode };
      if (cached.fingerprint === fp && cached.root) root = cached.root;
    } catch { /* no cache yet, or unreadable: parse */ }
    if (!root) {
      // protobufjs (CommonJS) only here, never on a command's start-up path once built.
      const protobuf = createRequire(import.meta.url)('protobufjs') as typeof import('protobufjs');
      const r = new protobuf.Root();
      r.loadSync(files, { keepCase: true });
      r.resolveAll();
      root = r.toJSON({ keepComments: false }) as SchemaNode;
      try {
        const tmp = `${SCHEMA_CACHE}.${process.pid}.tmp`;
        writeFileSync(tmp, JSON.stringify({ fingerprint: fp, root }));
        renameSync(tmp, SCHEMA_CACHE);
      } catch { /* read-only install: parse every time */ }
    }
    schemaCache = root;
  }
  return schemaCache;
}

/** Names of every message type in proto/ (nested ones as "outer.inner"). */
export function messageTypeNames(): string[] {
  const out: string[] = [];
  const walk = (ns: SchemaNode, prefix: string): void => {
    for (const [name, node] of Object.entries(ns.nested ?? {})) {
      if (node.fields) out.push(`${prefix}${name}`);
      walk(node, `${prefix}${name}.`);
    }
  };
  walk(protoSchema(), '');
  return out;
}

/** The node at a dotted path from the root, if any. */
function nodeAt(path: readonly string[]): SchemaNode | undefined {
  let n: SchemaNode | undefined = protoSchema();
  for (const part of path) n = n?.nested?.[part];
  return n;
}

/** Resolves a type reference as protobuf scoping does: innermost enclosing namespace first, then outwards. */
function resolveType(scope: readonly string[], ref: string): { path: string[]; node: SchemaNode } | undefined {
  const parts = ref.replace(/^\./, '').split('.');
  for (let i = ref.startsWith('.') ? 0 : scope.length; i >= 0; i--) {
    const path = [...scope.slice(0, i), ...parts];
    const node = nodeAt(path);
    if (node && (node.fields || node.values)) return { path, node };
    if (ref.startsWith('.')) break;
  }
  return undefined;
}

/** Conversion plan of a message type; throws TypeError for unknown names (a programming error). */
export function messagePlan(typeName: string): MessagePlan {
  const cached = plans.get(typeName);
  if (cached) return cached;
  const path = typeName.split('.');
  const node = nodeAt(path);
  if (!node?.fields) throw new TypeError(`no protobuf message named ${typeName}`);
  const fields: FieldPlan[] = Object.entries(node.fields).map(([name, f]) => ({ name, ...f })).sort((a, b) => a.id - b.id).map((f) => {
    const base = { name: f.name, id: f.id, repeated: f.rule === 'repeated', required: f.rule === 'required', protoType: f.type };
    const kind = SCALARS[f.type];
    if (kind) return { ...base, kind, wire: WIRE[f.type] ?? 0 };
    const rt = resolveType(path, f.type);
    if (!rt) throw new TypeError(`${typeName}.${f.name}: unknown proto type ${f.type}`);
    if (rt.node.values) {
      const names = new Map<number, string>();
      const values = new Map<string, number>();
      for (const [n, v] of Object.entries(rt.node.values)) {
        values.set(n, v);
        if (!names.has(v)) names.set(v, n);
      }
      return { ...base, kind: 'enum' as const, wire: 0, enumNames: names, enumValues: values };
    }
    const sub = rt.path.join('.');
    return { ...base, kind: 'message' as const, wire: 2, message: () => messagePlan(sub) };
  });
  const plan: MessagePlan = { name: typeName, fields };
  plans.set(typeName, plan);
  return plan;
}

/** Where an entry came from, for error messages. */
export interface Where { file: string; offset: number | undefined }

class WireError extends Error {}

function varintAt(buf: Uint8Array, p: number, end: number): [number, number] {
  let n = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (p >= end) throw new WireError('truncated varint');
    const c = buf[p++]!;
    n += (c & 0x7f) * mul;
    if (c < 0x80) return [n, p];
    mul *= 128;
  }
  throw new WireError('varint longer than 10 bytes');
}

/**
 * Checks the wire structure of buf[start, end) against the schema the way
 * protobuf-c does: every known field with its declared wire type (packed
 * repeated scalars allowed), lengths inside the message, no groups.
 * protobufjs alone would read a mismatched field as its declared type.
 */
function checkWire(plan: MessagePlan, buf: Uint8Array, start: number, end: number, depth: number): void {
  if (depth > 32) throw new WireError('messages nested too deeply');
  const byId = wireIndex(plan);
  let p = start;
  while (p < end) {
    let key: number;
    [key, p] = varintAt(buf, p, end);
    const id = Math.floor(key / 8);
    const wt = key % 8;
    if (id === 0) throw new WireError('field number 0');
    const f = byId.get(id);
    if (f && wt !== f.wire && !(f.repeated && wt === 2 && f.wire !== 2)) {
      throw new WireError(`field ${id} (${f.name}) has wire type ${wt}, expected ${f.wire}`);
    }
    switch (wt) {
      case 0: [, p] = varintAt(buf, p, end); break;
      case 1: p += 8; break;
      case 5:
        p += 4;
        // A run of the same one-byte key (an unpacked repeated fixed32, e.g.
        // page checksums: tens of thousands): skipped in one tight loop.
        if (key < 0x80) while (p + 5 <= end && buf[p] === key) p += 5;
        break;
      case 2: {
        let len: number;
        [len, p] = varintAt(buf, p, end);
        if (len > end - p) throw new WireError(`length ${len} of field ${id} runs past the end of the message`);
        if (f?.kind === 'message') checkWire(f.message!(), buf, p, p + len, depth + 1);
        p += len;
        break;
      }
      default: throw new WireError(`unsupported wire type ${wt} (field ${id})`);
    }
    if (p > end) throw new WireError(`field ${id} runs past the end of the message`);
  }
}

const wireIndexes = new WeakMap<MessagePlan, Map<number, FieldPlan>>();
function wireIndex(plan: MessagePlan): Map<number, FieldPlan> {
  let m = wireIndexes.get(plan);
  if (!m) {
    m = new Map(plan.fields.map((f) => [f.id, f]));
    wireIndexes.set(plan, m);
  }
  return m;
}

/** Decodes one serialized message into its plain form; malformed input → ImageError. */
export function decodeMessage<T = PlainMessage>(typeName: string, buf: Uint8Array, where: Where): T {
  const plan = messagePlan(typeName);
  try {
    checkWire(plan, buf, 0, buf.length, 0);
    const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    return decodeFrom(plan, b, 0, b.length) as T;
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new ImageError(where.file, where.offset, `cannot decode ${typeName}: ${why}`, { cause: e });
  }
}

// ---- decoding (the wire structure is checked by checkWire first) -----------------

/** Read position in the buffer being decoded (one per decodeMessage call). */
interface Cursor { p: number }

/** A varint's low 32 bits (as protobuf reads 32-bit values: longer varints are truncated). */
function readVarint32(b: Buffer, c: Cursor): number {
  let v = 0;
  let shift = 0;
  for (let i = 0; i < 10; i++) {
    const x = b[c.p++]!;
    if (shift < 32) v |= (x & 0x7f) << shift;
    shift += 7;
    if (x < 0x80) return v >>> 0;
  }
  throw new WireError('varint longer than 10 bytes');
}

/** A varint's 64 bits, unsigned. */
function readVarint64(b: Buffer, c: Cursor): bigint {
  let lo = 0;
  let hi = 0;
  for (let i = 0; i < 10; i++) {
    const x = b[c.p++]!;
    const bits = x & 0x7f;
    if (i < 4) lo |= bits << (7 * i);
    else if (i === 4) { lo |= bits << 28; hi |= bits >>> 4; }
    else hi |= bits << (7 * i - 32);
    if (x < 0x80) return hi === 0 ? BigInt(lo >>> 0) : (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
  }
  throw new WireError('varint longer than 10 bytes');
}

function readFixed64(b: Buffer, c: Cursor): bigint {
  const v = b.readBigUInt64LE(c.p);
  c.p += 8;
  return v;
}

function readValue(f: FieldPlan, b: Buffer, c: Cursor): unknown {
  switch (f.protoType) {
    case 'uint64': return readVarint64(b, c);
    case 'int64': return BigInt.asIntN(64, readVarint64(b, c));
    case 'sint64': { const u = readVarint64(b, c); return (u >> 1n) ^ -(u & 1n); }
    case 'fixed64': return readFixed64(b, c);
    case 'sfixed64': return BigInt.asIntN(64, readFixed64(b, c));
    case 'uint32': return readVarint32(b, c);
    case 'int32': return readVarint32(b, c) | 0;
    case 'sint32': { const u = readVarint32(b, c); return (u >>> 1) ^ -(u & 1); }
    case 'fixed32': { const v = b.readUInt32LE(c.p); c.p += 4; return v; }
    case 'sfixed32': { const v = b.readInt32LE(c.p); c.p += 4; return v; }
    case 'bool': return readVarint32(b, c) !== 0;
    case 'double': { const v = b.readDoubleLE(c.p); c.p += 8; return v; }
    case 'float': { const v = b.readFloatLE(c.p); c.p += 4; return v; }
    default: break;
  }
  if (f.kind === 'enum') return readVarint32(b, c) | 0;
  const len = readVarint32(b, c);
  const at = c.p;
  c.p += len;
  if (f.kind === 'string') return b.toString('utf8', at, at + len);
  if (f.kind === 'bytes') return b.subarray(at, at + len);
  return decodeFrom(f.message!(), b, at, at + len);
}

function skip(wt: number, b: Buffer, c: Cursor): void {
  switch (wt) {
    case 0: readVarint32(b, c); break;
    case 1: c.p += 8; break;
    case 5: c.p += 4; break;
    case 2: { const len = readVarint32(b, c); c.p += len; break; }
    default: throw new WireError(`unsupported wire type ${wt}`);
  }
}

/** Decodes b[start, end) as `plan`: known fields by number (last one wins, packed repeated scalars accepted), unknown ones skipped. */
function decodeFrom(plan: MessagePlan, b: Buffer, start: number, end: number): PlainMessage {
  const byId = wireIndex(plan);
  const vals = new Map<FieldPlan, unknown>();
  const c: Cursor = { p: start };
  while (c.p < end) {
    const key = readVarint32(b, c);
    const wt = key & 7;
    const f = byId.get(key >>> 3);
    if (!f) { skip(wt, b, c); continue; }
    if (!f.repeated) { vals.set(f, readValue(f, b, c)); continue; }
    let arr = vals.get(f) as unknown[] | undefined;
    if (!arr) vals.set(f, (arr = []));
    if (wt === 2 && f.wire !== 2) {
      const len = readVarint32(b, c);
      const stop = c.p + len;
      while (c.p < stop) arr.push(readValue(f, b, c));
    } else if (wt === 5 && key < 0x80 && (f.protoType === 'fixed32' || f.protoType === 'sfixed32')) {
      // A run of unpacked fixed32 values under the same one-byte key (checkWire
      // has bounded it): read in one tight loop instead of one field at a time.
      const signed = f.protoType === 'sfixed32';
      let p = c.p;
      do {
        arr.push(signed ? b.readInt32LE(p) : b.readUInt32LE(p));
        p += 5;
      } while (p <= end && b[p - 1] === key);
      c.p = p - 1;
    } else {
      arr.push(readValue(f, b, c));
    }
  }
  const out: PlainMessage = {};
  for (const f of plan.fields) {
    const v = vals.get(f);
    if (v !== undefined) out[f.name] = v;
    else if (f.repeated) out[f.name] = [];
    else if (f.required) throw new WireError(`missing required '${f.name}'`);
  }
  return out;
}

// ---- encoding ----------------------------------------------------------------------

const U64_MAX = (1n << 64n) - 1n;
const S64_MIN = -(1n << 63n);
const S64_MAX = (1n << 63n) - 1n;

function bad(path: string, what: string): never {
  throw new TypeError(`${path}: ${what}`);
}

/** A growing output buffer. */
class Out {
  buf = Buffer.allocUnsafe(256);
  n = 0;

  need(k: number): void {
    if (this.n + k <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.n + k) size *= 2;
    const b = Buffer.allocUnsafe(size);
    this.buf.copy(b, 0, 0, this.n);
    this.buf = b;
  }

  varint32(v: number): void {
    this.need(5);
    v >>>= 0;
    while (v > 0x7f) {
      this.buf[this.n++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[this.n++] = v;
  }

  /** 64 bits, unsigned (a negative int32/int64 is passed sign-extended: ten bytes). */
  varint64(u: bigint): void {
    if (u <= 0xffffffffn) { this.varint32(Number(u)); return; }
    this.need(10);
    let lo = Number(u & 0xffffffffn);
    let hi = Number(u >> 32n);
    while (hi > 0 || lo > 0x7f) {
      this.buf[this.n++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    this.buf[this.n++] = lo;
  }

  fixed64(u: bigint): void {
    this.need(8);
    this.buf.writeBigUInt64LE(u, this.n);
    this.n += 8;
  }

  bytes(b: Uint8Array): void {
    this.varint32(b.length);
    this.need(b.length);
    this.buf.set(b, this.n);
    this.n += b.length;
  }

  /** Writes a length-delimited body produced by `body`: one length byte is reserved, more are made room for when needed. */
  delimited(body: () => void): void {
    this.need(1);
    const at = this.n++;
    body();
    const len = this.n - at - 1;
    if (len < 0x80) { this.buf[at] = len; return; }
    let extra = 0;
    for (let v = len >>> 7; v > 0; v >>>= 7) extra++;
    this.need(extra);
    this.buf.copyWithin(at + 1 + extra, at + 1, this.n);
    this.n += extra;
    let v = len;
    let p = at;
    while (v > 0x7f) {
      this.buf[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[p] = v;
  }
}

function bits64(v: unknown, signed: boolean, path: () => string): bigint {
  let b: bigint;
  if (typeof v === 'bigint') b = v;
  else if (typeof v === 'number' && Number.isSafeInteger(v)) b = BigInt(v);
  else bad(path(), `expected a 64-bit integer (bigint), got ${typeof v}`);
  if (signed ? b < S64_MIN || b > S64_MAX : b < 0n || b > U64_MAX) bad(path(), `${b} out of range`);
  return b;
}

function int32Of(v: unknown, path: () => string, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) bad(path(), `expected ${what}, got ${String(v)}`);
  return v;
}

/** Checks one value of field `f` and writes its key and value. */
function writeValue(out: Out, f: FieldPlan, v: unknown, path: () => string): void {
  out.varint32((f.id << 3) | f.wire);
  switch (f.kind) {
    case 'u64':
    case 's64': {
      const b = bits64(v, f.kind === 's64', path);
      switch (f.protoType) {
        case 'sint64': out.varint64(BigInt.asUintN(64, (b << 1n) ^ (b >> 63n))); break;
        case 'fixed64': case 'sfixed64': out.fixed64(BigInt.asUintN(64, b)); break;
        default: out.varint64(BigInt.asUintN(64, b));
      }
      return;
    }
    case 'u32':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) bad(path(), `expected a uint32, got ${String(v)}`);
      if (f.protoType === 'fixed32') { out.need(4); out.buf.writeUInt32LE(v, out.n); out.n += 4; } else out.varint32(v);
      return;
    case 's32':
    case 'enum': {
      const x = int32Of(v, path, f.kind === 'enum' ? 'an enum number' : 'an int32');
      if (f.protoType === 'sint32') out.varint32(((x << 1) ^ (x >> 31)) >>> 0);
      else if (f.protoType === 'sfixed32') { out.need(4); out.buf.writeInt32LE(x, out.n); out.n += 4; }
      else if (x < 0) out.varint64(BigInt.asUintN(64, BigInt(x)));
      else out.varint32(x);
      return;
    }
    case 'bool':
      if (typeof v !== 'boolean') bad(path(), `expected a boolean, got ${typeof v}`);
      out.varint32(v ? 1 : 0);
      return;
    case 'string':
      if (typeof v !== 'string') bad(path(), `expected a string, got ${typeof v}`);
      out.bytes(Buffer.from(v, 'utf8'));
      return;
    case 'bytes':
      if (!(v instanceof Uint8Array)) bad(path(), `expected a Buffer, got ${typeof v}`);
      out.bytes(v);
      return;
    case 'float':
      if (typeof v !== 'number') bad(path(), `expected a number, got ${typeof v}`);
      if (f.protoType === 'double') { out.need(8); out.buf.writeDoubleLE(v, out.n); out.n += 8; } else { out.need(4); out.buf.writeFloatLE(v, out.n); out.n += 4; }
      return;
    case 'message':
      if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(path(), 'expected an object');
      out.delimited(() => writeMessage(out, f.message!(), v as PlainMessage, path));
      return;
  }
}

function writeMessage(out: Out, plan: MessagePlan, obj: PlainMessage, path: () => string): void {
  for (const f of plan.fields) {
    const v = obj[f.name];
    const p = (): string => `${path()}.${f.name}`;
    if (v === undefined || v === null) {
      if (f.required) bad(p(), 'missing required field');
      continue;
    }
    if (f.repeated) {
      if (!Array.isArray(v)) bad(p(), 'expected an array');
      for (let i = 0; i < v.length; i++) writeValue(out, f, v[i], () => `${p()}[${i}]`);
    } else {
      writeValue(out, f, v, p);
    }
  }
}

/** Serializes a plain message; invalid or missing required values → TypeError naming the field. */
export function encodeMessage(typeName: string, obj: object): Buffer {
  const plan = messagePlan(typeName);
  const out = new Out();
  writeMessage(out, plan, obj as PlainMessage, () => typeName);
  return out.buf.subarray(0, out.n);
}
