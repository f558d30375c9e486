// cgroup membership and properties across dump and restore, on real
// cgroups (v1 cpu and pids, v2 unified), created under a unique test path
// and removed afterwards. workload-tree (root -> child -> grandchild) is
// placed in T/A (cpu.cfs_quota_us 50000, pids.max 64), its child alone in
// cpu T/A/kid: two cgroup sets besides the dumper's. The dump is limited to
// those three hierarchies (--cgroup-dump-controller) so no other cgroup of
// the machine is walked or touched. Checked: cgroup.img (crit decodes it:
// the sets, the directories with their properties), cg_set in each core,
// the inventory's root_cg_set; restores in soft mode into the same cgroups
// (existing properties kept), full mode (existing properties restored),
// into a new --cgroup-root (cgroups created, properties restored, soft and
// full), ignore, strict/none refusals by name; --freeze-cgroup on the CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { ImageDir } from '../../plugin/images/index.js';
import { restore, type RestoreOptions } from '../../plugin/restore/index.js';
import { propsTableFrom } from '../../plugin/cgroup/props.js';
import { spawnSync } from 'node:child_process';
import { runCli } from '../helpers/cli.js';
import { critDecode } from '../helpers/critcheck.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { until } from '../helpers/proc.js';
import { killRestoredWorkloads } from '../helpers/restored.js';
import { startWorkload, type Workload } from '../helpers/workload.js';

const CG = '/sys/fs/cgroup';
const HIER = { cpu: `${CG}/cpu`, pids: `${CG}/pids`, v2: `${CG}/unified`, freezer: `${CG}/freezer` } as const;
const skip = !isRoot ? 'needs root' : !existsSync(`${HIER.cpu}/cpu.cfs_quota_us`) || !existsSync(`${HIER.pids}/cgroup.procs`) || !existsSync(`${HIER.v2}/cgroup.procs`)
  ? 'needs cgroup v1 cpu and pids and cgroup v2 at /sys/fs/cgroup/unified' : false;
const DUMPED = ['cpu', 'pids', ''];

let seq = 0;

/** A unique test cgroup name; every directory made under it is removed by cleanup(). */
function testCgroups(): { name: string; made: string[]; mk: (hier: string, rel: string) => string; cleanup: () => Promise<void> } {
  const name = `lr-test-cgroups-${process.pid}-${++seq}`;
  const made: string[] = [];
  return {
    name, made,
    mk: (hier, rel) => {
      const p = join(hier, rel);
      mkdirSync(p, { recursive: true });
      made.push(p);
      return p;
    },
    cleanup: async () => {
      // Also what restores created under the new roots; deepest first.
      const all = new Set<string>();
      for (const h of Object.values(HIER)) for (const top of [name, `${name}-new`]) collectDirs(join(h, top), all);
      const dirs = [...all].sort((a, b) => b.length - a.length);
      await until(() => {
        for (const d of dirs) {
          if (!existsSync(d)) continue;
          try { rmdirSync(d); } catch { return false; }
        }
        return true;
      }, 20_000, () => `test cgroups ${dirs.filter((d) => existsSync(d)).join(' ')} to be empty and removed`);
    },
  };
}

function collectDirs(dir: string, out: Set<string>): void {
  if (!existsSync(dir)) return;
  out.add(dir);
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) collectDirs(join(dir, e.name), out);
}

function moveInto(dir: string, pid: number): void {
  writeFileSync(join(dir, 'cgroup.procs'), String(pid));
}

/** /proc/PID/cgroup as name → path. */
function cgroupsOf(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

interface Setup {
  wl: Workload;
  images: { path: string; dispose: () => void };
  cg: ReturnType<typeof testCgroups>;
  pids: { root: number; child: number; grandchild: number };
}

/** workload-tree in T/A (cpu, pids, v2), its child in cpu T/A/kid; dumped with `dumpOpts`. */
async function setUp(dumpOpts: { freezer?: boolean } = {}): Promise<Setup> {
  const cg = testCgroups();
  const wl = await startWorkload('workload-tree');
  const images = tempDir('lr-img-');
  try {
    const pids = { root: wl.pid, child: Number(wl.report.child), grandchild: Number(wl.report.grandchild) };
    const a = { cpu: cg.mk(HIER.cpu, `${cg.name}/A`), pids: cg.mk(HIER.pids, `${cg.name}/A`), v2: cg.mk(HIER.v2, `${cg.name}/A`) };
    const kid = cg.mk(HIER.cpu, `${cg.name}/A/kid`);
    writeFileSync(join(a.cpu, 'cpu.cfs_quota_us'), '50000');
    writeFileSync(join(a.pids, 'pids.max'), '64');
    for (const dir of Object.values(a)) for (const p of Object.values(pids)) moveInto(dir, p);
    moveInto(kid, pids.child);
    let freezer: string | undefined;
    if (dumpOpts.freezer) {
      freezer = cg.mk(HIER.freezer, `${cg.name}/A`);
      for (const p of Object.values(pids)) moveInto(freezer, p);
    }
    if (freezer) {
      // Through the CLI: --freeze-cgroup and --cgroup-dump-controller as a user gives them.
      const r = await runCli(['dump', '-t', String(wl.pid), '-D', images.path, '-v', '--freeze-cgroup', freezer,
        ...[...DUMPED, 'freezer'].flatMap((c) => ['--cgroup-dump-controller', c])], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, `dump --freeze-cgroup: ${r.stderr}`);
      assert.match(r.stderr + r.stdout, new RegExp(`seized in freezer cgroup ${freezer}`));
    } else {
      await dump({ pid: wl.pid, imagesDir: images.path, shellJob: true, cgroups: { dumpControllers: DUMPED } });
    }
    await withTimeout(wl.exited, 10_000, 'workload-tree killed by the dump');
    await until(() => Object.values(pids).every((p) => !existsSync(`/proc/${p}`)), 30_000, 'the dumped tree to be reaped');
    return { wl, images, cg, pids };
  } catch (e) {
    await wl.dispose();
    images.dispose();
    await cg.cleanup();
    throw e;
  }
}

async function tearDown(s: Setup): Promise<void> {
  await s.wl.dispose();
  s.images.dispose();
  await s.cg.cleanup();
}

/** Restores, runs `check` on the restored pids (image pid → cgroups), then kills the tree and waits until its pids are free. */
async function restoreAndLook(s: Setup, opts: Partial<RestoreOptions>, check: (cg: (pid: number) => Map<string, string>) => void): Promise<void> {
  const tree = await withTimeout(restore({ imagesDir: s.images.path, shellJob: true, detached: true, ...opts }), 30_000, 'restore');
  try {
    check(cgroupsOf);
  } finally {
    killRestoredWorkloads([...tree.pids, tree.pid]);
    await withTimeout(tree.wait(), 10_000, 'killed restored root').catch(() => undefined);
    await tree.close();
    await until(() => Object.values(s.pids).every((p) => !existsSync(`/proc/${p}`)), 30_000, 'the restored tree to be reaped');
  }
}

function assertIn(s: Setup, cg: (pid: number) => Map<string, string>, top: string, kidPath = `${top}/kid`): void {
  for (const p of [s.pids.root, s.pids.grandchild]) {
    const c = cg(p);
    assert.equal(c.get('cpu'), top, `pid ${p} cpu`);
    assert.equal(c.get('pids'), top, `pid ${p} pids`);
    assert.equal(c.get(''), top, `pid ${p} cgroup v2`);
  }
  const k = cg(s.pids.child);
  assert.equal(k.get('cpu'), kidPath, 'the child in its own cpu cgroup');
  assert.equal(k.get('pids'), top);
  assert.equal(k.get(''), top);
}

test('dump writes cgroup.img (sets, directories, properties) and cg_set per task; crit decodes it; soft restore puts every task back', { skip }, async () => {
  const fds = openFds();
  const s = await setUp();
  try {
    const dir = await ImageDir.open(s.images.path);
    const inv = await dir.inventory();
    const setOf = async (pid: number): Promise<number> => (await dir.core(pid)).thread_core!.cg_set!;
    const [root, child, grand] = [await setOf(s.pids.root), await setOf(s.pids.child), await setOf(s.pids.grandchild)];
    assert.equal(inv.root_cg_set, 1, 'the dumper\'s own set is 1');
    assert.equal(root, grand, 'root and grandchild share a set');
    assert.notEqual(root, child);
    assert.ok(root !== 1 && child !== 1);

    const img = critDecode(join(s.images.path, 'cgroup.img'));
    assert.equal(img.magic, 'CGROUP');
    const e = img.entries[0] as unknown as {
      sets: { id: number; ctls: { name: string; path: string }[] }[];
      controllers: { cnames: string[]; dirs: { dir_name: string; children?: { dir_name: string }[]; properties?: { name: string; value: string; perms?: { mode: number } }[] }[] }[];
    };
    const set = (id: number): Record<string, string> => Object.fromEntries(e.sets.find((x) => x.id === id)!.ctls.map((c) => [c.name, c.path]));
    assert.deepEqual(e.sets.map((x) => x.id).sort(), [root, child].sort(), 'the tree\'s two sets, not the dumper\'s');
    assert.deepEqual(set(root), { '': `/${s.cg.name}/A`, cpu: `/${s.cg.name}/A`, pids: `/${s.cg.name}/A` });
    assert.deepEqual(set(child), { '': `/${s.cg.name}/A`, cpu: `/${s.cg.name}/A/kid`, pids: `/${s.cg.name}/A` });
    const ctl = (n: string): typeof e.controllers[number] => e.controllers.find((c) => c.cnames.join(',') === n)!;
    assert.deepEqual(e.controllers.map((c) => c.cnames.join(',')).sort(), ['', 'cpu', 'pids']);
    const cpuHead = ctl('cpu').dirs;
    assert.equal(cpuHead.length, 1);
    assert.equal(cpuHead[0]!.dir_name, `${s.cg.name}/A`);
    assert.deepEqual(cpuHead[0]!.children?.map((c) => c.dir_name), ['kid']);
    const prop = (d: { properties?: { name: string; value: string; perms?: { mode: number } }[] }, n: string) => d.properties?.find((p) => p.name === n);
    assert.equal(prop(cpuHead[0]!, 'cpu.cfs_quota_us')?.value, '50000');
    assert.equal(prop(cpuHead[0]!, 'cpu.cfs_quota_us')?.perms?.mode, 0o100644);
    assert.equal(prop(cpuHead[0]!, 'tasks')?.value, '', 'membership files: perms only');
    assert.equal(prop(ctl('pids').dirs[0]!, 'pids.max')?.value, '64');
    assert.equal(prop(ctl('').dirs[0]!, 'cgroup.type')?.value, 'domain');

    // Soft: the cgroups exist, their current properties stay (quota changed since the dump).
    writeFileSync(join(HIER.cpu, s.cg.name, 'A', 'cpu.cfs_quota_us'), '70000');
    await restoreAndLook(s, {}, (cg) => assertIn(s, cg, `/${s.cg.name}/A`));
    assert.equal(readFileSync(join(HIER.cpu, s.cg.name, 'A', 'cpu.cfs_quota_us'), 'utf8').trim(), '70000', 'soft leaves an existing cgroup\'s properties');
    // Full: existing cgroups get the dumped properties back.
    await restoreAndLook(s, { cgroups: { mode: 'full' } }, (cg) => assertIn(s, cg, `/${s.cg.name}/A`));
    assert.equal(readFileSync(join(HIER.cpu, s.cg.name, 'A', 'cpu.cfs_quota_us'), 'utf8').trim(), '50000', 'full restores the dumped quota');
    // Ignore: the tree stays in the restorer's cgroups.
    const mine = cgroupsOf(process.pid);
    await restoreAndLook(s, { cgroups: { mode: 'ignore' } }, (cg) => {
      for (const p of Object.values(s.pids)) assert.equal(cg(p).get('cpu'), mine.get('cpu'), `pid ${p} left in our cpu cgroup`);
    });
  } finally {
    await tearDown(s);
  }
  assert.deepEqual(leakedFds(fds), []);
});

for (const mode of ['soft', 'full'] as const) {
  test(`restore --manage-cgroups=${mode} into a new --cgroup-root: the cgroups are created with their properties`, { skip }, async () => {
    const s = await setUp();
    try {
      const top = `/${s.cg.name}-new`;
      const roots = [{ ctrl: 'cpu', path: top }, { ctrl: 'pids', path: top }, { ctrl: '', path: top }];
      await restoreAndLook(s, { cgroups: { mode, roots } }, (cg) => assertIn(s, cg, top));
      assert.equal(readFileSync(join(HIER.cpu, top, 'cpu.cfs_quota_us'), 'utf8').trim(), '50000');
      assert.equal(readFileSync(join(HIER.pids, top, 'pids.max'), 'utf8').trim(), '64');
      assert.ok(existsSync(join(HIER.cpu, top, 'kid')), 'the child cgroup under the new root');
    } finally {
      await tearDown(s);
    }
  });
}

test('strict refuses an existing cgroup, none a missing one, each by name; CLI cgroup options', { skip }, async () => {
  const s = await setUp();
  try {
    await assert.rejects(withTimeout(restore({ imagesDir: s.images.path, shellJob: true, detached: true, cgroups: { mode: 'strict' } }), 30_000, 'restore'),
      (e: Error) => new RegExp(`cgroup .*:/${s.cg.name}/A already exists \\(--manage-cgroups=strict\\)`).test(e.message));
    const top = `/${s.cg.name}-new`;
    await assert.rejects(withTimeout(restore({ imagesDir: s.images.path, shellJob: true, detached: true, cgroups: { mode: 'none', roots: [{ ctrl: 'cpu', path: top }] } }), 30_000, 'restore'),
      (e: Error) => new RegExp(`cgroup cpu:${top} does not exist \\(--manage-cgroups=none`).test(e.message));
    assert.ok(Object.values(s.pids).every((p) => !existsSync(`/proc/${p}`)), 'nothing restored');
    // CLI: the same refusal in one line; options we do not implement are named.
    const r = await runCli(['restore', '-D', s.images.path, '-d', '--shell-job', '--manage-cgroups=strict'], { timeoutMs: 60_000 });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /already exists \(--manage-cgroups=strict\)/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    const y = await runCli(['dump', '-t', String(process.pid), '-D', s.images.path, '--cgroup-props', '"cpu": bad'], { timeoutMs: 30_000 });
    assert.equal(y.code, 2);
    assert.match(y.stderr, /--cgroup-props: cannot parse the controller block at line 1/);
    const bad = await runCli(['restore', '-D', s.images.path, '--cgroup-root', 'cpu:relative'], { timeoutMs: 30_000 });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--cgroup-root: "cpu:relative" is not \[CONTROLLER:\]\/PATH/);
    // CLI restore into a new root.
    const ok = await runCli(['restore', '-D', s.images.path, '-d', '--shell-job', '--manage-cgroups=full',
      '--cgroup-root', `cpu:${top}`, '--cgroup-root', `pids:${top}`, '--cgroup-root', `:${top}`], { timeoutMs: 60_000 });
    try {
      assert.equal(ok.code, 0, ok.stderr);
      assertIn(s, cgroupsOf, top);
      assert.equal(readFileSync(join(HIER.cpu, top, 'cpu.cfs_quota_us'), 'utf8').trim(), '50000');
    } finally {
      killRestoredWorkloads(Object.values(s.pids));
      await until(() => Object.values(s.pids).every((p) => !existsSync(`/proc/${p}`)), 30_000, 'the restored tree to be reaped');
    }
  } finally {
    await tearDown(s);
  }
});

test('dump --freeze-cgroup (CLI): the tree is seized through its freezer cgroup, whose state is recorded; restored with it', { skip: skip || (!existsSync(`${HIER.freezer}/tasks`) && 'needs the v1 freezer') }, async () => {
  const s = await setUp({ freezer: true });
  try {
    const img = critDecode(join(s.images.path, 'cgroup.img'));
    const e = img.entries[0] as unknown as { controllers: { cnames: string[]; dirs: { dir_name: string; properties?: { name: string; value: string }[] }[] }[] };
    const fr = e.controllers.find((c) => c.cnames.join(',') === 'freezer')!;
    assert.equal(fr.dirs[0]!.dir_name, `${s.cg.name}/A`);
    assert.equal(fr.dirs[0]!.properties?.find((p) => p.name === 'freezer.state')?.value, 'THAWED', 'the state before the dump froze it');
    await restoreAndLook(s, { cgroups: { mode: 'full' } }, (cg) => {
      assertIn(s, cg, `/${s.cg.name}/A`);
      for (const p of Object.values(s.pids)) assert.equal(cg(p).get('freezer'), `/${s.cg.name}/A`);
    });
    assert.equal(readFileSync(join(HIER.freezer, s.cg.name, 'A', 'freezer.state'), 'utf8').trim(), 'THAWED');
  } finally {
    await tearDown(s);
  }
});

test('a thread in a cgroup of its own (cgroup v1 tasks): its cg_set is its own and the restore moves it alone', { skip }, async () => {
  const fds = openFds();
  const cg = testCgroups();
  const wl = await startWorkload('workload-threads');
  const images = tempDir('lr-img-');
  try {
    const tid = Number(wl.report.tid_sleep);
    assert.ok(tid > 0, 'the workload reports its sleeping thread');
    const a = cg.mk(HIER.cpu, `${cg.name}/A`);
    const thr = cg.mk(HIER.cpu, `${cg.name}/A/thr`);
    moveInto(a, wl.pid);
    writeFileSync(join(thr, 'tasks'), String(tid));
    await dump({ pid: wl.pid, imagesDir: images.path, shellJob: true, cgroups: { dumpControllers: ['cpu'] } });
    await withTimeout(wl.exited, 10_000, 'workload-threads killed by the dump');
    await until(() => !existsSync(`/proc/${wl.pid}`), 30_000, 'the dumped process to be reaped');
    const dir = await ImageDir.open(images.path);
    const leaderSet = (await dir.core(wl.pid)).thread_core!.cg_set;
    const threadSet = (await dir.core(tid)).thread_core!.cg_set;
    assert.notEqual(threadSet, leaderSet, 'the thread has a set of its own');
    const e = await dir.cgroups();
    assert.equal(e?.controllers.find((c) => c.cnames.join(',') === 'cpu')?.is_threaded, true, 'v1 hierarchies are threaded');
    const tree = await withTimeout(restore({ imagesDir: images.path, shellJob: true, detached: true }), 30_000, 'restore');
    try {
      const cpuOf = (t: number): string | undefined => /^\d+:cpu:(.*)$/m.exec(readFileSync(`/proc/${wl.pid}/task/${t}/cgroup`, 'utf8'))?.[1];
      assert.equal(cpuOf(wl.pid), `/${cg.name}/A`);
      assert.equal(cpuOf(tid), `/${cg.name}/A/thr`, 'the thread alone in its own cgroup');
      for (const k of ['tid_futex', 'tid_regs']) assert.equal(cpuOf(Number(wl.report[k])), `/${cg.name}/A`, `${k} with the process`);
      wl.go(tree.pid);
      const exit = await withTimeout(tree.wait(), 30_000, 'restored workload exit');
      assert.equal(wl.result(), 'ok', `workload verdict (exit ${JSON.stringify(exit)})`);
    } finally {
      killRestoredWorkloads([tree.pid]);
      await withTimeout(tree.wait(), 10_000, 'restored root').catch(() => undefined);
      await tree.close();
    }
  } finally {
    await wl.dispose();
    images.dispose();
    await cg.cleanup();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('--cgroup-yard: a restore mounts the hierarchies it needs there; a dump walks them there, with --cgroup-props lists', { skip }, async () => {
  const s = await setUp();
  const yard = tempDir('lr-cgyard-');
  const mountedIn = (): string[] => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((p) => p.startsWith(`${yard.path}/`));
  try {
    const tree = await withTimeout(restore({ imagesDir: s.images.path, shellJob: true, detached: true, cgroups: { yard: yard.path } }), 30_000, 'restore');
    try {
      assertIn(s, cgroupsOf, `/${s.cg.name}/A`);
      assert.deepEqual(mountedIn().sort(), ['cpu', 'pids', 'unified'].map((n) => join(yard.path, n)), 'each hierarchy mounted in the yard (and left there, as CRIU)');
      // Dump the restored tree through the yard, pids.max left out by a custom list.
      const img2 = tempDir('lr-img-');
      try {
        const props = propsTableFrom('"pids":\n - "strategy": "replace"\n - "properties": []\n"cpu":\n - "strategy": "merge"\n - "properties": ["cpu.shares"]\n', undefined);
        await dump({ pid: tree.pid, imagesDir: img2.path, shellJob: true, cgroups: { dumpControllers: DUMPED, yard: yard.path, props } });
        const e = await (await ImageDir.open(img2.path)).cgroups();
        const names = (c: string): string[] => e!.controllers.find((x) => x.cnames.join(',') === c)!.dirs[0]!.properties.map((p) => p.name);
        assert.ok(!names('pids').includes('pids.max'), 'replaced by an empty list');
        assert.equal(names('cpu').filter((n) => n === 'cpu.shares').length, 2, 'merged: the built-in list plus the extra name');
      } finally {
        img2.dispose();
      }
    } finally {
      killRestoredWorkloads([...tree.pids, tree.pid]);
      await withTimeout(tree.wait(), 10_000, 'restored root').catch(() => undefined);
      await tree.close();
      await until(() => Object.values(s.pids).every((p) => !existsSync(`/proc/${p}`)), 30_000, 'the restored tree to be reaped');
    }
  } finally {
    for (const m of mountedIn()) spawnSync('umount', ['-l', m]);
    yard.dispose();
    await tearDown(s);
  }
});
