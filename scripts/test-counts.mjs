// A node:test reporter that only counts: tests that passed, failed and were
// skipped, in unit and in integration files. scripts/test.sh reads its JSON
// to print the skip count and to fail a run whose integration tests were
// asked for but none ran (every one skipped, e.g. not root).
export default async function* counts(source) {
  const c = { unit: { pass: 0, fail: 0, skip: 0 }, integration: { pass: 0, fail: 0, skip: 0 }, skipped: [] };
  for await (const ev of source) {
    if (ev.type !== 'test:pass' && ev.type !== 'test:fail') continue;
    const d = ev.data;
    if (d.details?.type === 'suite') continue;
    const kind = typeof d.file === 'string' && d.file.includes('/integration/') ? 'integration' : 'unit';
    if (d.skip !== undefined && d.skip !== false) {
      c[kind].skip++;
      c.skipped.push(`${d.file ?? '?'}: ${d.name} (${d.skip === true ? 'skipped' : d.skip})`);
    } else if (ev.type === 'test:pass') c[kind].pass++;
    else c[kind].fail++;
  }
  yield JSON.stringify(c) + '\n';
}
