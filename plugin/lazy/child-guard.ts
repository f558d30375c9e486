// What keeps a forked child safe until its pid is known (plugin/lazy/child-tracker.ts).
import { closeQuietly } from './helpers.js';

export class ChildGuard {
  /**
   * A forked child's uffd duplicated for the watchdog (ours to close), kept
   * until its pid is known and the watchdog has taken its own copy.
   */
  watchdogFd: number | undefined;
  /** Failed while its pid was unknown: killed (then released) once found. */
  killWhenFound?: boolean;

  /** Hands the duplicated uffd over (the caller closes it). */
  takeFd(): number | undefined {
    const fd = this.watchdogFd;
    this.watchdogFd = undefined;
    return fd;
  }

  dropFd(): void {
    if (this.watchdogFd === undefined) return;
    closeQuietly(this.watchdogFd);
    this.watchdogFd = undefined;
  }
}
