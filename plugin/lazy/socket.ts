// The lazy-pages socket (IMAGE-FORMAT.md §5.2-5.3) over the native listener
// (native/uffd/lazysock.cc): forwards each announced task with its uffd, and
// every other message as an event, each tagged with its connection and peer
// (connections are independent). Owns the fds it receives until handed on.
// With an onAnnounce handler, each announced pid is shown to it before the
// pid's userfaultfd is received (see native/uffd/lazysock.cc).
import { closeSync } from 'node:fs';
import { addon } from '../native/addon.js';
import type { LazySocketEvent, LazySocketListenerHandle } from '../native/types.js';
import { systemUserError } from '../errors.js';

/** Everything but a task and its announcement, per connection (see LazySocketEvent in plugin/native/types.ts). */
export type LazySocketNotice = Exclude<LazySocketEvent, { type: 'task' } | { type: 'announce' }>;

export interface LazySocketHandlers {
  /**
   * A pid was announced on `conn`; its userfaultfd is received (onTask) only
   * after this returns, so the peer (a restorer waiting until the daemon
   * holds the uffd) still has its tree as it was when the pid was sent.
   */
  onAnnounce?(pid: number, from: { conn: number; peer: number }): void;
  /** A live process and its userfaultfd, from connection `conn` of process `peer`; the callee owns `fd`. */
  onTask(pid: number, fd: number, from: { conn: number; peer: number }): void;
  onEvent(ev: LazySocketNotice): void;
}

export class LazySocket {
  private readonly listener: LazySocketListenerHandle;
  private closed = false;
  private handlers: LazySocketHandlers | undefined;
  /** Events that arrived before handlers were attached (see `listen`). */
  private queued: LazySocketEvent[] = [];

  /**
   * Listens on `path`. Without `handlers` the socket listens at once but
   * holds everything that arrives (each announced pid's userfaultfd is not
   * even received) until `attach()`: a daemon can say it listens before the
   * rest of it has started, and no process is handed over to a daemon that
   * is not ready to serve it.
   */
  constructor(readonly path: string, handlers?: LazySocketHandlers) {
    const uid = process.geteuid?.() ?? 0;
    this.handlers = handlers;
    try {
      this.listener = new addon.LazySocketListener(path, uid, (ev: LazySocketEvent) => {
        if (this.closed) {
          if (ev.type === 'task') closeSync(ev.fd);
          return;
        }
        if (!this.handlers) this.queued.push(ev);
        else this.dispatch(ev, this.handlers);
      }, handlers === undefined || handlers.onAnnounce !== undefined);
    } catch (e) {
      throw systemUserError(`lazy-pages socket ${path}`, e);
    }
  }

  /** Starts delivering events (first those that arrived meanwhile, in order). */
  attach(handlers: LazySocketHandlers): void {
    if (this.handlers) throw new Error('lazy-pages socket: handlers already attached');
    this.handlers = handlers;
    for (const ev of this.queued.splice(0)) {
      if (this.closed) {
        if (ev.type === 'task') closeSync(ev.fd);
        continue;
      }
      this.dispatch(ev, handlers);
    }
  }

  private dispatch(ev: LazySocketEvent, handlers: LazySocketHandlers): void {
    if (ev.type === 'announce') {
      try {
        handlers.onAnnounce?.(ev.pid, { conn: ev.conn, peer: ev.peer });
      } finally {
        this.listener.proceed(ev.conn);
      }
    } else if (ev.type === 'task') handlers.onTask(ev.pid, ev.fd, { conn: ev.conn, peer: ev.peer });
    else handlers.onEvent(ev);
  }

  /**
   * Tells the peer on `conn` (our restorer waits for it) that `pid` was
   * adopted (errno 0: its uffd is held here and by the watchdog, a recorded
   * working set is in) or refused (an errno number).
   */
  ack(conn: number, pid: number, errno: number): void {
    if (!this.closed) this.listener.ack(conn, pid, errno);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listener.close();
    for (const ev of this.queued.splice(0)) if (ev.type === 'task') closeSync(ev.fd);
  }
}
