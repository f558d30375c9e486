// The real engine behind the server: plugin/uffd's FaultEngine (it satisfies
// FaultEngineLike structurally), and pidfds for root processes so the engine
// notices their exit.
import { pidfdOpen } from '../inject/memory.js';
import type { EngineFactory } from './engine.js';

export const realEngineFactory: EngineFactory = () => {
  throw new Error('the native fault engine (plugin/uffd) has not landed yet');
};

/** A pidfd for `pid`, or undefined when it cannot be opened (gone, or another namespace). */
export function pidfdOpenOrUndefined(pid: number): number | undefined {
  try {
    return pidfdOpen(pid, 0);
  } catch {
    return undefined;
  }
}
