// --shell-job: a process whose stdio is a terminal (started under
// script(1), so it leads a session on a pty) is refused without the flag,
// naming pid and fd, and dumped with it: TTY file entries with their device
// path and a tty-info entry, readable by crit. The process runs on unharmed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { parseStat } from '../../plugin/dump/proc.js';
import { UserError } from '../../plugin/errors.js';
import { FdType, ImageDir, TtyType } from '../../plugin/images/index.js';
import { helperPath } from '../../plugin/native/addon.js';
import { critCheckDir } from '../helpers/critcheck.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { parseReport, waitForFile } from '../helpers/workload.js';

const haveScript = existsSync('/usr/bin/script');

test('dump --shell-job: stdio on a terminal', { skip: (!isRoot && 'needs root') || (!haveScript && 'SKIPPED: script(1) not installed') }, async () => {
  const ctrl = tempDir('lr-wl-tty-');
  const img = tempDir('lr-dump-tty-');
  const script = spawn('/usr/bin/script', ['-qfec', `exec ${helperPath('workload-mem')} ${ctrl.path} 1`, '/dev/null'], { stdio: 'ignore' });
  const scriptExit = new Promise<number | string>((r) => script.on('exit', (c, s) => r(c ?? s ?? -1)));
  let pid = 0;
  try {
    await withTimeout(waitForFile(join(ctrl.path, 'ready'), 20000), 25000, 'workload under script ready');
    pid = Number(parseReport(readFileSync(join(ctrl.path, 'ready'), 'utf8')).pid);
    await assert.rejects(dump({ pid, imagesDir: img.path }), (e: unknown) => e instanceof UserError
      && new RegExp(`pid ${pid}: fd 0 \\(/dev/pts/\\d+\\): terminals are not supported \\(use --shell-job for stdio\\)`).test(e.message));

    await dump({ pid, imagesDir: img.path, leaveRunning: true, shellJob: true });
    assert.equal(critCheckDir(img.path).get('tty-info.img'), 1);
    const dir = await ImageDir.open(img.path);
    const fdinfo = await dir.fdinfo((await dir.ids(pid)).files_id);
    const files = await dir.files();
    const tty = files.find((f) => f.id === fdinfo.find((x) => x.fd === 0)!.id)!;
    assert.equal(tty.type, FdType.TTY);
    for (const fd of [1, 2]) assert.equal(fdinfo.find((x) => x.fd === fd)!.id, tty.id, `fd ${fd} shares the terminal's file`);
    const regf = files.find((f) => f.id === tty.tty!.regf_id)!;
    assert.match(regf.reg!.name, /^\/dev\/pts\/\d+$/);
    const [info] = await dir.ttyInfo();
    assert.equal(info!.type, TtyType.PTY);
    assert.equal(info!.pty!.index, Number(regf.reg!.name.split('/').pop()));
    assert.equal(info!.id, tty.tty!.tty_info_id);
    // `exec` above: the workload leads the terminal's session (shells differ in
    // whether `sh -c CMD` execs a lone CMD by themselves).
    assert.equal(info!.sid, parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8')).sid);

    process.kill(pid, 'SIGUSR1');
    assert.equal(await withTimeout(scriptExit, 30000, 'script exits with the workload'), 0);
    assert.equal(readFileSync(join(ctrl.path, 'result'), 'utf8').trim(), 'ok');
  } finally {
    // While script(1) runs, its child (the workload) still holds its pid.
    if (script.exitCode === null && script.signalCode === null) {
      if (pid > 0) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      script.kill('SIGKILL');
    }
    await scriptExit;
    ctrl.dispose();
    img.dispose();
  }
});
