// VmFlags of /proc/PID/smaps → vma_entry flags and madv as CRIU records
// them, refusals of mappings we cannot restore (plugin/dump/vmas.ts), and the
// mmap flags / advice list a restore applies (plugin/restore/vmaflags.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SmapsVma } from '../../plugin/dump/proc.js';
import { planVma } from '../../plugin/dump/vmas.js';
import { madviceList, mmapFlags } from '../../plugin/restore/vmaflags.js';

const anon = (flags: string, perms = 'rw-p', path = ''): SmapsVma => ({
  start: 0x7f0000000000n, end: 0x7f0000010000n, perms, pgoff: 0n, dev: '00:00', inode: 0, path, vmFlags: new Set(flags.split(' ')),
});

test('planVma: mmap flags from VmFlags (gd lo nr dp), locked/droppable not lazy', () => {
  const p = planVma(1, anon('rd wr mr mw me gd lo nr ac'));
  assert.ok(typeof p !== 'string');
  assert.equal(p.entry.flags, 0x2 | 0x20 | 0x100 | 0x2000 | 0x4000);
  assert.equal(p.peFlags & 2, 0, 'a locked VMA is not lazy');
  const d = planVma(1, anon('rd wr mr mw me nr dp dd wf'));
  assert.ok(typeof d !== 'string');
  assert.equal(d.entry.flags & 0x0f, 0x08, 'MAP_DROPPABLE instead of MAP_PRIVATE');
  assert.equal(d.peFlags & 2, 0, 'a droppable VMA is not lazy');
  const plain = planVma(1, anon('rd wr mr mw me ac'));
  assert.ok(typeof plain !== 'string');
  assert.equal(plain.peFlags & 2, 2, 'a plain anonymous VMA is lazy');
  assert.equal(plain.entry.madv, undefined);
});

test('planVma: every madvise advice CRIU keeps', () => {
  const p = planVma(1, anon('rd wr mr mw me sr dc dd mg hg wf'));
  assert.ok(typeof p !== 'string');
  assert.deepEqual(madviceList(p.entry.madv!), [2, 10, 12, 14, 16, 18]);
  const q = planVma(1, anon('rd wr mr mw me rr nh'));
  assert.ok(typeof q !== 'string');
  assert.deepEqual(madviceList(q.entry.madv!), [1, 15]);
});

test('planVma: VM_IO / VM_PFNMAP, hugetlb, shadow stacks and unknown special mappings are refused by name', () => {
  assert.match(planVma(1, anon('rd wr io')) as string, /^pid 1: VMA 7f0000000000-7f0000010000 rw-p: I\/O mapping is not supported$/);
  assert.match(planVma(1, anon('rd wr pf')) as string, /I\/O mapping is not supported/);
  assert.match(planVma(1, anon('rd wr ht')) as string, /hugetlb mappings are not supported/);
  assert.match(planVma(1, anon('rd wr ss')) as string, /shadow stacks are not supported/);
  assert.match(planVma(1, anon('rd wr', 'rw-p', '[uprobes]')) as string, /special mapping is not supported/);
});

test('mmapFlags: the kept bits only (type, GROWSDOWN, LOCKED, NORESERVE, DROPPABLE)', () => {
  const v = { start: 0n, end: 4096n, pgoff: 0n, shmid: 0n, prot: 3, status: 0x201, fd: -1n };
  assert.equal(mmapFlags({ ...v, flags: 0x2 | 0x20 | 0x100 | 0x2000 | 0x4000 }), 0x2 | 0x100 | 0x2000 | 0x4000);
  assert.equal(mmapFlags({ ...v, flags: 0x08 | 0x20 }), 0x08);
});
