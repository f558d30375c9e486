// A container's network namespace from the images plugin/dump/netns.ts (or
// CRIU 4.2) writes for a namespace holding only lo, into the root stub's
// new namespace, as CRIU's prepare_net_namespaces does: lo gets its dumped
// mtu and up state (netdev-<id>.img), then `ip addr restore`, `ip route
// restore` and `ip -6 route restore` replay ifaddr-, route- and
// route6-<id>.img in the namespace (addresses and routes the kernel made
// when lo came up already exist; ip leaves those). Nothing is done when
// the images hold no netdev image (a dump with empty_ns, which runc asks
// for) or when the caller restores the namespace empty.
import { existsSync } from 'node:fs';
import { UserError } from '../errors.js';
import { KIND, type ImageDir } from '../images/index.js';
import { ipIn } from '../dump/netns.js';
import { mark } from '../phases.js';

interface NetDevice { type: number; ifindex: number; mtu: number; flags: number; name: string }

const ND_LOOPBACK = 1;
const IFF_UP = 0x1;

export async function restoreNetns(stubPid: number, dir: ImageDir, netId: number, log: (l: string) => void): Promise<void> {
  if (!existsSync(dir.pathOf(KIND.netdev, netId))) return;
  const devs = await dir.readEntries<NetDevice>(KIND.netdev, netId);
  for (const d of devs) {
    if (d.type !== ND_LOOPBACK) {
      throw new UserError(`${dir.pathOf(KIND.netdev, netId)}: link ${d.name} (type ${d.type}): only the loopback link is supported`);
    }
    ipIn(stubPid, ['link', 'set', 'dev', d.name, 'mtu', String(d.mtu), (d.flags & IFF_UP) !== 0 ? 'up' : 'down']);
  }
  const replay: [typeof KIND.ifaddr, string[]][] = [[KIND.ifaddr, ['addr', 'restore']], [KIND.route, ['route', 'restore']], [KIND.route6, ['-6', 'route', 'restore']]];
  for (const [kind, args] of replay) {
    const file = dir.pathOf(kind, netId);
    if (existsSync(file)) ipIn(stubPid, args, file);
  }
  log(`network namespace: ${devs.map((d) => `${d.name} ${(d.flags & IFF_UP) !== 0 ? 'up' : 'down'}`).join(', ')}, addresses and routes restored`);
  mark('container: network namespace restored');
}
