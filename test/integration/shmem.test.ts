// Shared memory between the processes of a tree (workload-shmem: a parent
// and a child sharing a MAP_SHARED anonymous region and a sealed memfd, plus
// a private mapping of another memfd): the images are CRIU 4.2's (memfd.img,
// MEMFD files and VMAs, pagemap-shmem-<ino>.img with the data segments
// only) and decode with crit; after an eager or a lazy restore both sides
// see each other's writes, a child forked after the restore still shares
// the one copy, and the seals are back; memfds held as fds keep their
// flags, offsets and mode, and an fd and a mapping of the same memfd stay
// one object. Bad images fail cleanly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FdType, ImageDir, VMA_AREA_MEMFD, VMA_FILE_PRIVATE, VMA_FILE_SHARED } from '../../plugin/images/index.js';
import { restore } from '../../plugin/restore/index.js';
import { critCheckDir } from '../helpers/critcheck.js';
import { isRoot, withTimeout } from '../helpers/env.js';
import { alive } from '../helpers/proc.js';
import { pidExists, restoreAndCheck, withDumped } from '../helpers/restore.js';

const skip = !isRoot && 'needs root';

/** maps lines of a process naming a shmem object: path -> inode. */
function shmemMaps(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = /^\S+ (\S+) \S+ \S+ (\d+)\s+(\/memfd:.*|\/dev\/zero \(deleted\))$/.exec(line);
    if (m) out.set(`${m[3]} ${m[1]}`, m[2]!);
  }
  return out;
}

test('shmem: images of a tree sharing anonymous memory and memfds, then an eager restore sharing one copy', { skip }, () => withDumped('workload-shmem', [], async (d) => {
  const parent = d.wl.pid;
  const child = Number(d.wl.report.child);
  const dir = await ImageDir.open(d.images.path);
  const inodes = await dir.memfdInodes();
  assert.deepEqual(inodes.map((i) => [i.name, i.size, i.seals]).sort(), [
    ['/dev/zero', 64n * 4096n, 1], ['lr-fdonly', 5n, 1], ['lr-private', 4n * 4096n, 1], ['lr-shmem', 8n * 4096n, 2 | 4],
  ].sort());
  const files = new Map((await dir.files()).map((f) => [f.id, f]));
  const shmids = new Map<number, bigint[]>();
  for (const pid of [parent, child]) {
    const vmas = (await dir.mm(pid)).vmas.filter((v) => v.status & VMA_AREA_MEMFD);
    assert.equal(vmas.length, 3, `pid ${pid}: three memfd VMAs`);
    assert.equal(vmas.filter((v) => v.status & VMA_FILE_SHARED).length, 2);
    assert.equal(vmas.filter((v) => v.status & VMA_FILE_PRIVATE).length, 1);
    for (const v of vmas) assert.equal(files.get(Number(v.shmid))?.type, FdType.MEMFD, 'shmid is a MEMFD file id');
    shmids.set(pid, vmas.map((v) => v.shmid));
  }
  assert.deepEqual(shmids.get(parent), shmids.get(child), 'both processes map the same objects');
  // Only the data segments of the anonymous region: pages 3,4 6,7 ... 60,61 63 (parent's and child's).
  const anon = inodes.find((i) => i.name === '/dev/zero')!;
  const pm = await dir.pagemapShmem(anon.shmid);
  const runs: [number, number][] = [];
  for await (const b of pm.batches()) for (const e of b) runs.push([Number(e.vaddr / 4096n), e.nrPages]);
  const want: [number, number][] = [];
  for (let p = 3; p < 63; p += 3) want.push([p, 2]);
  want.push([63, 1]);
  assert.deepEqual(runs, want);
  const stats = await dir.readImage((await import('../../plugin/images/index.js')).KIND.stats, 'dump');
  const st = (stats!.entries[0]!.message as { dump: { shpages_written: bigint; shpages_scanned: bigint } }).dump;
  assert.equal(st.shpages_scanned, 77n);
  assert.equal(st.shpages_written, BigInt(41 + 7 + 4 + 1));
  // The two memfds held as fds: MEMFD files with their status flags and offsets.
  const fdinfo = await dir.fdinfo((await dir.ids(parent)).files_id);
  const memfdFds = fdinfo.filter((f) => f.type === FdType.MEMFD).map((f) => files.get(f.id)!.memfd!);
  assert.deepEqual(memfdFds.map((m) => m.pos).sort(), [3n, 4097n]);
  assert.ok(memfdFds.some((m) => m.pos === 4097n && (m.flags & 0o4000) !== 0 && (m.flags & 3) === 2), 'O_RDWR|O_NONBLOCK kept');
  {
    const c = critCheckDir(d.images.path);
    assert.equal(c.get('memfd.img'), 4);
    assert.ok(c.has(`pagemap-shmem-${anon.shmid}.img`));
  }

  await restoreAndCheck(d, {}, () => {
    const pm1 = shmemMaps(parent);
    const pm2 = shmemMaps(child);
    assert.equal(pm1.size, 3, JSON.stringify([...pm1]));
    assert.deepEqual(pm1, pm2, 'parent and child map the same three objects (same inodes)');
    assert.ok([...pm1.keys()].some((k) => k.startsWith('/memfd:/dev/zero (deleted) rw-s')), 'shared anonymous memory comes back as CRIU 4.2 restores it');
  });
}));

test('shmem: lazy restore (the shared anonymous region served lazily; the sealed, fd-held and privately mapped memfds eager), writes seen both ways, fork after restore', { skip }, () =>
  withDumped('workload-shmem', [], (d) => restoreAndCheck(d, { lazy: true })));

test('shmem: a missing memfd.img or a shmem pagemap past its object is a clear error, nothing left running', { skip }, () => withDumped('workload-shmem', [], async (d) => {
  const child = Number(d.wl.report.child);
  const dir = await ImageDir.open(d.images.path);
  const inodes = await dir.memfdInodes();
  // An object shrunk in memfd.img: its pages lie past the end.
  const shrunk = inodes.map((i) => (i.name === 'lr-shmem' ? { ...i, size: 4096n } : i));
  await dir.writeMemfdInodes(shrunk);
  await assert.rejects(withTimeout(restore({ imagesDir: d.images.path, shellJob: true, detached: true }), 30000, 'restore'),
    (e: Error) => e.name === 'ImageError' && /pagemap-shmem-\d+\.img.*past the end of the object/.test(e.message));
  rmSync(join(d.images.path, 'memfd.img'));
  await assert.rejects(withTimeout(restore({ imagesDir: d.images.path, shellJob: true, detached: true }), 30000, 'restore'),
    (e: Error) => e.name === 'ImageError' && /memfd\.img.*no memfd inode/.test(e.message));
  // (the dumped child, killed by the dump, may still wait for init to reap it)
  assert.ok(!pidExists(d.wl.pid) && !alive(child), 'nothing restored is left');
}));
