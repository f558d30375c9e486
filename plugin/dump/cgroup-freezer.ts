// The freezer cgroup a container runtime names (runc's freeze_cgroup, CRIU's
// --freeze-cgroup): the dump freezes the whole cgroup first, so no task in
// it can fork, exec or exit while the tree is seized (a shell loop's
// short-lived children otherwise come and go between our looks), seizes
// every thread listed in it and thaws it again; the ptrace interrupts then
// stop each thread as it leaves the freezer (CRIU's freeze_processes).
// cgroup v1: freezer.state (THAWED/FREEZING/FROZEN) and `tasks`; cgroup v2:
// cgroup.freeze (0/1), "frozen 0|1" in cgroup.events and `cgroup.threads`.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';

type State = 'THAWED' | 'FREEZING' | 'FROZEN';

const STEP_MS = 10;

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export class CgroupFreezer {
  readonly v2: boolean;
  /** The state found before we froze it (a paused container stays FROZEN after the dump). */
  private origin: State | undefined;

  constructor(readonly dir: string) {
    if (existsSync(join(dir, 'freezer.state'))) this.v2 = false;
    else if (existsSync(join(dir, 'cgroup.freeze'))) this.v2 = true;
    else throw new UserError(`freeze cgroup ${dir}: neither freezer.state nor cgroup.freeze is there (ENOENT)`);
  }

  state(): State {
    if (!this.v2) {
      const s = this.read('freezer.state').trim();
      if (s === 'THAWED' || s === 'FREEZING' || s === 'FROZEN') return s;
      throw new UserError(`freeze cgroup ${this.dir}: unknown freezer.state '${s}'`);
    }
    const want = this.read('cgroup.freeze').trim() === '1';
    const frozen = /^frozen 1$/m.test(this.read('cgroup.events'));
    return !want ? 'THAWED' : frozen ? 'FROZEN' : 'FREEZING';
  }

  /**
   * Freezes the cgroup and waits, bounded, until every task in it is frozen.
   * cgroup v1 can stay FREEZING for a while: the request is written again
   * now and then, and thawed and written once more every 32 steps (as CRIU
   * does). Throws naming the cgroup when it does not freeze in time (the
   * cgroup is then left as it was found).
   */
  freeze(timeoutMs: number): void {
    const s = this.state();
    this.origin = s === 'FREEZING' ? 'FROZEN' : s;
    if (s === 'FROZEN') return;
    this.write('FROZEN');
    const deadline = Date.now() + timeoutMs;
    for (let i = 1; ; i++) {
      if (this.state() === 'FROZEN') return;
      if (Date.now() >= deadline) {
        if (this.origin === 'THAWED') this.write('THAWED');
        throw new UserError(`freeze cgroup ${this.dir}: not frozen within ${timeoutMs} ms (ETIMEDOUT)`);
      }
      if (!this.v2 && i % 32 === 9) this.write('FROZEN');
      if (!this.v2 && i % 32 === 31) {
        this.write('THAWED');
        sleepMs(STEP_MS);
        this.write('FROZEN');
      }
      sleepMs(STEP_MS);
    }
  }

  /** The state freeze() found (FROZEN for a paused container), as CRIU's freezer.state in cgroup.img. */
  stateBefore(): 'THAWED' | 'FROZEN' {
    return this.origin === 'FROZEN' ? 'FROZEN' : 'THAWED';
  }

  thaw(): void {
    this.write('THAWED');
  }

  /** Puts the cgroup back into the state freeze() found (FROZEN for a paused container). */
  restore(): void {
    if (this.origin === 'FROZEN') this.write('FROZEN');
  }

  /** Every thread id in the cgroup and its descendant cgroups. */
  threads(): number[] {
    const out: number[] = [];
    const walk = (dir: string): void => {
      const text = readFileSync(join(dir, this.v2 ? 'cgroup.threads' : 'tasks'), 'utf8');
      for (const l of text.split('\n')) if (l) out.push(Number(l));
      for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(join(dir, e.name));
    };
    walk(this.dir);
    return out;
  }

  private read(name: string): string {
    return readFileSync(join(this.dir, name), 'utf8');
  }

  private write(s: 'THAWED' | 'FROZEN'): void {
    if (this.v2) writeFileSync(join(this.dir, 'cgroup.freeze'), s === 'FROZEN' ? '1' : '0');
    else writeFileSync(join(this.dir, 'freezer.state'), s);
  }
}
