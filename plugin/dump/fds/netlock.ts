// Network lock for dumped TCP connections (CRIU's --network-lock nftables,
// per connection): from the moment a connection is put in repair mode until
// the restore has recreated it, packets the peer sends to it are dropped
// instead of reaching a kernel that has no socket for them (which would
// answer with a RST and kill the peer's connection). The peer retransmits;
// once the restored socket exists the lock goes and the retransmission is
// accepted. One input chain per connection (named after the socket's
// inode) in the table `inet lazy_restore_lock`, so the restore removes
// exactly its own; inventory.img's network_lock_method says NFTABLES.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const NFT = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'].find((p) => existsSync(p));
export const LOCK_TABLE = 'lazy_restore_lock';
/** inventory_entry.network_lock_method values (CRIU's lock_method enum). */
export const NETWORK_LOCK = { IPTABLES: 1, NFTABLES: 2, SKIP: 3 } as const;

export interface LockedConnection {
  ino: number;
  family: number; // 2 or 10
  /** The dumped socket's own address and port (packets to it are dropped). */
  local: string;
  localPort: number;
  peer: string;
  peerPort: number;
}

function nft(script: string): void {
  execFileSync(NFT!, ['-f', '-'], { input: script, stdio: ['pipe', 'ignore', 'pipe'], timeout: 10000 });
}

export function netLockAvailable(): boolean {
  return NFT !== undefined;
}

function chain(ino: number): string {
  return `c${ino}`;
}

/** Drops every packet from the peer to the dumped socket. Throws if nft fails. */
export function lockConnection(c: LockedConnection): void {
  const ip = c.family === 10 ? 'ip6' : 'ip';
  nft([
    `add table inet ${LOCK_TABLE}`,
    `add chain inet ${LOCK_TABLE} ${chain(c.ino)} { type filter hook input priority -300; policy accept; }`,
    `add rule inet ${LOCK_TABLE} ${chain(c.ino)} ${ip} saddr ${c.peer} ${ip} daddr ${c.local} tcp sport ${c.peerPort} tcp dport ${c.localPort} drop`,
    '',
  ].join('\n'));
}

/** Removes the lock of one connection (if any); never throws. */
export function unlockConnection(ino: number): boolean {
  if (!NFT) return false;
  try {
    nft(`flush chain inet ${LOCK_TABLE} ${chain(ino)}\ndelete chain inet ${LOCK_TABLE} ${chain(ino)}\n`);
  } catch {
    return false; // not locked (another dump's image, or already unlocked)
  }
  try {
    // The last lock gone: no empty table left behind.
    const rest = execFileSync(NFT, ['list', 'table', 'inet', LOCK_TABLE], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10000 });
    if (!/\bchain\b/.test(rest)) nft(`delete table inet ${LOCK_TABLE}\n`);
  } catch {
    /* another dump or restore changed it meanwhile */
  }
  return true;
}

/** Address text for nft from the address bytes. */
export function addrText(family: number, b: Buffer): string {
  if (family === 2) return [...b.subarray(0, 4)].join('.');
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(b.readUInt16BE(i).toString(16));
  return parts.join(':');
}
