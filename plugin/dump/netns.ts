// A container's own network namespace when the caller does not restore it
// empty (no --empty-ns net / empty_ns, not an external one): what CRIU 4.2
// writes for a namespace whose only link is lo (criu/net.c dump_net_ns):
// netdev-<id>.img (net_device_entry: type LOOPBACK, ifindex, mtu, flags,
// name), ifaddr-<id>.img, route-<id>.img and route6-<id>.img (raw: the
// output of `ip addr save`, `ip route save` and `ip -6 route save` run in
// the namespace, as CRIU runs them). Links other than lo are refused
// before the freeze (plugin/dump/container.ts containerProblems).
// Not written (CRIU writes them): the links' and the namespace's sysctls
// (net_device_entry conf4/conf6, netns-<id>.img), `ip rule save`,
// iptables-save and ip6tables-save.
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { UserError } from '../errors.js';
import { KIND, type ImageDir } from '../images/index.js';

/** ifi_flags bits by the names `ip` prints. */
const IFF: Record<string, number> = {
  UP: 0x1, BROADCAST: 0x2, DEBUG: 0x4, LOOPBACK: 0x8, POINTOPOINT: 0x10, NOTRAILERS: 0x20, NOARP: 0x80, PROMISC: 0x100,
  ALLMULTI: 0x200, MASTER: 0x400, SLAVE: 0x800, MULTICAST: 0x1000, PORTSEL: 0x2000, AUTOMEDIA: 0x4000, DYNAMIC: 0x8000,
  LOWER_UP: 0x10000, DORMANT: 0x20000, ECHO: 0x40000,
};
const IFF_RUNNING = 0x40;
const ND_LOOPBACK = 1;

interface IpLink { ifindex: number; ifname: string; flags: string[]; mtu: number; operstate?: string; link_type?: string }

/**
 * `ip ARGS` run in pid's network namespace (nsenter), its output; `inputFile`
 * is its stdin (a file: `ip route restore` seeks in it, as in CRIU's image fd).
 */
export function ipIn(pid: number, args: string[], inputFile?: string): Buffer {
  const fd = inputFile === undefined ? undefined : openSync(inputFile, 'r');
  try {
    return execFileSync('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', ...args], {
      timeout: 30_000, maxBuffer: 64 << 20, stdio: [fd ?? 'ignore', 'pipe', 'pipe'],
    });
  } catch (e) {
    const err = (e as { stderr?: Buffer }).stderr?.toString().trim().split('\n')[0] || (e instanceof Error ? e.message : String(e));
    throw new UserError(`pid ${pid}: ip ${args.join(' ')}${inputFile ? ` < ${inputFile}` : ''} in its network namespace failed: ${err}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The ifi_flags of a link from what `ip -j link` prints (it leaves IFF_RUNNING out: the kernel sets it for an up link whose operstate is UP or UNKNOWN). */
export function linkFlags(l: IpLink): number {
  let f = 0;
  for (const n of l.flags) f |= IFF[n] ?? 0;
  if (f & IFF.UP! && (l.operstate === 'UP' || l.operstate === 'UNKNOWN')) f |= IFF_RUNNING;
  return f >>> 0;
}

/** Writes the images of root's network namespace `id` (it holds only lo). */
export async function writeNetns(root: number, dir: ImageDir, id: number): Promise<void> {
  const links = JSON.parse(ipIn(root, ['-j', 'link', 'show']).toString()) as IpLink[];
  const other = links.filter((l) => l.link_type !== 'loopback');
  if (other.length) throw new UserError(`pid ${root}: network interfaces other than lo (${other.map((l) => l.ifname).join(', ')}) are not supported; restore the network namespace empty (empty_ns)`);
  await dir.writeImage(KIND.netdev, id, links.map((l) => ({ type: ND_LOOPBACK, ifindex: l.ifindex, mtu: l.mtu, flags: linkFlags(l), name: l.ifname })));
  writeFileSync(dir.pathOf(KIND.ifaddr, id), ipIn(root, ['addr', 'save']));
  writeFileSync(dir.pathOf(KIND.route, id), ipIn(root, ['route', 'save']));
  writeFileSync(dir.pathOf(KIND.route6, id), ipIn(root, ['-6', 'route', 'save']));
}
