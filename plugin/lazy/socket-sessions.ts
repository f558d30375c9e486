// The lazy-pages socket's connections (IMAGE-FORMAT.md §5.2-5.3): which peer
// handed which process over, whether a connection is a restorer and has
// finished (RSTF), and what a bad hand-over costs (the announced process, if
// it is the peer's own, is killed; never anything outside the peer's tree).
import { mark } from '../phases.js';
import { readlinkSync } from 'node:fs';
import { Errno, sysError } from '../errors.js';
import { closeQuietly, errText } from './helpers.js';
import type { KillOutcome } from './kill.js';
import { hostPidInTree } from './procfs.js';
import type { LazySocketNotice } from './socket.js';
import type { LazyErrorEvent, SocketEvent } from './types.js';

interface From { conn: number; peer: number }

/** What the sessions need from the server. */
export interface SessionHost {
  /** Adopts a handed-over process (owns `fd`); rejects when it was refused (reported already). */
  adopt(pid: number, fd: number, opts: { hostPid: number }): Promise<unknown>;
  /** SIGKILLs a process that will not be served and counts it. */
  killUnserved(hostPid: number): KillOutcome;
  emitError(ev: LazyErrorEvent): void;
  emitSocket(ev: SocketEvent): void;
  /** Nothing more will come from a restorer: serve what was adopted, then be idle. */
  restoreFinished(): void;
  /** Push what can be pushed now. */
  pump(): void;
  checkIdle(): void;
  /** Tells the peer on `conn` that `pid` was adopted (0) or refused (errno). */
  ack(conn: number, pid: number, errno: number): void;
}

/** Who sent a socket message, for error lines. */
function peerName(from: From): string {
  return `peer pid ${from.peer || '?'} (connection ${from.conn})`;
}

export class SocketSessions {
  /**
   * Open socket connections: `restorer` once it sent a valid message (a
   * stray peer that only errs or hangs up changes nothing), `finished` after RSTF.
   */
  private readonly sessions = new Map<number, { restorer: boolean; finished: boolean }>();
  /** Host pids each socket peer handed a userfaultfd over for (their trees are the peer's too). */
  private readonly handedBy = new Map<number, Set<number>>();
  /**
   * Per connection: the pid announced last and its host pid, looked up in the
   * peer's tree before the uffd was received (the peer still held its tree
   * then; once it has our copy it may release the tree and exit, and its
   * processes are reparented out of it).
   */
  private readonly announced = new Map<number, { pid: number; hostPid: number | undefined }>();
  /** Zombies reported by restorers (unverifiable: counted only). */
  zombies = 0;

  constructor(private readonly host: SessionHost) {}

  /** A restorer is still handing processes over. */
  restoring(): boolean {
    for (const s of this.sessions.values()) if (s.restorer && !s.finished) return true;
    return false;
  }

  /** An announced pid, before its uffd arrives: find it in the peer's tree now. */
  lookUpAnnounced(pid: number, from: From): void {
    mark(`announced ${pid}`);
    const handed = this.handedBy.get(from.peer) ?? new Set<number>();
    this.announced.set(from.conn, { pid, hostPid: from.peer > 0 ? hostPidInTree(pid, from.peer, handed) : undefined });
  }

  async adoptFromSocket(pid: number, fd: number, from: From): Promise<void> {
    mark(`task ${pid} received`);
    const who = peerName(from);
    // The socket carries the virtual pid: find the process it names in the
    // peer's own tree (in a migration the frozen source still holds that pid,
    // and a peer must never make us serve or kill a process not its own).
    const handed = this.handedBy.get(from.peer) ?? new Set<number>();
    const hostPid = this.takeAnnounced(pid, from) ?? (from.peer > 0 ? hostPidInTree(pid, from.peer, handed) : undefined);
    if (hostPid === undefined || hostPid === process.pid) {
      closeQuietly(fd);
      this.socketError(`lazy-pages socket: ${who}: pid ${pid} is not a process of the peer's tree (neither the peer nor one of its descendants): hand-over refused, nothing killed (ESRCH)`, 'ESRCH');
      this.host.ack(from.conn, pid, Errno.ESRCH);
      this.host.checkIdle();
      return;
    }
    let target = '?';
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      /* reported below */
    }
    if (target !== 'anon_inode:[userfaultfd]') {
      // Its real uffd (if any) is not ours: nothing will serve it. Kill first, then close.
      const outcome = this.killAnnounced(hostPid);
      closeQuietly(fd);
      this.socketError(`lazy-pages socket: ${who}: pid ${pid} was handed over with ${target} instead of a userfaultfd (EINVAL); ${outcome}`, 'EINVAL', outcome.startsWith('killed'));
      this.host.ack(from.conn, pid, Errno.EINVAL);
      this.host.checkIdle();
      return;
    }
    handed.add(hostPid);
    this.handedBy.set(from.peer, handed);
    // A valid hand-over: this connection is a restorer (its EOF before RSTF is an error).
    const session = this.sessions.get(from.conn);
    if (session) session.restorer = true;
    // The peer (our restorer) lets the tree run once told: the uffd is held
    // here and by the watchdog, a recorded working set is in.
    try {
      await this.host.adopt(pid, fd, { hostPid });
      this.host.ack(from.conn, pid, 0);
    } catch {
      /* reported through the 'error' event; the process was killed */
      this.host.ack(from.conn, pid, Errno.ECANCELED);
    }
  }

  onSocketEvent(ev: LazySocketNotice): void {
    const from = ev.type === 'error' ? undefined : { conn: ev.conn, peer: ev.peer };
    const session = from ? this.sessions.get(from.conn) : undefined;
    switch (ev.type) {
      case 'connected':
        this.sessions.set(ev.conn, { restorer: false, finished: false });
        break;
      case 'zombie':
        // Unverifiable (no process to look at): counted, but it does not make a restorer.
        this.zombies++;
        break;
      case 'finished':
        if (session) {
          session.restorer = true;
          session.finished = true;
        }
        this.host.restoreFinished();
        break;
      case 'eof':
        this.sessions.delete(ev.conn);
        this.announced.delete(ev.conn);
        if (session?.restorer && !session.finished) {
          this.socketError(`lazy-pages socket: ${peerName(from!)}: the restorer closed the connection before restore finished (ECONNRESET)`, 'ECONNRESET');
          // Nothing more will arrive from it: serve what was adopted, then be idle.
          this.host.restoreFinished();
        }
        break;
      case 'protocol': {
        this.sessions.delete(ev.conn);
        // The announced process (if it is the peer's) will not be served: kill it.
        const host = ev.pid !== undefined ? (this.takeAnnounced(ev.pid, ev) ?? (ev.peer > 0 ? hostPidInTree(ev.pid, ev.peer) : undefined)) : undefined;
        this.announced.delete(ev.conn);
        const outcome = ev.pid !== undefined ? `; ${this.killAnnounced(host)}` : '';
        this.socketError(`lazy-pages socket: ${peerName(from!)}: ${ev.detail} (${ev.code}): connection closed${outcome}`, ev.code, outcome.includes('killed pid'));
        // A restorer cut off mid-way sends nothing more; a stray peer changes nothing.
        if (session?.restorer && !session.finished) this.host.restoreFinished();
        break;
      }
      case 'error':
        this.socketError(`lazy-pages socket: ${errText(ev.error)}`, ev.error.code);
        this.host.restoreFinished();
        break;
      default:
        break;
    }
    if (ev.type === 'connected' || ev.type === 'refused') this.host.emitSocket({ type: ev.type, pid: ev.pid, uid: ev.uid, conn: ev.conn });
    else if (ev.type === 'zombie') this.host.emitSocket({ type: ev.type, pid: ev.pid, conn: ev.conn, peer: ev.peer });
    else if (ev.type === 'finished' || ev.type === 'eof') this.host.emitSocket({ type: ev.type, conn: ev.conn, peer: ev.peer });
    this.host.pump();
    this.host.checkIdle();
  }

  /** The host pid looked up at announcement for `pid` on this connection (once). */
  private takeAnnounced(pid: number, from: { conn: number }): number | undefined {
    const a = this.announced.get(from.conn);
    if (a === undefined || a.pid !== pid) return undefined;
    this.announced.delete(from.conn);
    return a.hostPid;
  }

  /**
   * Kills `hostPid` (announced on the socket, in the peer's tree) because it
   * cannot be served; never this daemon itself. Returns the outcome text.
   */
  private killAnnounced(hostPid: number | undefined): string {
    if (hostPid === undefined) return 'nothing killed';
    if (hostPid === process.pid) return 'nothing killed (it is this daemon)';
    const kill = this.host.killUnserved(hostPid);
    return kill === 'killed' ? `killed pid ${hostPid} with SIGKILL` : kill === 'gone' ? `pid ${hostPid} is already gone` : `pid ${hostPid} could not be killed (${kill})`;
  }

  private socketError(message: string, code: string, killed = false): void {
    const error = sysError(code, 'lazy-pages socket', undefined, message);
    this.host.emitError({ proc: undefined, killed, message, error });
  }
}
