// Network lock for dumped TCP connections (CRIU's --network-lock nftables,
// per connection): from the moment a connection is put in repair mode until
// the restore has recreated it, packets the peer sends to it are dropped
// instead of reaching a kernel that has no socket for them (which would
// answer with a RST and kill the peer's connection). The peer retransmits;
// once the restored socket exists the lock goes and the retransmission is
// accepted. One input chain per connection (named after the socket's
// inode) in the table `inet lazy_restore_lock`, so the restore removes
// exactly its own; inventory.img's network_lock_method says NFTABLES.
// The rules live in the network namespace of the socket (the dumped
// process's, the restored process's), which need not be ours: nft then
// runs there through nsenter.
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { AF_INET, AF_INET6 } from '../../inject/constants.js';

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
  /** A process in the socket's network namespace (default: ours). */
  nsPid?: number;
}

const NSENTER = ['/usr/bin/nsenter', '/bin/nsenter'].find((p) => existsSync(p));

/** The command that runs nft in the network namespace of `nsPid` (ours when it is the same or not given). */
function nftArgv(nsPid: number | undefined, args: string[]): [string, string[]] {
  if (nsPid !== undefined) {
    const theirs = `/proc/${nsPid}/ns/net`;
    let other: boolean;
    try {
      other = statSync(theirs).ino !== statSync('/proc/self/ns/net').ino;
    } catch {
      other = false; // the process is gone: nothing of its namespace to reach
    }
    if (other) {
      if (!NSENTER) throw new Error(`nsenter not found: cannot reach the network namespace of pid ${nsPid}`);
      return [NSENTER, [`--net=${theirs}`, NFT!, ...args]];
    }
  }
  return [NFT!, args];
}

function nft(script: string, nsPid?: number): void {
  const [cmd, args] = nftArgv(nsPid, ['-f', '-']);
  execFileSync(cmd, args, { input: script, stdio: ['pipe', 'ignore', 'pipe'], timeout: 10000 });
}

export function netLockAvailable(): boolean {
  return NFT !== undefined;
}

function chain(ino: number): string {
  return `c${ino}`;
}

/** Drops every packet from the peer to the dumped socket. Throws if nft fails. */
export function lockConnection(c: LockedConnection): void {
  const ip = c.family === AF_INET6 ? 'ip6' : 'ip';
  nft([
    `add table inet ${LOCK_TABLE}`,
    `add chain inet ${LOCK_TABLE} ${chain(c.ino)} { type filter hook input priority -300; policy accept; }`,
    `add rule inet ${LOCK_TABLE} ${chain(c.ino)} ${ip} saddr ${c.peer} ${ip} daddr ${c.local} tcp sport ${c.peerPort} tcp dport ${c.localPort} drop`,
    '',
  ].join('\n'), c.nsPid);
}

/**
 * Removes the lock of one connection (if any) in the network namespace of
 * `nsPid` (default: ours); never throws.
 */
export function unlockConnection(ino: number, nsPid?: number): boolean {
  if (!NFT) return false;
  try {
    nft(`flush chain inet ${LOCK_TABLE} ${chain(ino)}\ndelete chain inet ${LOCK_TABLE} ${chain(ino)}\n`, nsPid);
  } catch {
    return false; // not locked (another dump's image, or already unlocked)
  }
  try {
    // The last lock gone: no empty table left behind.
    const [cmd, args] = nftArgv(nsPid, ['list', 'table', 'inet', LOCK_TABLE]);
    const rest = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10000 });
    if (!/\bchain\b/.test(rest)) nft(`delete table inet ${LOCK_TABLE}\n`, nsPid);
  } catch {
    /* another dump or restore changed it meanwhile */
  }
  return true;
}

/** Address text for nft from the address bytes. */
export function addrText(family: number, b: Buffer): string {
  if (family === AF_INET) return [...b.subarray(0, 4)].join('.');
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(b.readUInt16BE(i).toString(16));
  return parts.join(':');
}
