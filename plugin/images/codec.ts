// Protobuf codec for image entries: loads the schemas in proto/ with
// protobufjs at run time (keepCase, so keys are CRIU's snake_case names) and
// converts between protobufjs messages and our plain objects: 64-bit integers
// as bigint, bytes as Buffer, enums as numbers, repeated fields always arrays,
// absent optional fields absent. Encoding is canonical (field-number order,
// unpacked repeated scalars, minimal varints), i.e. what protobuf-c and
// `crit encode` produce.
import { readdirSync } from 'node:fs';
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
}

export interface MessagePlan {
  readonly name: string;
  /** Fields in field-number order. */
  readonly fields: readonly FieldPlan[];
  readonly type: protobuf.Type;
}

/** Plain object form of any message (the typed interfaces in types.ts are its specialisations). */
export type PlainMessage = { [field: string]: unknown };

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

/** The protobufjs root with every schema in proto/ (loaded once). */
export function protoRoot(): protobuf.Root {
  if (!rootCache) {
    const files = readdirSync(PROTO_DIR).filter((f) => f.endsWith('.proto')).sort().map((f) => join(PROTO_DIR, f));
    const root = new protobuf.Root();
    root.loadSync(files, { keepCase: true });
    root.resolveAll();
    rootCache = root;
  }
  return rootCache;
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
  const fields: FieldPlan[] = type.fieldsArray.slice().sort((a, b) => a.id - b.id).map((f) => {
    const base = { name: f.name, id: f.id, repeated: f.repeated, required: f.required, protoType: f.type };
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

/** Decodes one serialized message into its plain form; malformed input → ImageError. */
export function decodeMessage<T = PlainMessage>(typeName: string, buf: Uint8Array, where: Where): T {
  const plan = messagePlan(typeName);
  let msg: protobuf.Message;
  try {
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
export function encodeMessage(typeName: string, obj: PlainMessage): Buffer {
  const plan = messagePlan(typeName);
  const bytes = plan.type.encode(toPb(plan, obj, typeName)).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
