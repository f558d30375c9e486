// A container's own network namespace when it is not restored empty (the
// caller passes no empty_ns; runc always does, so dump() and restore() are
// driven here directly on a container runc started): lo is up with an
// extra IPv4 and IPv6 address and a route through it; the dump writes what
// CRIU 4.2 writes for such a namespace (netdev-, ifaddr-, route- and
// route6-<id>.img; crit decodes netdev), and the restored container's new
// namespace has lo up with the same mtu, addresses and route, while the
// container keeps counting. With empty_ns (emptyNet) nothing is written
// and lo comes back down, as CRIU does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { restore } from '../../plugin/restore/index.js';
import { critDecode } from '../helpers/critcheck.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { makeBundle, runcUnavailable, waitForCount } from '../helpers/runc.js';

const skip = !isRoot ? 'needs root' : (runcUnavailable() ?? false);

function ipIn(pid: number, args: string[]): string {
  return execFileSync('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', ...args], { encoding: 'utf8', timeout: 30_000 });
}

function netId(pid: number): number {
  return Number(/\[(\d+)\]/.exec(execFileSync('readlink', [`/proc/${pid}/ns/net`], { encoding: 'utf8' }))![1]);
}

/** The mounts runc passes as external (ext_mnt): its cgroup binds and the /dev/null binds over /proc files. */
function runcExternals(pid: number): Map<string, string> {
  const ext = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n')) {
    const f = line.split(' ');
    const point = f[4];
    const fstype = f[f.indexOf('-') + 1];
    if (point === undefined) continue;
    if (fstype === 'cgroup' || fstype === 'cgroup2') ext.set(point, point);
    else if (point === '/proc/keys' || point === '/proc/timer_list') ext.set(point, '/dev/null');
  }
  return ext;
}

for (const emptyNet of [false, true]) {
  test(`a container's network namespace ${emptyNet ? 'with empty_ns: not dumped, lo down after restore' : 'with lo up, extra addresses and a route: dumped as CRIU writes it and restored'}`, { skip }, async () => {
    const t = tempDir('lr-ctnet-');
    const b = await makeBundle(join(t.path, 'bundle'), `lr-ctnet-${emptyNet ? 'e' : 'f'}-${process.pid}`);
    let tree: Awaited<ReturnType<typeof restore>> | undefined;
    try {
      const r = await b.quiet(['run', '-d', '--bundle', b.dir, b.id]);
      assert.equal(r.code, 0, `runc run: ${r.stderr}`);
      await waitForCount(b, 3, 30_000);
      const pid = await b.pid();
      ipIn(pid, ['link', 'set', 'lo', 'up', 'mtu', '16384']);
      ipIn(pid, ['addr', 'add', '10.77.7.7/32', 'dev', 'lo']);
      ipIn(pid, ['-6', 'addr', 'add', 'fd00:77::7/128', 'dev', 'lo']);
      ipIn(pid, ['route', 'add', '10.78.0.0/16', 'dev', 'lo']);
      const id = netId(pid);
      const images = join(t.path, 'img');
      const ext = runcExternals(pid);
      await withTimeout(dump({ pid, imagesDir: images, container: { extMounts: ext, emptyNet }, cgroups: { mode: 'ignore' } }), 60_000, 'dump');
      const at = b.count();
      for (const name of ['netdev', 'ifaddr', 'route', 'route6']) {
        assert.equal(existsSync(join(images, `${name}-${id}.img`)), !emptyNet, `${name}-${id}.img ${emptyNet ? 'not ' : ''}written`);
      }
      if (!emptyNet) {
        const dev = critDecode(join(images, `netdev-${id}.img`)) as unknown as { entries: { type: string; name: string; mtu: number; flags: string }[] };
        assert.deepEqual(dev.entries.map((e) => [e.type, e.name, e.mtu]), [['LOOPBACK', 'lo', 16384]]);
        assert.equal(Number(dev.entries[0]!.flags) & 0x49, 0x49, 'UP|LOOPBACK|RUNNING');
      }
      tree = await withTimeout(restore({
        imagesDir: images, detached: true, cgroups: { mode: 'ignore' },
        // Restore maps each key the images hold to a path here (runc: the same paths).
        container: { root: join(b.dir, 'rootfs'), extMounts: new Map([...ext.values()].map((v) => [v, v])), ...(emptyNet ? { emptyNet: true } : {}) },
      }), 60_000, 'restore');
      await waitForCount(b, at + 2, 30_000);
      const addrs = ipIn(tree.pid, ['-o', 'addr', 'show', 'dev', 'lo']);
      const link = ipIn(tree.pid, ['-o', 'link', 'show', 'dev', 'lo']);
      if (emptyNet) {
        assert.doesNotMatch(link, /[<,]UP[,>]/, link);
        assert.doesNotMatch(addrs, /10\.77\.7\.7/, addrs);
      } else {
        assert.match(link, /[<,]UP[,>].* mtu 16384 /, link);
        assert.match(addrs, /inet 10\.77\.7\.7\/32 /, addrs);
        assert.match(addrs, /inet 127\.0\.0\.1\/8 /, addrs);
        assert.match(addrs, /inet6 fd00:77::7\/128 /, addrs);
        assert.match(ipIn(tree.pid, ['route', 'show']), /^10\.78\.0\.0\/16 dev lo /m);
      }
    } finally {
      if (tree) {
        // The restored init is our child (not runc's): killed by pid and reaped here.
        try { process.kill(tree.pid, 'SIGKILL'); } catch { /* gone */ }
        await withTimeout(tree.wait(), 10_000, 'the restored container init to exit');
        await tree.close();
      }
      await b.destroy();
      t.dispose();
    }
  });
}
