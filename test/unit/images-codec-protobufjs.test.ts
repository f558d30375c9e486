// The codec (plugin/images/codec.ts, schema-driven) against protobufjs on the
// same schemas: every message type, random fully-populated messages, encoded
// to the same bytes and decoded to the same values both ways.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import protobuf from 'protobufjs';
import { decodeMessage, encodeMessage, messagePlan, messageTypeNames, protoSchema, type FieldPlan, type MessagePlan, type PlainMessage } from '../../plugin/images/codec.js';
import * as S from '../helpers/image-samples.js';

const root = protobuf.Root.fromJSON(protoSchema() as protobuf.INamespace);
root.resolveAll();

/** Our plain form → what protobufjs encodes (64-bit values as {low, high}). */
function toPbjs(plan: MessagePlan, m: PlainMessage): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const one = (f: FieldPlan, v: unknown): unknown => {
    if (f.kind === 'message') return toPbjs(f.message!(), v as PlainMessage);
    if (typeof v === 'bigint') {
      const u = BigInt.asUintN(64, v);
      return { low: Number(u & 0xffffffffn) | 0, high: Number(u >> 32n) | 0, unsigned: f.kind === 'u64' };
    }
    return v;
  };
  for (const f of plan.fields) {
    const v = m[f.name];
    if (v === undefined) continue;
    out[f.name] = f.repeated ? (v as unknown[]).map((x) => one(f, x)) : one(f, v);
  }
  return out;
}

/** What protobufjs decodes → our plain form. */
function fromPbjs(plan: MessagePlan, m: Record<string, unknown>): PlainMessage {
  const out: PlainMessage = {};
  const one = (f: FieldPlan, v: unknown): unknown => {
    switch (f.kind) {
      case 'message': return fromPbjs(f.message!(), v as Record<string, unknown>);
      case 'u64': case 's64': {
        const l = v as { low: number; high: number } | number;
        const u = typeof l === 'number' ? BigInt.asUintN(64, BigInt(l)) : (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0);
        return f.kind === 's64' ? BigInt.asIntN(64, u) : u;
      }
      case 'u32': return (v as number) >>> 0;
      case 'bytes': return Buffer.from(v as Uint8Array);
      default: return v;
    }
  };
  for (const f of plan.fields) {
    const v = m[f.name];
    if (f.repeated) out[f.name] = ((v as unknown[] | undefined) ?? []).map((x) => one(f, x));
    else if (v !== undefined && v !== null && Object.prototype.hasOwnProperty.call(m, f.name)) out[f.name] = one(f, v);
  }
  return out;
}

test('same bytes and values as protobufjs, every message type', () => {
  const r = S.rng(7);
  const types = messageTypeNames();
  assert.ok(types.length > 100);
  for (const type of types) {
    const plan = messagePlan(type);
    const t = root.lookupType(type);
    for (let i = 0; i < 20; i++) {
      const m = S.randomMessage(type, r);
      const ours = encodeMessage(type, m);
      const theirs = t.encode(toPbjs(plan, m)).finish();
      assert.deepEqual(Buffer.from(ours), Buffer.from(theirs), `${type} #${i}: encoding`);
      const back = decodeMessage(type, theirs, { file: 'x', offset: 0 });
      const pb = t.decode(ours);
      // protobufjs's decoded object carries prototype defaults: read own fields only.
      const own = Object.fromEntries(Object.keys(pb).map((k) => [k, (pb as unknown as Record<string, unknown>)[k]]));
      assert.deepEqual(back, fromPbjs(plan, own), `${type} #${i}: decoding`);
    }
  }
});
