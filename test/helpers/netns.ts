// A throw-away "remote host" for migration tests: a network namespace with a
// unique name joined to the test's namespace by a veth pair on a random
// 10.x.y.0/30 subnet. cut()/heal() take the host side of the link down/up
// (a pulled cable); dispose() deletes the namespace and the pair.
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomInt } from 'node:crypto';

export interface NetnsHost {
  ns: string;
  hostIf: string;
  nsIf: string;
  hostIp: string;
  nsIp: string;
  /** Runs a command inside the namespace. */
  spawn(cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  cut(): void;
  heal(): void;
  dispose(): void;
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export function netnsAvailable(): boolean {
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
}

export function makeNetnsHost(): NetnsHost {
  const tag = `${(process.pid % 1000).toString(36)}${randomInt(36 ** 4).toString(36)}`;
  const ns = `lrps-${tag}`;
  const hostIf = `lrh${tag}`.slice(0, 15);
  const nsIf = `lrn${tag}`.slice(0, 15);
  const a = randomInt(100, 250);
  const b = randomInt(0, 256);
  const c = randomInt(0, 64) * 4;
  const hostIp = `10.${a}.${b}.${c + 1}`;
  const nsIp = `10.${a}.${b}.${c + 2}`;
  ip('netns', 'add', ns);
  try {
    ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
    ip('link', 'set', nsIf, 'netns', ns);
    ip('addr', 'add', `${hostIp}/30`, 'dev', hostIf);
    ip('link', 'set', hostIf, 'up');
    ip('-n', ns, 'addr', 'add', `${nsIp}/30`, 'dev', nsIf);
    ip('-n', ns, 'link', 'set', nsIf, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  } catch (e) {
    try {
      ip('link', 'del', hostIf);
    } catch {
      /* not created */
    }
    ip('netns', 'del', ns);
    throw e;
  }
  return {
    ns,
    hostIf,
    nsIf,
    hostIp,
    nsIp,
    spawn: (cmd, args, opts = {}) => spawn('ip', ['netns', 'exec', ns, cmd, ...args], opts),
    cut: () => ip('link', 'set', hostIf, 'down'),
    heal: () => ip('link', 'set', hostIf, 'up'),
    dispose: () => {
      try {
        ip('link', 'del', hostIf);
      } catch {
        /* gone with the namespace */
      }
      ip('netns', 'del', ns);
    },
  };
}

/**
 * One service address S present in several namespaces at once (each
 * host's namespace side gets S/32, as CRIU's tests use one address in two
 * namespaces), reached from the test's namespace through one of them at a
 * time: a host route S/32 via that namespace's link. `client` is the
 * address to connect from (the first host's link address), routed back
 * from every namespace. `moveTo` re-points the route: packets to S now go
 * to that namespace (the address "moved" there).
 */
export interface MovableAddress {
  ip: string;
  client: string;
  moveTo(h: NetnsHost): void;
  dispose(): void;
}

export function movableAddress(hosts: NetnsHost[], at: NetnsHost): MovableAddress {
  const ipAddr = `10.${randomInt(100, 250)}.${randomInt(0, 256)}.${randomInt(1, 255)}`;
  const client = at.hostIp;
  for (const h of hosts) {
    ip('-n', h.ns, 'addr', 'add', `${ipAddr}/32`, 'dev', h.nsIf);
    if (h !== at) ip('-n', h.ns, 'route', 'add', `${client}/32`, 'via', h.hostIp, 'dev', h.nsIf);
  }
  ip('route', 'add', `${ipAddr}/32`, 'via', at.nsIp, 'dev', at.hostIf);
  return {
    ip: ipAddr,
    client,
    moveTo: (h) => ip('route', 'replace', `${ipAddr}/32`, 'via', h.nsIp, 'dev', h.hostIf),
    dispose: () => {
      try {
        ip('route', 'del', `${ipAddr}/32`);
      } catch {
        /* its link is gone already */
      }
    },
  };
}
