// VMA flags (issue 18 item 4): mlock()ed and MAP_LOCKED, MAP_NORESERVE,
// MAP_GROWSDOWN, MAP_DROPPABLE regions and one per madvise advice CRIU
// keeps are dumped into vma_entry.flags/madv and restored with the same
// VmFlags in /proc/PID/smaps (the workload compares them itself, checks its
// data, grows the growsdown region and forks to see WIPEONFORK/DONTFORK at
// work), eager and lazy; crit decodes the mm image.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ImageDir } from '../../plugin/images/index.js';
import { critDecode } from '../helpers/critcheck.js';
import { isRoot } from '../helpers/env.js';
import { restoreAndCheck, withDumped } from '../helpers/restore.js';

const skip = !isRoot && 'needs root';

// Expected vma_entry bits per region (flags, madv bit).
const FLAGS: Record<string, { flags?: number; madv?: number }> = {
  mlock: { flags: 0x2000 }, locked: { flags: 0x2000 }, noreserve: { flags: 0x4000 }, growsdown: { flags: 0x100 },
  droppable: { flags: 0x08 }, sequential: { madv: 2 }, random: { madv: 1 }, dontfork: { madv: 10 }, dontdump: { madv: 16 },
  mergeable: { madv: 12 }, hugepage: { madv: 14 }, nohugepage: { madv: 15 }, wipeonfork: { madv: 18 },
};

async function roundTrip(lazy: boolean): Promise<void> {
  await withDumped('workload-vmaflags', [], async (d) => {
    const mm = await (await ImageDir.open(d.images.path)).mm(d.wl.pid);
    let seen = 0;
    for (const [name, want] of Object.entries(FLAGS)) {
      const r = d.wl.report[name];
      if (r === undefined) {
        assert.ok(d.wl.report[`skipped_${name}`], `${name}: neither a region nor a reason it was skipped`);
        continue;
      }
      const addr = BigInt(`0x${r.split(':')[0]}`);
      const v = mm.vmas.find((x) => x.start <= addr && addr < x.end);
      assert.ok(v, `${name}: VMA in mm.img`);
      if (want.flags) assert.equal(v.flags & want.flags, want.flags, `${name}: vma_entry.flags 0x${v.flags.toString(16)}`);
      if (want.flags === 0x08) assert.equal(v.flags & 0x02, 0, 'droppable is not also MAP_PRIVATE');
      if (want.madv !== undefined) assert.ok(((v.madv ?? 0n) >> BigInt(want.madv)) & 1n, `${name}: madv bit ${want.madv}`);
      seen++;
    }
    assert.ok(seen >= 11, `at least the locked/noreserve/growsdown/madvise regions exist (${seen})`);
    const e = critDecode(`${d.images.path}/mm-${d.wl.pid}.img`).entries[0] as { vmas: { flags: number; madv?: number }[] };
    assert.ok(e.vmas.some((v) => v.flags & 0x100), 'crit shows MAP_GROWSDOWN');
    assert.ok(e.vmas.some((v) => v.flags & 0x2000), 'crit shows MAP_LOCKED');
    assert.ok(e.vmas.some((v) => (v.madv ?? 0) & (1 << 18)), 'crit shows madv (WIPEONFORK)');
    await restoreAndCheck(d, { lazy });
  });
}

test('VMA flags: locked, noreserve, growsdown, droppable and madvise advice kept (eager)', { skip }, async () => {
  await roundTrip(false);
});

test('VMA flags: the same with a lazy restore', { skip }, async () => {
  await roundTrip(true);
});
