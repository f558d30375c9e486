// crit-compatible JSON details: Python json.dumps formatting, MIME base64,
// enum names, exact 64-bit integers, and the JSON → image direction.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  base64Lines, critJsonToImage, imageToCritJson, messageFromCrit, messageToCrit, parseJson, stringifyJson,
} from '../../plugin/images/critjson.js';
import { messagePlan } from '../../plugin/images/codec.js';
import { decodeImage, encodeImage } from '../../plugin/images/image.js';
import { KIND } from '../../plugin/images/magic.js';
import { ImageError } from '../../plugin/errors.js';
import * as S from '../helpers/image-samples.js';

test('printer: Python json.dumps separators, escapes and exact big integers', () => {
  assert.equal(stringifyJson({ a: [1, 2n, (1n << 64n) - 1n], b: { c: true, d: null }, e: [], f: {} }),
    '{"a": [1, 2, 18446744073709551615], "b": {"c": true, "d": null}, "e": [], "f": {}}');
  assert.equal(stringifyJson('q"\\\n\t\u0001\u007f\u00e9\u4e2d\ud83d\ude00'), '"q\\"\\\\\\n\\t\\u0001\\u007f\\u00e9\\u4e2d\\ud83d\\ude00"');
  assert.equal(stringifyJson({ a: [1, { b: 2 }] }, 2), '{\n  "a": [\n    1,\n    {\n      "b": 2\n    }\n  ]\n}');
  assert.equal(stringifyJson(-(1n << 63n)), '-9223372036854775808');
});

test('base64 like Python base64.encodebytes: 76-char lines each ending in newline', () => {
  assert.equal(base64Lines(Buffer.alloc(0)), '');
  assert.equal(base64Lines(Buffer.from('abc')), 'YWJj\n');
  const b = base64Lines(Buffer.alloc(128, 0xff));
  const lines = b.split('\n');
  assert.equal(lines[0]!.length, 76);
  assert.equal(lines.at(-1), '');
  assert.deepEqual(Buffer.from(b, 'base64'), Buffer.alloc(128, 0xff));
});

test('parser keeps integers exact and rejects malformed JSON with an offset', () => {
  const v = parseJson('{"x": [18446744073709551615, -1, 1.5, "a\\u00e9\\n"], "y": {}}') as { x: unknown[] };
  assert.deepEqual(v.x, [18446744073709551615n, -1n, 1.5, 'a\u00e9\n']);
  assert.throws(() => parseJson('{"x": [1, }', 'f.json'), (e: unknown) => e instanceof ImageError && e.offset === 10 && /f\.json at offset 10: invalid JSON/.test(e.message));
  assert.throws(() => parseJson('{"x": 1} x', 'f.json'), /trailing characters/);
  assert.throws(() => parseJson('['.repeat(1000), 'f.json'), /nesting too deep/);
});

test('message ↔ crit dict: enums by name, omitted empties, bytes base64, unknown enum values dropped', () => {
  const plan = messagePlan('file_entry');
  const d = messageToCrit(plan, S.files()[0] as never);
  assert.equal(d['type'], 'REG');
  assert.deepEqual(Object.keys(d), ['type', 'id', 'reg']);
  assert.deepEqual(messageFromCrit(plan, d), S.files()[0]);
  const core = messageToCrit(messagePlan('core_entry'), S.coreLeader() as never) as { mtype: string; tc: { signals_s: { signals: { siginfo: string }[] } } };
  assert.equal(core.mtype, 'X86_64');
  assert.equal(core.tc.signals_s.signals[0]!.siginfo, base64Lines(S.coreLeader().tc!.signals_s!.signals[0]!.siginfo));
  assert.equal('signals_p' in (core as unknown as { thread_core: object }).thread_core, true); // empty optional message kept
  assert.deepEqual(messageToCrit(messagePlan('fdinfo_entry'), { id: 1, flags: 0, type: 777, fd: 3 }), { id: 1, flags: 0, fd: 3 });
  // crit --pretty style input: hex strings for integers.
  assert.deepEqual(messageFromCrit(messagePlan('vma_entry'), parseJson('{"start": "0x1000", "end": 8192, "pgoff": 0, "shmid": 0, "prot": 3, "flags": 34, "status": 513, "fd": -1}') as never),
    { start: 0x1000n, end: 0x2000n, pgoff: 0n, shmid: 0n, prot: 3, flags: 34, status: 513, fd: -1n });
  assert.throws(() => messageFromCrit(messagePlan('fs_entry'), { cwd_id: 1n, root_id: 1n, cwdid: 2n }), /fs_entry: unknown field "cwdid"/);
});

test('JSON → image → JSON is the identity, and bad documents are ImageErrors', () => {
  const bytes = encodeImage(KIND.core, [{ message: S.coreLeader() }]);
  const json = imageToCritJson(decodeImage(bytes, 'core.img'));
  const back = critJsonToImage(json, 'core.json');
  assert.equal(back.kind, KIND.core);
  assert.deepEqual(back.bytes, bytes);
  assert.throws(() => critJsonToImage('{"magic": "NOPE", "entries": []}', 'x.json'), /x\.json at offset 0: unknown image magic name "NOPE"/);
  assert.throws(() => critJsonToImage('{"magic": "PAGES", "entries": []}', 'x.json'), /unknown image magic name/);
  assert.throws(() => critJsonToImage('{"magic": "CORE", "entries": [{"mtype": "SPARC"}]}', 'x.json'), /x\.json: entries\[0\]\.mtype: unknown core_entry\.march value "SPARC"|unknown march value/);
});
