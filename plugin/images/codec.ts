// Protobuf codec for image entries: loads the schemas in proto/ with
// protobufjs at run time (keepCase, so keys are CRIU's snake_case names) and
// converts between protobufjs messages and our plain objects: 64-bit integers
// as bigint, bytes as Buffer, enums as numbers, repeated fields always arrays,
// absent optional fields absent. Encoding is canonical (field-number order,
// unpacked repeated scalars, minimal varints), i.e. what protobuf-c and
// `crit encode` produce.
import { readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
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
  readonly type: protobuf.Type;
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

let rootCache: protobuf.Root | undefined;
const plans = new Map<string, MessagePlan>();

/**
 * Parsed schemas cached as protobufjs JSON (build/proto-schema.json, written
 * on first use and by the build): parsing the .proto files costs every
 * command ~50 ms at start-up, loading the JSON a fraction of it. The cache is
 * keyed by the names, sizes and mtimes of the .proto files.
 */
const SCHEMA_CACHE: string = join(PROTO_DIR, '..', 'build', 'proto-schema.json');

function protoFingerprint(files: string[]): string {
  return files.map((f) => {
    const st = statSync(f);
    return `${f}:${st.size}:${st.mtimeMs}`;
  }).join('|');
}

/** The protobufjs root with every schema in proto/ (loaded once). */
export function protoRoot(): protobuf.Root {
  if (!rootCache) {
    const files = readdirSync(PROTO_DIR).filter((f) => f.endsWith('.proto')).sort().map((f) => join(PROTO_DIR, f));
    const fp = protoFingerprint(files);
    let root: protobuf.Root | undefined;
    try {
      const cached = JSON.parse(readFileSync(SCHEMA_CACHE, 'utf8')) as { fingerprint?: string; root?: protobuf.INamespace };
      if (cached.fingerprint === fp && cached.root) root = protobuf.Root.fromJSON(cached.root);
    } catch { /* no cache yet, or unreadable: parse */ }
    if (!root) {
      root = new protobuf.Root();
      root.loadSync(files, { keepCase: true });
      try {
        const tmp = `${SCHEMA_CACHE}.${process.pid}.tmp`;
        writeFileSync(tmp, JSON.stringify({ fingerprint: fp, root: root.toJSON({ keepComments: false }) }));
        renameSync(tmp, SCHEMA_CACHE);
      } catch { /* read-only install: parse every time */ }
    }
    root.resolveAll();
    rootCache = root;
  }
  return rootCache;
}

const leanTypes = new WeakSet<protobuf.Type>();

/**
 * Gives `type` (and, when first used, the message types of its fields) only
 * the two functions this codec calls, generated on first use: protobufjs's
 * own setup generates five per type (encode, decode, verify, fromObject,
 * toObject) plus a constructor, a large part of a command's start-up. The
 * decoder's messages are plain objects (fromPb reads own properties only).
 */
function leanType(type: protobuf.Type): void {
  if (leanTypes.has(type)) return;
  leanTypes.add(type);
  type.ctor = function LeanMessage(): void {} as unknown as protobuf.Constructor<object>;
  const fieldTypes = (): (protobuf.Type | protobuf.Enum | null)[] => type.fieldsArray.map((f) => {
    const rt = f.resolve().resolvedType;
    if (rt instanceof protobuf.Type) leanType(rt);
    return rt;
  });
  const t = type as unknown as { encode: unknown; decode: unknown };
  t.encode = function encodeFirst(message: unknown, writer?: protobuf.Writer): protobuf.Writer {
    const f = (protobuf.encoder(type) as unknown as (scope: object) => (m: unknown, w?: protobuf.Writer) => protobuf.Writer)({ Writer: protobuf.Writer, types: fieldTypes(), util: protobuf.util });
    t.encode = f;
    return f.call(type, message, writer);
  };
  t.decode = function decodeFirst(reader: protobuf.Reader | Uint8Array, length?: number): protobuf.Message {
    const f = (protobuf.decoder(type) as unknown as (scope: object) => (r: protobuf.Reader | Uint8Array, l?: number) => protobuf.Message)({ Reader: protobuf.Reader, types: fieldTypes(), util: protobuf.util });
    t.decode = f;
    return f.call(type, reader, length);
  };
}

/** Conversion plan of a message type; throws TypeError for unknown names (a programming error). */
export function messagePlan(typeName: string): MessagePlan {
  const cached = plans.get(typeName);
  if (cached) return cached;
  let type: protobuf.Type;
  try {
    type = protoRoot().lookupType(typeName);
  } catch {
    throw new TypeError(`no protobuf message named ${typeName}`);
  }
  leanType(type);
  const fields: FieldPlan[] = type.fieldsArray.slice().sort((a, b) => a.id - b.id).map((f) => {
    const wire = f.resolvedType instanceof protobuf.Type ? 2 : WIRE[f.type] ?? 0;
    const base = { name: f.name, id: f.id, repeated: f.repeated, required: f.required, protoType: f.type, wire };
    const rt = f.resolvedType;
    if (rt instanceof protobuf.Enum) {
      const names = new Map<number, string>();
      const values = new Map<string, number>();
      for (const [n, v] of Object.entries(rt.values)) {
        values.set(n, v);
        if (!names.has(v)) names.set(v, n);
      }
      return { ...base, kind: 'enum' as const, enumNames: names, enumValues: values };
    }
    if (rt instanceof protobuf.Type) {
      const sub = rt.fullName.replace(/^\./, '');
      return { ...base, kind: 'message' as const, message: () => messagePlan(sub) };
    }
    const kind = SCALARS[f.type];
    if (!kind) throw new TypeError(`${typeName}.${f.name}: unsupported proto type ${f.type}`);
    return { ...base, kind };
  });
  const plan: MessagePlan = { name: typeName, fields, type };
  plans.set(typeName, plan);
  return plan;
}

interface LongLike { low: number; high: number; unsigned?: boolean }

function longToBigInt(v: unknown, signed: boolean): bigint {
  if (typeof v === 'number') return BigInt(v);
  if (typeof v === 'bigint') return v;
  const l = v as LongLike;
  const u = (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0);
  return signed ? BigInt.asIntN(64, u) : u;
}

function fromPbValue(f: FieldPlan, v: unknown): unknown {
  switch (f.kind) {
    case 'u64': return longToBigInt(v, false);
    case 's64': return longToBigInt(v, true);
    case 'u32': return (v as number) >>> 0;
    case 'bytes': {
      const b = v as Uint8Array;
      return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    }
    case 'message': return fromPb(f.message!(), v as Record<string, unknown>);
    default: return v;
  }
}

function fromPb(plan: MessagePlan, msg: Record<string, unknown>): PlainMessage {
  const out: PlainMessage = {};
  for (const f of plan.fields) {
    if (f.repeated) {
      const arr = (msg[f.name] as unknown[] | undefined) ?? [];
      out[f.name] = arr.map((x) => fromPbValue(f, x));
    } else if (Object.prototype.hasOwnProperty.call(msg, f.name) && msg[f.name] != null) {
      out[f.name] = fromPbValue(f, msg[f.name]);
    }
  }
  return out;
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
      case 5: p += 4; break;
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
  let msg: protobuf.Message;
  try {
    checkWire(plan, buf, 0, buf.length, 0);
    msg = plan.type.decode(buf);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new ImageError(where.file, where.offset, `cannot decode ${typeName}: ${why}`, { cause: e });
  }
  return fromPb(plan, msg as unknown as Record<string, unknown>) as T;
}

const U64_MAX = (1n << 64n) - 1n;
const S64_MIN = -(1n << 63n);
const S64_MAX = (1n << 63n) - 1n;

function bad(path: string, what: string): never {
  throw new TypeError(`${path}: ${what}`);
}

function toLongBits(v: unknown, signed: boolean, path: string): LongLike {
  let b: bigint;
  if (typeof v === 'bigint') b = v;
  else if (typeof v === 'number' && Number.isSafeInteger(v)) b = BigInt(v);
  else bad(path, `expected a 64-bit integer (bigint), got ${typeof v}`);
  if (signed ? b < S64_MIN || b > S64_MAX : b < 0n || b > U64_MAX) bad(path, `${b} out of range`);
  const u = BigInt.asUintN(64, b);
  return { low: Number(u & 0xffffffffn) | 0, high: Number(u >> 32n) | 0 };
}

function toPbValue(f: FieldPlan, v: unknown, path: string): unknown {
  switch (f.kind) {
    case 'u64': return toLongBits(v, false, path);
    case 's64': return toLongBits(v, true, path);
    case 'u32':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) bad(path, `expected a uint32, got ${String(v)}`);
      return v;
    case 's32':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) bad(path, `expected an int32, got ${String(v)}`);
      return v;
    case 'enum':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) bad(path, `expected an enum number, got ${String(v)}`);
      return v;
    case 'bool':
      if (typeof v !== 'boolean') bad(path, `expected a boolean, got ${typeof v}`);
      return v;
    case 'string':
      if (typeof v !== 'string') bad(path, `expected a string, got ${typeof v}`);
      return v;
    case 'bytes':
      if (!(v instanceof Uint8Array)) bad(path, `expected a Buffer, got ${typeof v}`);
      return v;
    case 'float':
      if (typeof v !== 'number') bad(path, `expected a number, got ${typeof v}`);
      return v;
    case 'message':
      if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(path, 'expected an object');
      return toPb(f.message!(), v as PlainMessage, path);
  }
}

function toPb(plan: MessagePlan, obj: PlainMessage, path: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of plan.fields) {
    const v = obj[f.name];
    const p = `${path}.${f.name}`;
    if (v === undefined || v === null) {
      if (f.required) bad(p, 'missing required field');
      continue;
    }
    if (f.repeated) {
      if (!Array.isArray(v)) bad(p, 'expected an array');
      if (v.length) out[f.name] = v.map((x, i) => toPbValue(f, x, `${p}[${i}]`));
    } else {
      out[f.name] = toPbValue(f, v, p);
    }
  }
  return out;
}

/** Serializes a plain message; invalid or missing required values → TypeError naming the field. */
export function encodeMessage(typeName: string, obj: object): Buffer {
  const plan = messagePlan(typeName);
  const bytes = plan.type.encode(toPb(plan, obj as PlainMessage, typeName)).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
