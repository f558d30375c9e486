import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from '../helpers/cli.js';
import { isRoot } from '../helpers/env.js';

interface Row { name: string; status: string; detail: string; impact: string; required: boolean }

test('check --json reports every probe with a status and an impact', { skip: !isRoot && 'needs root' }, async () => {
  const r = await runCli(['check', '--json']);
  const out = JSON.parse(r.stdout) as { results: Row[]; verdict: { ok: boolean; lazyOk: boolean; missingRequired: string[] } };
  const names = out.results.map((x) => x.name);
  for (const n of ['kernel', 'ptrace', 'clone3-set_tid', 'pidfd_getfd', 'uffd:EVENT_FORK', 'uffd:WP_ASYNC', 'vdso', 'prctl-mm-map']) {
    assert.ok(names.includes(n), `probe ${n} missing from ${names.join(',')}`);
  }
  for (const row of out.results) {
    assert.ok(['ok', 'missing', 'info'].includes(row.status), `${row.name}: ${row.status}`);
    assert.ok(row.impact.length > 0);
  }
  // As root on Linux 6.x ptrace of our own child must work; the verdict agrees with the rows.
  assert.equal(out.results.find((x) => x.name === 'ptrace')?.status, 'ok');
  assert.equal(out.verdict.ok, out.results.every((x) => !x.required || x.status !== 'missing'));
  assert.equal(r.code, out.verdict.ok ? 0 : 1);
});

test('check --feature with an unknown name is a one-line error and exit 1', async () => {
  const r = await runCli(['check', '--feature', 'no-such-feature']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.match(r.stderr, /unknown feature no-such-feature/);
});

test('check --feature answers CRIU\'s names for the state dump reads and restores (zdtm asks before running a test)', { skip: !isRoot && 'needs root' }, async () => {
  // Kernel support probed by lr-check: this machine (Linux 6.x, root) has all of them.
  for (const f of ['get_rseq_conf', 'seccomp_filters', 'seccomp_suspend', 'ns_pid', 'fdinfo_lock', 'sockopt_buf_lock']) {
    const r = await runCli(['check', '--feature', f]);
    assert.equal(r.code, 0, `${f}: ${r.stderr}`);
  }
  // What we do not dump stays refused by name, so zdtm skips those tests.
  for (const f of ['tcp_half_closed', 'ipv6_freebind', 'aio_remap']) {
    const r = await runCli(['check', '--feature', f]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`CRIU feature ${f} is not supported by lazy-restore`));
  }
});
