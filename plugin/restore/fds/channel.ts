// Moving fds from the restorer into a restored process: pidfd_getfd can only
// pull, so the process makes a unix datagram socketpair (injected), the
// restorer pulls one end (pidfd_getfd) and sends the fds over it with
// SCM_RIGHTS, an injected recvmsg takes them in on the other end, and
// injected dup3 puts each at its number. No socket name is involved, so it
// works across network and mount namespaces (containers).
import { UserError } from '../../errors.js';
import { addon } from '../../native/addon.js';
import { NR, type RemoteTask } from '../task.js';
import { AF_UNIX, O_CLOEXEC, SOCK_CLOEXEC, SOCK_DGRAM, SOL_SOCKET } from '../../inject/constants.js';

const MSG_DONTWAIT = 0x40;
const MSG_CMSG_CLOEXEC = 0x40000000;
const F_DUPFD_CLOEXEC = 1030;
const F_SETFD = 2;
const SCM_RIGHTS = 1;
const MAX_PER_MESSAGE = 250;

/** Scratch offsets used here (see process.ts for the others). */
const SCR_PAIR = 0x3400n;
const SCR_MSG = 0x3500n;
const SCR_IOV = 0x3540n;
const SCR_BYTE = 0x3560n;
const SCR_CTL = 0x3580n;

function cmsgSpace(n: number): number {
  return 16 + ((n * 4 + 7) & ~7);
}

/**
 * Installs host fds into `task` at the given numbers. `high` is above every
 * fd number the process will have (temporaries are parked there).
 */
export function installFds(task: RemoteTask, items: readonly { hostFd: number; fd: number; cloexec: boolean }[], high: number): void {
  if (!items.length) return;
  task.call('socketpair(AF_UNIX, SOCK_DGRAM)', NR.socketpair, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, task.scratch + SCR_PAIR);
  const pair = task.read(task.scratch + SCR_PAIR, 8);
  const raw = pair.readInt32LE(0);
  const other = pair.readInt32LE(4);
  let sock = raw;
  let host = -1;
  try {
    host = addon.restorePidfdGetfd(task.pid, other);
  } finally {
    task.raw(NR.close, other);
  }
  try {
    // Parked above every fd number the process will use.
    sock = Number(task.call('fcntl(F_DUPFD_CLOEXEC)', NR.fcntl, raw, F_DUPFD_CLOEXEC, high));
    task.raw(NR.close, raw);
    const temps: number[] = [];
    for (let i = 0; i < items.length; i += MAX_PER_MESSAGE) {
      const batch = items.slice(i, i + MAX_PER_MESSAGE);
      addon.fdsSend(host, batch.map((b) => b.hostFd));
      temps.push(...receive(task, sock, batch.length));
    }
    place(task, items, temps, high);
  } finally {
    addon.restoreCloseFd(host);
    task.raw(NR.close, sock);
  }
}

function receive(task: RemoteTask, sock: number, n: number): number[] {
  const ctlLen = cmsgSpace(n);
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(task.scratch + SCR_BYTE, 0);
  iov.writeBigUInt64LE(1n, 8);
  task.write(task.scratch + SCR_IOV, iov);
  const mh = Buffer.alloc(56);
  mh.writeBigUInt64LE(task.scratch + SCR_IOV, 16); // msg_iov
  mh.writeBigUInt64LE(1n, 24); // msg_iovlen
  mh.writeBigUInt64LE(task.scratch + SCR_CTL, 32); // msg_control
  mh.writeBigUInt64LE(BigInt(ctlLen), 40); // msg_controllen
  task.write(task.scratch + SCR_MSG, mh);
  task.write(task.scratch + SCR_CTL, Buffer.alloc(ctlLen));
  task.call('recvmsg(fd channel)', NR.recvmsg, sock, task.scratch + SCR_MSG, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  const back = task.read(task.scratch + SCR_MSG, 56);
  const flags = back.readInt32LE(48);
  const ctl = task.read(task.scratch + SCR_CTL, ctlLen);
  const len = Number(ctl.readBigUInt64LE(0));
  const level = ctl.readInt32LE(8);
  const type = ctl.readInt32LE(12);
  const got = (len - 16) / 4;
  if (level !== SOL_SOCKET || type !== SCM_RIGHTS || got !== n || (flags & 0x8) /* MSG_CTRUNC */) {
    throw new UserError(`pid ${task.pid}: passing ${n} fds into the restored process failed (received ${got > 0 ? got : 0}${flags & 0x8 ? ', truncated: RLIMIT_NOFILE?' : ''})`);
  }
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(ctl.readInt32LE(16 + 4 * i));
  return out;
}

function place(task: RemoteTask, items: readonly { fd: number; cloexec: boolean }[], temps: number[], high: number): void {
  const targets = new Set(items.map((x) => x.fd));
  // A temporary sitting on another item's number would be overwritten: park it high first.
  temps.forEach((t, i) => {
    if (targets.has(t) && t !== items[i]!.fd) {
      temps[i] = Number(task.call('fcntl(F_DUPFD_CLOEXEC)', NR.fcntl, t, F_DUPFD_CLOEXEC, high));
      task.raw(NR.close, t);
    }
  });
  items.forEach((it, i) => {
    const t = temps[i]!;
    if (t === it.fd) {
      task.call(`fcntl(${it.fd}, F_SETFD)`, NR.fcntl, it.fd, F_SETFD, it.cloexec ? 1 : 0);
      return;
    }
    task.call(`dup3(${t}, ${it.fd})`, NR.dup3, t, it.fd, it.cloexec ? O_CLOEXEC : 0);
    task.raw(NR.close, t);
  });
}
