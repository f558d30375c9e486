// A minimal typed event emitter: listeners are checked against an event map
// at compile time. 'error' without listeners does not throw (unlike Node's
// EventEmitter): the server reports errors through its stats and promises too.

export class TypedEmitter<M extends object> {
  private readonly listeners = new Map<keyof M, Set<(ev: never) => void>>();

  on<K extends keyof M>(type: K, fn: (ev: M[K]) => void): this {
    let s = this.listeners.get(type);
    if (!s) this.listeners.set(type, (s = new Set()));
    s.add(fn as (ev: never) => void);
    return this;
  }

  off<K extends keyof M>(type: K, fn: (ev: M[K]) => void): this {
    this.listeners.get(type)?.delete(fn as (ev: never) => void);
    return this;
  }

  once<K extends keyof M>(type: K, fn: (ev: M[K]) => void): this {
    const wrap = (ev: M[K]): void => {
      this.off(type, wrap);
      fn(ev);
    };
    return this.on(type, wrap);
  }

  protected emit<K extends keyof M>(type: K, ev: M[K]): void {
    const s = this.listeners.get(type);
    if (!s) return;
    for (const fn of [...s]) (fn as (e: M[K]) => void)(ev);
  }
}
