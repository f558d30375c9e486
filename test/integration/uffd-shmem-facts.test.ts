// The kernel facts the design of lazy shared memory rests on (issue 13
// item 5, docs/STATUS.md), measured by native/helpers/uffd-shmem-facts.c on
// a memfd mapped several times and registered with userfaultfd (MISSING):
// a page placed with UFFDIO_COPY through one mapping enters the object's
// page cache (every sharer sees it without a fault) and a second copy of
// it fails with EEXIST (so a page is never placed twice); ZEROPAGE and
// copies through a read-only shared mapping work; a private mapping's copy
// stays private; MADV_DONTNEED keeps a served page, MADV_REMOVE drops it;
// for pages never served the two give byte-identical UFFD_EVENT_REMOVE
// messages (they cannot be told apart); a write through the fd bypasses
// userfaultfd (an object held as an fd cannot be lazy).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { helperPath } from '../../plugin/native/addon.js';
import { isRoot } from '../helpers/env.js';
import { parseReport } from '../helpers/workload.js';

test('userfaultfd on shared memory: the facts lazy shared memory relies on', { skip: !isRoot && 'needs root (userfaultfd)' }, async () => {
  const r = await promisify(execFile)(helperPath('uffd-shmem-facts'), [], { timeout: 30000 });
  const f = parseReport(r.stdout);
  assert.ok(r.stdout.includes('\ndone\n'), r.stdout);
  assert.equal(f.copy_a0, '0', 'UFFDIO_COPY into a shared shmem mapping');
  assert.equal(f.b0, 'd', 'another mapping of the object sees the page without a fault');
  assert.equal(f.copy_b0_again, '-17', 'a second copy of the same object page: EEXIST');
  assert.equal(f.zeropage_a1, '0', 'UFFDIO_ZEROPAGE on shmem');
  assert.equal(f.copy_r2, '0', 'copy through a read-only shared mapping');
  assert.equal(f.a2, 'r');
  assert.equal(f.copy_v3, '0', 'copy into a private mapping of the object');
  assert.equal(f.copy_a3, '0', 'the private copy did not enter the page cache');
  assert.equal(f.dontneed_ev, 'REMOVE');
  assert.equal(f.copy_a0_after_dontneed, '-17', 'MADV_DONTNEED keeps a served page');
  assert.equal(f.remove_ev, 'REMOVE');
  assert.equal(f.copy_b0_after_remove, '0', 'MADV_REMOVE drops it: it faults again');
  assert.equal(f.unserved_evs, 'REMOVE,REMOVE');
  assert.equal(f.same_msg_unserved, '1', 'DONTNEED and REMOVE of unserved pages look the same');
  assert.equal(f.copy_a7_after_pwrite, '-17', 'a write through the fd bypasses userfaultfd');
});
