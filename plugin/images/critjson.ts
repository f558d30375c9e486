// crit-compatible JSON: the shape `crit decode` (non-pretty) prints —
// {"magic": NAME, "entries": [...]}, fields in field-number order, absent and
// empty repeated fields omitted, enums by name, bytes as MIME base64 (76-char
// lines, each ending in "\n", like Python's base64.encodebytes), EXTRA bytes
// under "extra" — printed like Python's json.dumps (", " / ": " separators,
// non-ASCII escaped) with 64-bit integers exact. And the way back: JSON
// (ours or crit's, incl. its "0x…" hex strings) to an image.
import { ImageError } from '../errors.js';
import { encodeMessage, messagePlan, type FieldPlan, type MessagePlan, type PlainMessage } from './codec.js';
import { encodeImage, entryType, type DecodedImage, type EntryToWrite } from './image.js';
import { kindByName, type ImageKind } from './magic.js';

/** JSON value whose integers may be bigint. */
export type JsonValue = null | boolean | number | bigint | string | JsonValue[] | { [k: string]: JsonValue };

/** Python's base64.encodebytes: 76-character lines, each terminated by "\n". */
export function base64Lines(b: Uint8Array): string {
  let out = '';
  for (let i = 0; i < b.length; i += 57) {
    out += Buffer.from(b.buffer, b.byteOffset + i, Math.min(57, b.length - i)).toString('base64') + '\n';
  }
  return out;
}

function critValue(f: FieldPlan, v: unknown): JsonValue | undefined {
  switch (f.kind) {
    case 'message': return messageToCrit(f.message!(), v as PlainMessage);
    case 'bytes': return base64Lines(v as Buffer);
    case 'enum': return f.enumNames!.get(v as number); // unknown values: crit drops the field
    default: return v as JsonValue;
  }
}

/** One message in crit's dict form. */
export function messageToCrit(plan: MessagePlan, msg: PlainMessage): { [k: string]: JsonValue } {
  const out: { [k: string]: JsonValue } = {};
  for (const f of plan.fields) {
    const v = msg[f.name];
    if (v === undefined || v === null) continue;
    if (f.repeated) {
      const arr = v as unknown[];
      if (!arr.length) continue;
      const vals = arr.map((x) => critValue(f, x)).filter((x): x is JsonValue => x !== undefined);
      if (vals.length) out[f.name] = vals;
    } else {
      const cv = critValue(f, v);
      if (cv !== undefined) out[f.name] = cv;
    }
  }
  return out;
}

/** A decoded image in crit's shape (as a JSON value tree). */
export function imageToCrit(img: DecodedImage): { [k: string]: JsonValue } {
  const entries = img.entries.map((e) => {
    const o = messageToCrit(messagePlan(e.type), e.message);
    if (e.extra) o['extra'] = base64Lines(e.extra);
    return o;
  });
  return { magic: img.kind.name, entries };
}

// ---- printing ----------------------------------------------------------------------

function pyString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x0c) out += '\\f';
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += s[i];
  }
  return out + '"';
}

/**
 * Serializes like Python's json.dumps (indent=None: ", " and ": "
 * separators; indent=n: pretty with n spaces), bigints as plain numbers.
 */
export function stringifyJson(v: JsonValue, indent?: number, level = 0): string {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'boolean': return v ? 'true' : 'false';
    case 'bigint': return v.toString();
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError(`cannot print ${v} as JSON`);
      return Number.isInteger(v) ? v.toFixed(0) : String(v);
    case 'string': return pyString(v);
  }
  const nl = indent === undefined ? '' : '\n' + ' '.repeat(indent * (level + 1));
  const close = indent === undefined ? '' : '\n' + ' '.repeat(indent * level);
  const sep = indent === undefined ? ', ' : ',';
  if (Array.isArray(v)) {
    if (!v.length) return '[]';
    return '[' + nl + v.map((x) => stringifyJson(x, indent, level + 1)).join(sep + nl) + close + ']';
  }
  const keys = Object.keys(v).filter((k) => v[k] !== undefined);
  if (!keys.length) return '{}';
  return '{' + nl + keys.map((k) => `${pyString(k)}: ${stringifyJson(v[k]!, indent, level + 1)}`).join(sep + nl) + close + '}';
}

/** `crit decode` output for an image (without the trailing newline crit adds on stdout). */
export function imageToCritJson(img: DecodedImage, indent?: number): string {
  return stringifyJson(imageToCrit(img), indent);
}

// ---- parsing -----------------------------------------------------------------------

/** JSON.parse that keeps every integer literal exact, as bigint. */
export function parseJson(text: string, file = '<json>'): JsonValue {
  let p = 0;
  const fail = (what: string): never => {
    throw new ImageError(file, p, `invalid JSON: ${what}`);
  };
  const ws = (): void => {
    while (p < text.length && (text[p] === ' ' || text[p] === '\n' || text[p] === '\r' || text[p] === '\t')) p++;
  };
  const value = (depth: number): JsonValue => {
    if (depth > 200) fail('nesting too deep');
    ws();
    const c = text[p];
    if (c === '{') {
      p++;
      const o: { [k: string]: JsonValue } = {};
      ws();
      if (text[p] === '}') { p++; return o; }
      for (;;) {
        ws();
        if (text[p] !== '"') fail('expected a key');
        const k = str();
        ws();
        if (text[p++] !== ':') fail("expected ':'");
        o[k] = value(depth + 1);
        ws();
        const d = text[p++];
        if (d === '}') return o;
        if (d !== ',') fail("expected ',' or '}'");
      }
    }
    if (c === '[') {
      p++;
      const a: JsonValue[] = [];
      ws();
      if (text[p] === ']') { p++; return a; }
      for (;;) {
        a.push(value(depth + 1));
        ws();
        const d = text[p++];
        if (d === ']') return a;
        if (d !== ',') fail("expected ',' or ']'");
      }
    }
    if (c === '"') return str();
    if (text.startsWith('true', p)) { p += 4; return true; }
    if (text.startsWith('false', p)) { p += 5; return false; }
    if (text.startsWith('null', p)) { p += 4; return null; }
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(p, p + 400));
    if (!m) return fail('unexpected character');
    p += m[0].length;
    return m[2] || m[3] ? Number(m[0]) : BigInt(m[0]);
  };
  const str = (): string => {
    const start = p;
    p++;
    let out = '';
    for (;;) {
      if (p >= text.length) { p = start; fail('unterminated string'); }
      const c = text[p++]!;
      if (c === '"') return out;
      if (c !== '\\') { out += c; continue; }
      const e = text[p++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const h = text.slice(p, p + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(h)) fail('bad \\u escape');
          out += String.fromCharCode(parseInt(h, 16));
          p += 4;
          break;
        }
        default: fail('bad escape');
      }
    }
  };
  const v = value(0);
  ws();
  if (p !== text.length) fail('trailing characters');
  return v;
}

function intFrom(v: JsonValue, path: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  if (typeof v === 'string' && /^\s*-?(0x[0-9a-fA-F]+|\d+)\s*$/.test(v)) {
    const s = v.trim();
    return s.startsWith('-') ? -BigInt(s.slice(1)) : BigInt(s);
  }
  throw new TypeError(`${path}: expected an integer, got ${JSON.stringify(typeof v === 'bigint' ? String(v) : v)}`);
}

function fromCritValue(f: FieldPlan, v: JsonValue, path: string): unknown {
  switch (f.kind) {
    case 'u64': case 's64': return intFrom(v, path);
    case 'u32': case 's32': return Number(intFrom(v, path));
    case 'float': return typeof v === 'bigint' ? Number(v) : v;
    case 'enum': {
      if (typeof v === 'string' && f.enumValues!.has(v)) return f.enumValues!.get(v);
      if (typeof v === 'bigint' || typeof v === 'number') return Number(v);
      throw new TypeError(`${path}: unknown ${f.protoType} value ${JSON.stringify(v)}`);
    }
    case 'bytes':
      if (typeof v !== 'string') throw new TypeError(`${path}: expected base64 text`);
      return Buffer.from(v, 'base64');
    case 'message': {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TypeError(`${path}: expected an object`);
      return messageFromCrit(f.message!(), v as { [k: string]: JsonValue }, path);
    }
    default: return v;
  }
}

/** A message from its crit dict form (unknown keys are an error, so typos do not vanish). */
export function messageFromCrit(plan: MessagePlan, o: { [k: string]: JsonValue }, path = plan.name): PlainMessage {
  const out: PlainMessage = {};
  const byName = new Map(plan.fields.map((f) => [f.name, f]));
  for (const [k, v] of Object.entries(o)) {
    const f = byName.get(k);
    if (!f) throw new TypeError(`${path}: unknown field "${k}"`);
    const p = `${path}.${k}`;
    if (f.repeated) {
      if (!Array.isArray(v)) throw new TypeError(`${p}: expected an array`);
      out[k] = v.map((x, i) => fromCritValue(f, x, `${p}[${i}]`));
    } else {
      out[k] = fromCritValue(f, v, p);
    }
  }
  // crit 3.17 calls pagemap field 2 "nr_pages"; a pagemap entry with only
  // "nr_pages" is such JSON: the count belongs in both count fields.
  if (plan.name === 'pagemap_entry' && out['compat_nr_pages'] === undefined && typeof out['nr_pages'] === 'bigint') {
    const n = out['nr_pages'];
    out['compat_nr_pages'] = n <= 0xffffffffn ? Number(n) : 0;
  }
  return out;
}

/** Builds an image from crit-shaped JSON text; `file` names the JSON in errors. */
export function critJsonToImage(text: string, file = '<json>'): { kind: ImageKind; bytes: Buffer } {
  const doc = parseJson(text, file);
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new ImageError(file, 0, 'expected {"magic": …, "entries": […]}');
  const magic = doc['magic'];
  const entries = doc['entries'];
  if (typeof magic !== 'string') throw new ImageError(file, 0, 'missing "magic"');
  const kind = kindByName(magic);
  if (!kind || kind.header === 'raw') throw new ImageError(file, 0, `unknown image magic name ${JSON.stringify(magic)}`);
  if (!Array.isArray(entries)) throw new ImageError(file, 0, 'missing "entries" array');
  const out: EntryToWrite[] = [];
  try {
    entries.forEach((e, i) => {
      const type = entryType(kind, i);
      if (!type) throw new TypeError(`${kind.name} images are not supported (no schema)`);
      if (typeof e !== 'object' || e === null || Array.isArray(e)) throw new TypeError(`entries[${i}]: expected an object`);
      const { extra, ...fields } = e;
      const message = messageFromCrit(messagePlan(type), fields, `entries[${i}]`);
      try {
        encodeMessage(type, message); // required fields and ranges, reported with the entry index
      } catch (err) {
        throw new TypeError(`entries[${i}]: ${(err as Error).message}`);
      }
      const w: EntryToWrite = { message };
      if (extra !== undefined) {
        if (typeof extra !== 'string') throw new TypeError(`entries[${i}].extra: expected base64 text`);
        w.extra = Buffer.from(extra, 'base64');
      }
      out.push(w);
    });
    return { kind, bytes: encodeImage(kind, out) };
  } catch (e) {
    if (e instanceof TypeError) throw new ImageError(file, undefined, e.message, { cause: e });
    throw e;
  }
}
