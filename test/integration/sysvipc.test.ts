// SysV IPC in an IPC namespace of the tree's own (plugin/dump/ipc,
// plugin/restore/sysvipc.ts): workload-sysvipc unshares its IPC namespace
// and makes four shm segments (attached read-write and shared with a forked
// child, attached read-only, detached, attached and IPC_RMID'd), a
// semaphore set and a message queue with three messages, and raises its
// namespace's msgmnb. The dump writes CRIU's ipcns-var/-shm/-sem/-msg images
// (crit decodes them) and each segment's contents in pagemap-shmem-<id>.img;
// the restore (eager, and lazy: the segments are filled eagerly) makes a new
// IPC namespace with every object at its id, and the workload checks ids,
// keys, modes, contents, sharing with its child, the read-only attach,
// SHM_DEST, semaphore values, the messages in order, qbytes and msgmnb.
// Bad input: images without the namespace's variables, or without a segment
// a process attaches, fail before anything runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageError, UserError } from '../../plugin/errors.js';
import { encodeImage, ImageDir, KIND, VMA_AREA_SYSVIPC } from '../../plugin/images/index.js';
import { restore } from '../../plugin/restore/index.js';
import { critDecode } from '../helpers/critcheck.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { restoreAndCheck, withDumped } from '../helpers/restore.js';

const skip = !isRoot && 'needs root';

test('SysV IPC: an IPC namespace of its own is dumped as CRIU writes it and restored eagerly and lazily', { skip }, async () => {
  await withDumped('workload-sysvipc', [], async (d) => {
    const r = d.wl.report;
    const dir = await ImageDir.open(d.images.path);
    const pid = d.wl.pid;
    const ids = await dir.ids(pid);
    const inv = await dir.inventory();
    assert.notEqual(ids.ipc_ns_id, inv.root_ids!.ipc_ns_id, 'root_ids hold the dumper\'s IPC namespace, the root its own');
    const ns = ids.ipc_ns_id!;

    // ipcns-var: the namespace's msgmnb.
    const v = critDecode(dir.pathOf(KIND.ipcVar, ns));
    assert.equal(v.magic, 'IPC_VAR');
    assert.equal(v.entries[0]!.msg_ctlmnb, 32768);
    assert.equal((v.entries[0]!.sem_ctls as number[]).length, 4);
    // Semaphores and messages: crit decodes the values and the message records.
    const sem = critDecode(dir.pathOf(KIND.ipcSem, ns));
    assert.equal(sem.entries.length, 1);
    assert.deepEqual(sem.entries[0]!.extra, [1, 7, 300]);
    assert.equal((sem.entries[0]!.desc as { id: number }).id, Number(r.sem));
    const msg = critDecode(dir.pathOf(KIND.ipcMsg, ns));
    assert.equal(msg.entries.length, 1);
    assert.equal(msg.entries[0]!.qbytes, 20000);
    assert.equal(msg.entries[0]!.qnum, 3);
    const extra = msg.entries[0]!.extra as unknown[];
    assert.deepEqual(extra[0], { mtype: 1, msize: 5 });
    assert.equal(Buffer.from(extra[1] as string, 'base64').toString(), 'hello');
    assert.deepEqual(extra[4], { mtype: 2, msize: 0 });
    // Segments: in_pagemaps, contents in pagemap-shmem-<id>.img. (crit reads
    // only the first entry right: its ipc_shm handler ignores in_pagemaps and
    // takes the next entries for contents, with CRIU's own images too.)
    const shm = await dir.readEntries<{ desc: { id: number; key: number; mode: number }; size: bigint; in_pagemaps: boolean }>(KIND.ipcShm, ns);
    assert.deepEqual(shm.map((s) => [s.desc.id, s.desc.key, s.desc.mode & 0o1777, Number(s.size), s.in_pagemaps]), [
      [Number(r.shm_a), 0x5a1, 0o640, 3 * 4096 + 100, true],
      [Number(r.shm_b), 0, 0o600, 16 * 4096, true],
      [Number(r.shm_c), 0x5c3, 0o600, 2 * 4096, true],
      [Number(r.shm_d), 0, 0o1600, 4096, true],
    ]);
    assert.equal(critDecode(dir.pathOf(KIND.ipcShm, ns)).magic, 'IPCNS_SHM');
    for (const id of [r.shm_a, r.shm_b, r.shm_c, r.shm_d]) assert.ok(await dir.hasShmemPagemap(Number(id)), `pagemap-shmem-${id}.img`);
    // The attaches: VMA_AREA_SYSVIPC with shmid = the segment id, no pages of their own.
    const mm = await dir.mm(pid);
    const sysv = mm.vmas.filter((x) => x.status & VMA_AREA_SYSVIPC).map((x) => [`0x${x.start.toString(16)}`, Number(x.shmid), x.fdflags]);
    assert.deepEqual(sysv.sort(), [[r.addr_b, Number(r.shm_b), 0], [r.addr_d, Number(r.shm_d), 2], [r.addr_a, Number(r.shm_a), 2]].sort());

    await restoreAndCheck(d, { lazy: false });
    await restoreAndCheck(d, { lazy: true });
  });
});

test('SysV IPC: images without the namespace\'s variables or without an attached segment fail before anything runs', { skip }, async () => {
  await withDumped('workload-sysvipc', [], async (d) => {
    const dir = await ImageDir.open(d.images.path);
    const pid = d.wl.pid;
    const ns = (await dir.ids(pid)).ipc_ns_id!;
    const bad = tempDir('lr-sysvipc-bad-');
    try {
      cpSync(d.images.path, bad.path, { recursive: true });
      const varFile = join(bad.path, `ipcns-var-${ns}.img`);
      rmSync(varFile);
      await assert.rejects(withTimeout(restore({ imagesDir: bad.path, shellJob: true, detached: true }), 30000, 'restore'),
        (e: unknown) => e instanceof ImageError && e.message.includes(varFile) && e.message.includes('missing'));
      assert.ok(!existsSync(`/proc/${pid}`), 'nothing restored');

      cpSync(join(d.images.path, `ipcns-var-${ns}.img`), varFile);
      // ipcns-shm without segment A, which the root and its child attach.
      const shm = await dir.readImage(KIND.ipcShm, ns);
      const a = Number(d.wl.report.shm_a);
      writeFileSync(join(bad.path, `ipcns-shm-${ns}.img`), encodeImage(KIND.ipcShm, shm!.entries.filter((e) => (e.message as { desc: { id: number } }).desc.id !== a).map((e) => ({ message: e.message }))));
      await assert.rejects(withTimeout(restore({ imagesDir: bad.path, shellJob: true, detached: true }), 30000, 'restore'),
        (e: unknown) => e instanceof UserError && e.message.includes(`pid ${pid}: VMA ${d.wl.report.addr_a}-`) && e.message.includes(`attaches SysV shm id ${a}, which the images do not have`));
      assert.ok(!existsSync(`/proc/${pid}`), 'nothing restored');
    } finally {
      bad.dispose();
    }
  });
});
