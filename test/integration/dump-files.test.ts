// Dump of a process with open files (workload-files): regular files with
// path, flags, position, size and mode; a dup'ed descriptor sharing one file
// entry; FD_CLOEXEC; /dev/null; a directory fd; cwd. The process runs on
// and checks its descriptors itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { FdType, ImageDir } from '../../plugin/images/index.js';
import { critCheckDir } from '../helpers/critcheck.js';
import { isRoot } from '../helpers/env.js';
import { withRunningDump } from '../helpers/dump-running.js';

const O_WRONLY = 1, O_RDWR = 2, O_APPEND = 0o2000, O_LARGEFILE = 0o100000, O_DIRECTORY = 0o200000;

test('dump: open files at offsets and cwd', { skip: !isRoot && 'needs root' }, async () => {
  await withRunningDump('lr-dump-files-', 'workload-files', [], async (wl, img) => {
    const r = wl.report;
    await dump({ pid: wl.pid, imagesDir: img.path, leaveRunning: true });
    assert.ok(critCheckDir(img.path).has('files.img'));
    const dir = await ImageDir.open(img.path);
    const ids = await dir.ids(wl.pid);
    const fdinfo = await dir.fdinfo(ids.files_id);
    const files = await dir.files();
    const byFd = (fd: number) => {
      const fi = fdinfo.find((f) => f.fd === fd);
      assert.ok(fi, `fd ${fd} dumped`);
      const fe = files.find((f) => f.id === fi.id)!;
      assert.equal(fe.type, fi.type);
      return { fi, reg: fe.reg! };
    };
    const data = byFd(Number(r.data));
    assert.equal(data.reg.name, join(wl.ctrlDir, 'data.bin'));
    assert.equal(data.reg.pos, 4321n);
    assert.equal(data.reg.flags & ~O_LARGEFILE, O_RDWR);
    assert.equal(data.reg.size, 10000n);
    assert.equal(data.reg.mode, Number(statSync(join(wl.ctrlDir, 'data.bin')).mode));
    assert.equal(data.fi.flags, 0);
    assert.equal(byFd(20).fi.id, data.fi.id, 'dup shares the file entry');
    const ro = byFd(Number(r.ro));
    assert.notEqual(ro.fi.id, data.fi.id, 'separate open of the same file');
    assert.equal(ro.reg.pos, 777n);
    assert.equal(ro.fi.flags, 1, 'FD_CLOEXEC');
    const log = byFd(Number(r.log));
    assert.equal(log.reg.flags & ~O_LARGEFILE, O_WRONLY | O_APPEND);
    assert.equal(log.reg.size, undefined, 'no size for write-only appenders');
    assert.equal(byFd(Number(r.null)).reg.name, '/dev/null');
    const d = byFd(Number(r.dir));
    assert.equal(d.reg.name, r.cwd);
    assert.equal(d.reg.flags & O_DIRECTORY, O_DIRECTORY);
    assert.equal(byFd(0).reg.name, '/dev/null');
    assert.equal(byFd(2).reg.name, join(wl.ctrlDir, 'stderr.log'));
    for (const f of fdinfo) assert.equal(f.type, FdType.REG);
    const fsImg = await dir.fs(wl.pid);
    assert.equal(files.find((f) => f.id === fsImg.cwd_id)!.reg!.name, r.cwd);
    assert.equal(files.find((f) => f.id === fsImg.root_id)!.reg!.name, '/');
  });
});
