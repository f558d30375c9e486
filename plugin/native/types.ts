// The typed surface of the native addon (build/Release/lazy_restore.node).
// One interface per native area; NativeAddon is their union. Addresses and
// sizes are bigint; file descriptors and pids are number.
// Each area edits only its own interface below.

//
// ---------------------------------------------------------------------------
// native/uffd: the userfaultfd ABI (owner: uffd/engine work)
// ---------------------------------------------------------------------------
//
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface UffdNative {}

//
// ---------------------------------------------------------------------------
// native/engine: the fault-serving engine (owner: uffd/engine work)
// ---------------------------------------------------------------------------
//
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface EngineNative {}

//
// ---------------------------------------------------------------------------
// native/inject: ptrace, syscall injection, remote memory (owner: dump work;
// restore adds its own primitives in a separate block below)
// ---------------------------------------------------------------------------
//
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface InjectNative {}

//
// ---------------------------------------------------------------------------
// native/inject (restore side): process creation with set_tid, stub exec
// (owner: restore work)
// ---------------------------------------------------------------------------
//
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface RestoreNative {}

//
// ---------------------------------------------------------------------------
// native/uffd/lazysock.cc: the receiving end of CRIU's lazy-pages socket
// (owner: lazy work)
// ---------------------------------------------------------------------------
//
/** One message from the lazy-pages socket listener thread. */
export type LazySocketEvent =
  /** A peer with an allowed uid connected; the listening socket is now closed. */
  | { type: 'connected'; pid: number; uid: number }
  /** A peer with another uid (not root) was refused and disconnected. */
  | { type: 'refused'; pid: number; uid: number }
  /** Message A: a live process's virtual pid and its userfaultfd (now owned by the receiver). */
  | { type: 'task'; pid: number; fd: number }
  /** Message B: a zombie (the pid is positive here). */
  | { type: 'zombie'; pid: number }
  /** Message C: restore finished ("RSTF"). */
  | { type: 'finished' }
  /** The restorer closed the connection. */
  | { type: 'eof' }
  /** A malformed message; the listener stopped reading. */
  | { type: 'protocol'; detail: string }
  /** A system call failed; the listener stopped. `error` has code/errno/syscall. */
  | { type: 'error'; error: Error & { code: string; errno: number; syscall: string } };

export interface LazySocketListenerHandle {
  readonly path: string;
  /** Stops the listener thread (flag, wake, join), closes its fds and unlinks the socket. Idempotent. */
  close(): void;
}

export interface LazySocketNative {
  /**
   * Binds and listens on `path` (a stale socket file is replaced) and starts
   * the listener thread. Peers whose uid is neither `allowUid` nor 0 are refused.
   */
  LazySocketListener: new (path: string, allowUid: number, onEvent: (ev: LazySocketEvent) => void) => LazySocketListenerHandle;
}

//
// ---------------------------------------------------------------------------
//
export interface NativeAddon extends UffdNative, EngineNative, InjectNative, RestoreNative, LazySocketNative {}
