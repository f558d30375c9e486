// Post-copy migration between two "hosts" on one machine (run as root):
//   node dist/examples/migrate.js [--mib 64] [--no-prefetch] [--plain]
// Host B is a fresh network namespace joined by a veth pair. The example
//   1. starts examples/workloads/demo-service (a data set it can verify);
//   2. `lazy-restore migrate`: dumps it with --lazy-pages (only metadata and
//      a few eager pages go to disk; the frozen source serves the rest over
//      mutual TLS), copies the images, restores the tree in host B in its
//      own pid namespace (the source still holds the pids) and streams the
//      pages while it already runs — with a progress line;
//   3. asks the migrated workload to check every byte of its data.
// Everything it creates (namespace, certificates, images) is removed at the end.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import tmp from 'tmp';
import { migrate, formatReport } from '../plugin/pageserver/migrate.js';
import { helperPath } from '../plugin/native/addon.js';
import { UserError } from '../plugin/errors.js';

const { values: args } = parseArgs({
  options: {
    mib: { type: 'string', default: '64' },
    'no-prefetch': { type: 'boolean', default: false },
    plain: { type: 'boolean', default: false }, // plain TCP (--insecure) instead of TLS
  },
});

const say = (l: string): void => void process.stdout.write(`${l}\n`);
const ip = (...a: string[]): void => void execFileSync('ip', a, { stdio: ['ignore', 'ignore', 'pipe'] });

async function waitFor(path: string, ms: number, what: string): Promise<string> {
  const t0 = Date.now();
  while (!existsSync(path)) {
    if (Date.now() - t0 > ms) throw new UserError(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return readFileSync(path, 'utf8').trim();
}

function certificates(dir: string, ipAddr: string): { ca: string; server: [string, string]; client: [string, string] } {
  const run = (...a: string[]): void => void execFileSync('openssl', a, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=migrate-example-ca');
  for (const [name, ext] of [['source', `subjectAltName=IP:${ipAddr}\nextendedKeyUsage=serverAuth\n`], ['dest', 'extendedKeyUsage=clientAuth\n']] as const) {
    run('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    writeFileSync(join(dir, `${name}.ext`), ext);
    run('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', `${name}.ext`);
  }
  const p = (f: string): string => join(dir, f);
  return { ca: p('ca.pem'), server: [p('source.pem'), p('source.key')], client: [p('dest.pem'), p('dest.key')] };
}

async function main(): Promise<number> {
  const mib = Number(args.mib);
  if (!Number.isInteger(mib) || mib < 1 || mib > 4096) throw new UserError('--mib must be an integer from 1 to 4096');
  const work = tmp.dirSync({ prefix: 'lazy-restore-migrate-', unsafeCleanup: true });
  const tag = randomInt(36 ** 5).toString(36);
  const ns = `lr-hostb-${tag}`;
  const [vethA, vethB] = [`lrA${tag}`, `lrB${tag}`];
  const [a, b] = [randomInt(100, 250), randomInt(0, 256)];
  const [ipA, ipB] = [`10.${a}.${b}.1`, `10.${a}.${b}.2`];
  let restoredInit: number | undefined;
  try {
    say(`1. host B: network namespace ${ns}, veth ${ipA} (host A) <-> ${ipB} (host B)`);
    ip('netns', 'add', ns);
    ip('link', 'add', vethA, 'type', 'veth', 'peer', 'name', vethB);
    ip('link', 'set', vethB, 'netns', ns);
    ip('addr', 'add', `${ipA}/30`, 'dev', vethA);
    ip('link', 'set', vethA, 'up');
    ip('-n', ns, 'addr', 'add', `${ipB}/30`, 'dev', vethB);
    ip('-n', ns, 'link', 'set', vethB, 'up');

    const ctl = join(work.name, 'ctl');
    mkdirSync(ctl);
    say(`2. host A: starting demo-service with ${mib} MiB of data`);
    const child = spawn(helperPath('demo-service'), [ctl, String(mib)], { stdio: 'ignore', detached: true });
    const pid = Number(await waitFor(join(ctl, 'ready'), 60_000, 'demo-service to fill its memory'));
    say(`   pid ${pid} is ready`);

    const certs = args.plain ? undefined : certificates(work.name, ipA);
    say(`3. lazy-restore migrate -t ${pid} --dest-netns ${ns} --address ${ipA}${args.plain ? ' --insecure' : ' --tls'}${args['no-prefetch'] ? ' --no-prefetch' : ''}`);
    const report = await migrate({
      pid, sourceDir: join(work.name, 'host-a'), destDir: join(work.name, 'host-b'), address: ipA, destNetns: ns,
      prefetch: !args['no-prefetch'], insecure: args.plain === true,
      ...(certs ? {
        tls: { cacert: certs.ca, cert: certs.server[0], key: certs.server[1] },
        destTls: { cacert: certs.ca, cert: certs.client[0], key: certs.client[1] },
      } : {}),
      onDestLine: (l) => say(`   ${l}`),
    });
    restoredInit = report.pid;
    await new Promise<void>((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
    say(`   the frozen source (pid ${pid}) was killed once every page had arrived`);
    for (const l of formatReport(report).split('\n')) say(`   ${l}`);

    say('4. the migrated workload checks every byte of its data');
    writeFileSync(join(ctl, 'go'), '');
    const verdict = await waitFor(join(ctl, 'result'), 60_000, "the workload's verdict");
    say(`   verdict: ${verdict}`);
    const ok = verdict.startsWith('ok');
    say(ok ? 'OK: migrated and verified.' : 'FAILED: the migrated workload did not verify its memory.');
    return ok ? 0 : 1;
  } finally {
    if (restoredInit !== undefined) {
      try {
        process.kill(restoredInit, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    try {
      ip('netns', 'del', ns);
    } catch {
      /* never created */
    }
    try {
      ip('link', 'del', vethA);
    } catch {
      /* went with the namespace */
    }
    work.removeCallback();
  }
}

try {
  process.exitCode = await main();
} catch (e) {
  process.stderr.write(`migrate example: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
}
