// Image writes a dump starts while it goes on collecting (other awaits in
// between) and awaits together at the end. Each write gets a handler the
// moment it is added: one that fails while the dump awaits something else is
// then never an unhandled rejection (which would end the process before the
// dump's catch could release the frozen tree); all() still rejects with the
// first failure.
export class PendingWrites {
  private readonly list: Promise<unknown>[] = [];

  push(...writes: Promise<unknown>[]): void {
    for (const w of writes) {
      w.catch(() => undefined);
      this.list.push(w);
    }
  }

  get length(): number {
    return this.list.length;
  }

  /** Resolves when every write is done; rejects with the first failure (after all have settled). */
  async all(): Promise<void> {
    const results = await Promise.allSettled(this.list);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}
