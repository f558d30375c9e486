// checkImageSet: a consistent checkpoint passes; each broken rule of
// IMAGE-FORMAT §7.1 is reported against the right file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkImageSet } from '../../plugin/images/validate.js';
import { PE_PRESENT } from '../../plugin/images/memory.js';
import { tempDir } from '../helpers/env.js';
import { writeSampleCheckpoint } from '../helpers/image-checkpoint.js';
import * as S from '../helpers/image-samples.js';

test('the sample checkpoint is consistent', async () => {
  const tmp = tempDir();
  try {
    await writeSampleCheckpoint(tmp.path);
    assert.deepEqual(await checkImageSet(tmp.path), []);
  } finally {
    tmp.dispose();
  }
});

test('broken rules are reported per file', async () => {
  const tmp = tempDir();
  try {
    const d = await writeSampleCheckpoint(tmp.path);
    await d.writeInventory({ ...S.inventory(), img_version: 1, fdinfo_per_id: false, root_ids: { ...S.rootIds, files_id: 2 } });
    await d.writePstree([...S.pstree, { pid: 4260, ppid: 9999, pgid: 1, sid: 1, threads: [4261] }]);
    const thread = S.coreThread();
    thread.tc = S.coreLeader().tc!;
    delete thread.thread_core!.creds;
    await d.writeCore(4243, thread);
    const leader = S.coreLeader();
    leader.tc!.sigactions.pop();
    leader.tc!.task_state = 6;
    leader.thread_info!.fpregs.st_space.pop();
    leader.thread_info!.fpregs.xsave!.ymmh_space = [1, 2];
    leader.tc!.signals_s!.signals[0]!.siginfo = Buffer.alloc(100);
    await d.writeCore(4242, leader);
    const mm = S.mm();
    mm.exe_file_id = 77;
    mm.mm_saved_auxv = Array.from({ length: 46 }, () => 0n);
    mm.vmas[1] = { ...mm.vmas[1]!, start: 0x55d0c0de1000n }; // overlaps vma 0
    await d.writeMm(4242, mm);
    await d.writeFiles([...S.files().slice(0, 3), { type: 2, id: 4, reg: S.files()[0]!.reg! }, ...S.files().slice(4)]);
    await d.writeFs(4242, { cwd_id: 4, root_id: 55 });
    await d.writeFdinfo(2, [...S.fdinfo, { id: 66, flags: 0, type: 1, fd: 9 }, { id: 2, flags: 0, type: 2, fd: 10 }]);
    const w = await d.pagemapWriter(4242, 1);
    await w.add(0x7ffd00100000n, 3, PE_PRESENT, Buffer.alloc(3 * 4096)); // runs past the vdso VMA
    await w.close();

    const problems = (await checkImageSet(tmp.path)).map((p) => `${p.file}: ${p.message}`);
    const expect = [
      /^inventory\.img: img_version 1 \(must be 2\)$/,
      /^inventory\.img: fdinfo_per_id is not true/,
      /^files\.img: file id 4: type 2 without its pipe-message$/,
      /^pstree\.img: pid 4260: parent 9999 does not appear before it$/,
      /^pstree\.img: pid 4260: first thread is 4261 \(must be the pid\)$/,
      /^core-4242\.img: task_state 6 is not 1/,
      /^core-4242\.img: 61 sigactions \(must be 62 or none\)$/,
      /^core-4242\.img: fpregs\.st_space has 31 words \(must be 32\)$/,
      /^core-4242\.img: xsave\.ymmh_space has 2 elements \(a present component needs 64\)$/,
      /^core-4242\.img: queued siginfo of 100 bytes \(must be 128\)$/,
      /^core-4243\.img: non-leader thread has tc/,
      /^core-4243\.img: thread has no creds although the leader has$/,
      /^ids-4242\.img: root task's files_id 2 equals inventory root_ids\.files_id$/,
      /^fdinfo-2\.img: fd 9: file id 66 has no entry in files\.img$/,
      /^fdinfo-2\.img: fd 10: type 2 differs from files\.img type 1$/,
      /^fs-4242\.img: cwd_id 4 is not a REG file$/,
      /^fs-4242\.img: root_id 55 has no entry in files\.img$/,
      /^mm-4242\.img: mm_saved_auxv has 46 words \(at most 44\)$/,
      /^mm-4242\.img: exe_file_id 77 has no entry in files\.img$/,
      /^mm-4242\.img: vma 0x55d0c0de1000-0x55d0c0de4000: overlaps or precedes the previous VMA$/,
      /^pagemap-4242\.img: present page at 0x7ffd00102000 \(entry at offset 14\) is outside every private VMA$/,
      /^core-4260\.img: image is missing \(ENOENT\)$/,
      /^pagemap-4260\.img: missing \(CRIU refuses/,
    ];
    for (const re of expect) assert.ok(problems.some((p) => re.test(p)), `no problem matching ${re}\n${problems.join('\n')}`);
  } finally {
    tmp.dispose();
  }
});
